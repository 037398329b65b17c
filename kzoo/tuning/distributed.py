"""KerasTuner's own chief and workers, as ``--chief HOST:PORT`` and ``--worker HOST:PORT``."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

from kzoo.errors import KzooError

_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


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
        yield "chief" if chief else "worker"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
