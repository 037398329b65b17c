"""A disk that fills, for a real process: a file-size limit (``ulimit -f``), past which every
write fails with EFBIG, as on a full disk with ENOSPC. SIGXFSZ, which would kill the process
instead, is ignored (an ignored signal stays ignored across exec)."""

from __future__ import annotations


def with_file_limit(command: list[str], limit: int | None) -> list[str]:
    """``command`` run under a limit of ``limit`` bytes a file (none where ``limit`` is None)."""
    if limit is None:
        return command
    return ["bash", "-c", f"ulimit -f {max(1, limit // 1024)} && trap '' XFSZ && exec \"$@\"",
            "with-file-limit", *command]
