"""KerasTuner's own chief and workers, as ``--chief HOST:PORT`` and ``--worker HOST:PORT``."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator

from kzoo.errors import KzooError

_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")
FIRST_CONTACT_S = 600.0  # how long a worker waits for its chief to come up
LOST_CHIEF_S = 30.0  # how long a worker goes on once its chief stopped answering


class ChiefWatch:
    """A worker's watch on its chief: KerasTuner's client waits for ever on a chief that died
    (or never came up), silently. Every few seconds this thread tries a connection to the
    chief's port; once the chief has not answered for ``LOST_CHIEF_S`` seconds (after it
    answered once; ``FIRST_CONTACT_S`` before), the worker ends with one line, exit status 2:
    its main thread is blocked inside KerasTuner's call, so nothing else can end it."""

    def __init__(self, host: str, port: int, every_s: float = 2.0):
        self.host, self.port, self.every_s = host.strip("[]"), port, every_s
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True, name="kzoo-chief-watch")

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=self.every_s):
                return True
        except OSError:
            return False

    def _watch(self) -> None:
        contacted, last = False, time.monotonic()
        while not self.stopped.wait(self.every_s):
            if self._answers():
                contacted, last = True, time.monotonic()
                continue
            waited = time.monotonic() - last
            if waited > (LOST_CHIEF_S if contacted else FIRST_CONTACT_S):
                state = "stopped answering" if contacted else "never answered"
                print(f"kzoo: error: the tuning chief at {self.host}:{self.port} {state} "
                      f"({waited:.0f} s); start it again (the same command resumes the "
                      "search), then this worker", file=sys.stderr, flush=True)
                os._exit(2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()


def _address(text: str, flag: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise KzooError(f"{flag} {text!r} is not HOST:PORT; expected e.g. {flag} 10.0.0.1:8000")
    return host, int(port)


@contextlib.contextmanager
def distributed_role(
    chief: str | None = None, worker: str | None = None, tuner_id: str | None = None
) -> Iterator[str]:
    """Set KerasTuner's ``KERASTUNER_*`` variables for this process's role, and yield it:
    ``"chief"`` (``chief=HOST:PORT``: serve the oracle there), ``"worker"`` (``worker=HOST:PORT``
    of the chief: run trials it hands out, as ``tuner_id``) or ``"single"``. Variables set by
    hand are honoured, as KerasTuner reads them."""
    if chief and worker:
        raise KzooError("--chief and --worker exclude each other: start one chief and any number "
                        "of workers, each in its own process")
    if not (chief or worker):
        if "KERASTUNER_ORACLE_IP" not in os.environ:
            yield "single"
        else:
            yield "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"
        return
    host, port = _address(chief or worker, "--chief" if chief else "--worker")
    name = "chief" if chief else tuner_id or f"worker-{socket.gethostname()}-{os.getpid()}"
    if worker and "chief" in name:
        raise KzooError(f"tuner id {name!r} contains 'chief', which KerasTuner keeps for the "
                        "chief; pick another --tuner-id")
    if chief:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            try:
                probe.bind((host.strip("[]"), port))
            except OSError as error:
                raise KzooError(f"the chief cannot listen on {host}:{port} ({error.strerror}); "
                                "pick a free port and an address of this machine") from error
    saved = {key: os.environ.get(key) for key in _ENV}
    os.environ.update(KERASTUNER_TUNER_ID=name, KERASTUNER_ORACLE_IP=host,
                      KERASTUNER_ORACLE_PORT=str(port))
    try:
        if chief:
            yield "chief"
        else:
            with ChiefWatch(host, port):
                yield "worker"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
