"""The ``kzoo`` command: ``kzoo list``, ``kzoo info NAME``, ``kzoo train RECIPE``, ``kzoo tune
RECIPE`` and transfer learning: ``kzoo finetune FOLDER``, then ``kzoo predict``, ``kzoo
evaluate``, ``kzoo export``.

The commands live by group in :mod:`kzoo.cli.models`, :mod:`kzoo.cli.training`,
:mod:`kzoo.cli.data`, :mod:`kzoo.cli.inference` and :mod:`kzoo.cli.tune`, their shared flags
in :mod:`kzoo.cli.flags`; each command is a small function taking the parsed arguments. Bad
input is reported as one line on stderr with exit status 2, never as a traceback. This module
assembles the parser and keeps TensorFlow's own log lines out of sight (unless ``--verbose``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import threading

from kzoo.cli import data, inference, models, training, tune
from kzoo.cli.flags import Parser
from kzoo.errors import KzooError


def make_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="kzoo", description="A Keras model zoo.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (models, training, data, inference, tune):
        group.add_commands(commands)
    return parser


_NATIVE_LOG_LINE = re.compile(
    r"^([IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\]|WARNING: All log messages before absl)")


class NativeLogFilter:
    """Drops the log lines TensorFlow's C++ code writes straight to the stderr file (start-up
    notices, and an ``E0000 ... use_unbounded_threadpool`` line that means nothing to a user),
    which no setting of TensorFlow 2.21 turns off: stderr goes through a pipe, and a thread
    passes on every other line. :meth:`close` restores stderr and flushes what is left."""

    def __init__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self.thread = threading.Thread(target=self._forward, args=(read, os.dup(self.saved)),
                                       daemon=True)
        self.thread.start()

    @staticmethod
    def _forward(read: int, write: int) -> None:
        with os.fdopen(read, "rb") as pipe, os.fdopen(write, "wb", 0) as out:
            for line in pipe:
                if not _NATIVE_LOG_LINE.match(line.decode("utf-8", "replace")):
                    out.write(line)

    def close(self) -> None:
        sys.stderr.flush()
        os.dup2(self.saved, 2)  # the pipe's last writer closes: the thread reads to the end
        os.close(self.saved)
        self.thread.join(timeout=5)


def _verbose(argv: list[str]) -> bool:
    """Whether ``--verbose`` (or an abbreviation argparse accepts) is among the arguments:
    known before parsing, since printing some commands' help imports TensorFlow."""
    return any(arg.startswith("--verb") and "--verbose".startswith(arg) for arg in argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else [str(arg) for arg in argv]
    verbose = _verbose(argv)
    if not verbose:  # before anything imports TensorFlow: its C++ notices below warnings off
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    native_logs = None if verbose else NativeLogFilter()
    try:
        try:
            args = make_parser().parse_args(argv)
        except SystemExit as done:  # --help, or a bad flag (one line on stderr already)
            return int(done.code or 0)
        args.run(args)
    except KzooError as error:
        print(f"kzoo: error: {error}", file=sys.stderr)
        from kzoo.training.distributed import joined, leave

        if joined():  # the cluster's shutdown at exit could only fail now: leave at once
            if native_logs is not None:
                native_logs.close()
                native_logs = None
            leave(2)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if native_logs is not None:
            native_logs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
