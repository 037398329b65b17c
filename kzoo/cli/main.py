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
import subprocess
import sys

from kzoo.cli import data, inference, models, training, tune
from kzoo.cli.flags import Parser
from kzoo.errors import KzooError


def make_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="kzoo", description="A Keras model zoo.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (models, training, data, inference, tune):
        group.add_commands(commands)
    return parser


# The native log lines TensorFlow, XLA and absl write at start-up that mean nothing to a user,
# matched by how their message begins. Every other line (a real error, a fatal "Check failed" before an
# abort) goes through.
_NATIVE_NOTICES = (
    r"oneDNN custom operations are on",
    r"Could not find cuda drivers on your machine",
    r"failed call to cuInit",
    r"Unable to register cu(?:DNN|FFT|BLAS) factory",
    r"computation placer already registered",
    r"TF-TRT Warning: Could not find TensorRT",
    r"NodeDef mentions attribute use_unbounded_threadpool",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"successful NUMA node read from SysFS",
    r"Created device /job:",
    r"Loaded cuDNN version",
    r"XLA service 0x[0-9a-f]+ initialized",
    r"StreamExecutor device \(\d+\)",
    r"Compiled cluster using XLA",
)
NATIVE_NOISE = re.compile(
    r"(?:WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler"
    r"|[IWE]\d{4} [\d:.]+ +\d+ \S+:\d+\] (?:" + "|".join(_NATIVE_NOTICES) + "))")

# Run in a separate process, in a session of its own (a Ctrl-C meant for the command does not
# stop it), so that it outlives an abort of the command and still passes on the lines written
# just before it. It reads to the end even when stderr is gone, so the command never blocks.
_FORWARD = """
import os, re, sys
noise, out = re.compile(sys.argv[1]), True
for line in sys.stdin.buffer:
    if out and not noise.match(line.decode("utf-8", "replace")):
        try:
            while line:
                line = line[os.write(1, line):]
        except OSError:
            out = False
"""


def is_native_noise(line: str) -> bool:
    """Whether ``line`` is one of the known start-up notices :class:`NativeLogFilter` drops."""
    return NATIVE_NOISE.match(line) is not None


class NativeLogFilter:
    """Drops the known start-up notices TensorFlow's C++ code writes straight to the stderr
    file (oneDNN, CUDA drivers, absl, an ``E0000 ... use_unbounded_threadpool`` line), which no
    setting of TensorFlow 2.21 turns off: stderr goes through a pipe to a small process that
    passes on every other line, errors and fatal checks included, even when the command
    aborts. :meth:`close` restores stderr and waits for what is left to be passed on."""

    def __init__(self):
        sys.stderr.flush()
        self.saved = os.dup(2)
        read, write = os.pipe()
        try:
            self.forwarder = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _FORWARD, NATIVE_NOISE.pattern],
                stdin=read, stdout=self.saved, stderr=self.saved, close_fds=True,
                start_new_session=True)
        except BaseException:
            os.close(write)
            os.close(self.saved)
            raise
        finally:
            os.close(read)
        os.dup2(write, 2)
        os.close(write)

    def close(self) -> None:
        sys.stderr.flush()
        os.dup2(self.saved, 2)  # the pipe's last writer closes: the forwarder reads to the end
        os.close(self.saved)
        try:
            self.forwarder.wait(timeout=5)
        except subprocess.TimeoutExpired:  # a child process still holds the pipe: let it be
            pass


def _verbose(argv: list[str]) -> bool:
    """Whether ``--verbose`` (or an abbreviation argparse accepts) is among the arguments:
    known before parsing, since printing some commands' help imports TensorFlow."""
    return any(arg.startswith("--verb") and "--verbose".startswith(arg) for arg in argv)


def _one_line(error: BaseException) -> str:
    """What the user reads: a KzooError as it is; an operating-system error (a full disk, a
    folder that cannot be written or read) with its file, and what to do."""
    if not isinstance(error, OSError) or isinstance(error, KzooError):
        return str(error)
    what = error.strerror or " ".join(str(error).split()) or type(error).__name__
    where = f" {str(error.filename)!r}" if error.filename else ""
    return (f"could not read or write{where}: {what}; free some space, make the place "
            "writable or choose another (--verbose shows the traceback)")


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
    except (KzooError, OSError) as error:
        if isinstance(error, OSError) and verbose:
            raise  # the whole story, for a bug report
        print(f"kzoo: error: {_one_line(error)}", file=sys.stderr)
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
