"""The ``kzoo`` command hides TensorFlow's known start-up notices, and nothing else."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import cli_env

from kzoo.cli.main import is_native_noise

NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    ("I0000 00:00:1796696348.176975   21416 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors."),
    ("I0000 00:00:1796696348.177441   21416 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used."),
    ("I0000 00:00:1796696348.236525   21416 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations."),
    ("To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags."),
    ("E0000 00:00:1796696352.165482   21416 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)"),
    ("E0000 00:00:1733000000.000000   4242 cuda_dnn.cc:8310] Unable to register cuDNN factory: "
    "Attempting to register factory for plugin cuDNN when one has already been registered"),
    ("E0000 00:00:1733000000.000000   4242 node_def_util.cc:680] NodeDef mentions attribute "
    "use_unbounded_threadpool which is not in the op definition: Op<name=MapDataset>"),
]

REAL = [
    "F0000 00:00:1733000000.000000   4242 tensor_shape.cc:45] Check failed: d >= 0 (-1 vs. 0)",
    "E0000 00:00:1733000000.000000   4242 gpu_device.cc:2341] Cannot dlopen some GPU libraries.",
    ("W0000 00:00:1733000000.000000   4242 op_kernel.cc:1857] OP_REQUIRES failed at "
    "conv_ops.cc:681 : RESOURCE_EXHAUSTED: OOM when allocating tensor"),
    ("E0000 00:00:1733000000.000000   4242 process_state.cc:1] allocator failed; note: oneDNN "
    "custom operations are on"),  # a real error that mentions a notice's words later on
    "kzoo: error: something went wrong",
    "Traceback (most recent call last):",
]


@pytest.mark.parametrize("line", NOISE)
def test_known_start_up_notices_are_noise(line):
    assert is_native_noise(line)


@pytest.mark.parametrize("line", REAL)
def test_errors_and_fatal_checks_are_not_noise(line):
    assert not is_native_noise(line)


def test_a_fatal_check_before_an_abort_reaches_the_user():
    """Under the command's filter, a mix of notices and real native lines is written to the
    stderr file, then the process aborts as TensorFlow does on a failed check: the notices are
    gone, the real lines (the fatal one last) are all there."""
    lines = "".join(line + "\n" for line in NOISE + REAL).encode()
    result = run_command_in_child(f"""
        def command(args):
            os.write(2, {lines!r})
            os.abort()
    """)
    assert result.returncode == -signal.SIGABRT, result.stderr
    shown = result.stderr.splitlines()
    assert shown == REAL, result.stderr


def run_command_in_child(body: str, **options) -> subprocess.CompletedProcess:
    """``kzoo.cli.main.main`` in a new Python process (a session of its own), its one command
    being ``body`` (the function ``command(args)``)."""
    child = textwrap.dedent("""
        import argparse, os, signal, sys, time
        import kzoo.cli.main as cli

        {body}

        def make_parser():
            parser = argparse.ArgumentParser(prog="kzoo")
            parser.set_defaults(run=command)
            return parser

        cli.make_parser = make_parser
        sys.exit(cli.main([]))
    """).format(body=textwrap.dedent(body).strip().replace("\n", "\n        "))
    return subprocess.run([sys.executable, "-c", child], env=cli_env(), capture_output=True,
                          text=True, timeout=60, check=False, start_new_session=True, **options)


def test_a_ctrl_c_leaves_the_filter_passing_lines_on():
    """Ctrl-C reaches the whole foreground process group; what the command prints as it stops
    still reaches the user."""
    result = run_command_in_child('''
        def command(args):
            try:
                os.killpg(os.getpgrp(), signal.SIGINT)
                time.sleep(10)
            except KeyboardInterrupt:
                time.sleep(0.2)
                os.write(2, b"E0000 00:00:1.0 1 x.cc:1] written after the interrupt\\n")
                raise
    ''')
    assert result.returncode == 130, result.stderr
    assert result.stderr.splitlines() == ["E0000 00:00:1.0 1 x.cc:1] written after the interrupt"]
