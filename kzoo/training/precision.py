"""The numeric precision a run computes in: float32, or Keras's mixed policies where the hardware
computes the narrower type natively.

Under ``mixed_bfloat16`` and ``mixed_float16`` the layers compute in 16 bits and keep their
weights in float32; kzoo's classifier heads (softmax or logits) and every loss stay in float32,
as Keras's mixed-precision guide advises.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from kzoo.errors import KzooError
from kzoo.recipes.recipe import PRECISIONS

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # native bf16 dot products (AVX-512 or AMX)


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags as Linux lists them; empty where there is no ``/proc/cpuinfo``."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def _capability(text) -> tuple[int, int]:
    """A compute capability, ``"8.6"`` or ``(8, 6)``, as a pair of numbers; (0, 0) where it
    cannot be read."""
    try:
        major, minor = (str(text).split(".") + ["0"])[:2] if isinstance(text, str) else text
        return int(major), int(minor)
    except (TypeError, ValueError):
        return (0, 0)


def _gpu_compute_capability(backend: str | None = None) -> tuple[int, int] | None:
    """The first GPU's CUDA compute capability, or None without a GPU, as the active Keras
    backend sees it (``backend`` names another): ``jax.devices()`` on JAX, ``tf.config`` on
    TensorFlow, ``torch.cuda`` on torch. A GPU whose capability is not told gives (0, 0)."""
    if backend is None:
        import keras

        backend = keras.backend.backend()
    if backend == "jax":
        import jax

        try:
            gpus = jax.devices("gpu")
        except RuntimeError:  # no GPU platform
            return None
        return _capability(getattr(gpus[0], "compute_capability", None)) if gpus else None
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return None
        return _capability(torch.cuda.get_device_capability(0))
    if backend != "tensorflow":
        return None
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    return _capability(details.get("compute_capability", (0, 0)))


def auto_precision(flags: set[str] | None = None, gpu: tuple[int, int] | None | bool = False) -> str:
    """What ``auto`` means on this machine: ``mixed_bfloat16`` on a GPU with bfloat16 tensor
    cores (compute capability 8.0 or more: same range as float32, no loss scaling),
    ``mixed_float16`` on one with float16 tensor cores only (7.x), ``mixed_bfloat16`` on a CPU
    with native bf16 (:data:`BF16_CPU_FLAGS`), ``float32`` otherwise. ``flags`` and ``gpu``
    (the first GPU's compute capability, ``None`` for none) default to this machine's, as
    the active Keras backend sees it."""
    if gpu is False:
        gpu = _gpu_compute_capability()
    if gpu is not None and _capability(gpu) >= (8, 0):
        return "mixed_bfloat16"
    if gpu is not None and _capability(gpu) >= (7, 0):
        return "mixed_float16"
    flags = cpu_flags() if flags is None else flags
    if gpu is None and any(flag in flags for flag in BF16_CPU_FLAGS):
        return "mixed_bfloat16"
    return "float32"


def resolve_precision(precision: str) -> str:
    """``precision`` with ``auto`` replaced by this machine's choice; a bad value is refused."""
    if precision not in PRECISIONS:
        raise KzooError(f"precision {precision!r} is unknown; expected one of "
                        f"{', '.join(PRECISIONS)}")
    return auto_precision() if precision == "auto" else precision


def use_precision(precision: str) -> str:
    """Set Keras's global dtype policy for the models built next; returns the policy's name."""
    import keras

    resolved = resolve_precision(precision)
    keras.config.set_dtype_policy(resolved)
    return resolved


@contextlib.contextmanager
def precision_policy(precision: str):
    """Build models under ``precision`` (see :func:`use_precision`) inside the block, and put
    the global policy back after it; yields the policy's name."""
    import keras

    before = keras.config.dtype_policy()
    try:
        yield use_precision(precision)
    finally:
        keras.config.set_dtype_policy(before)
