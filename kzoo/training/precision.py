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


def _gpu_compute_capability() -> tuple[int, int] | None:
    """The first GPU's CUDA compute capability, or None without a GPU (TensorFlow's view)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    return tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))


def auto_precision(flags: set[str] | None = None, gpu: tuple[int, int] | None | bool = False) -> str:
    """What ``auto`` means on this machine: ``mixed_float16`` on a GPU with float16 tensor cores
    (compute capability 7.0 or more), ``mixed_bfloat16`` on a CPU with native bf16
    (:data:`BF16_CPU_FLAGS`), ``float32`` otherwise. ``flags`` and ``gpu`` default to this
    machine's."""
    if gpu is False:
        gpu = _gpu_compute_capability()
    if gpu is not None and tuple(gpu) >= (7, 0):
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
