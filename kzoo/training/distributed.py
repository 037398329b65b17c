"""Training on several devices or processes, with the engines Keras 3 itself supports.

- **Several processes (machines):** Keras's JAX backend. ``jax.distributed`` joins the
  processes (gloo collectives on CPUs), and ``keras.distribution.DataParallel`` replicates the
  model over every device of every process. Keras 3 has no multi-machine path on TensorFlow
  (it does not support ``MultiWorkerMirroredStrategy``, keras-team/keras#20585).
- **Several devices on one machine:** ``DataParallel`` on JAX, ``tf.distribute.MirroredStrategy``
  on TensorFlow. On a machine without accelerators, ``devices=N`` splits the CPU into N devices:
  a way to try a multi-device run, not a faster one.

The global batch is the recipe's, and so is the learning rate: every step averages the
gradient over the same global batch a single process would train on. Each process feeds a
contiguous slice of every batch (:meth:`Distributed.shard`), so the processes together see
exactly the batches of a single-process run. Only process 0 (the chief) writes files, and its
values win: every process starts from process 0's initial weights (:meth:`Distributed.replicate`)
and trains at the rate process 0's learning-rate sweep found; processes started with other
settings refuse (:meth:`Distributed.check_same`).

>>> cluster = Cluster.from_settings("10.0.0.1:8476", num_processes=2, process_id=0)
>>> distributed = start(cluster)
>>> with distributed.scope():
...     model = distributed.replicate(local_model, build)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from kzoo.errors import KzooError

# The variables Keras reads for keras.distribution.initialize (and cluster launchers set).
ENVIRONMENT = {
    "coordinator": "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "num_processes": "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "process_id": "KERAS_DISTRIBUTION_PROCESS_ID",
}
HEARTBEAT_S = 30  # a process silent this long is taken for dead, and the others stop
SHUTDOWN_S = 3600  # how long the others wait at exit for process 0's final evaluation
_ADDRESS = re.compile(r"^\[?[\w.\-:]+\]?:\d{1,5}$")


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where this process stands: the coordinator's ``HOST:PORT``, how many processes train
    together and which one this is, and the local devices to use (``"all"``, a count, or
    ``None``: the backend's default device for a lone process, all for one of a cluster)."""

    coordinator: str | None = None
    num_processes: int = 1
    process_id: int = 0
    devices: str | int | None = None

    @classmethod
    def from_settings(cls, coordinator: str | None = None, num_processes: int | None = None,
                      process_id: int | None = None, devices: str | int | None = None,
                      environ: Mapping[str, str] = os.environ) -> Cluster:
        """The cluster given by the arguments, or else by the environment variables Keras
        reads (``KERAS_DISTRIBUTION_*``), checked."""
        def setting(name, value):
            return value if value is not None else environ.get(ENVIRONMENT[name]) or None

        coordinator = setting("coordinator", coordinator)
        num_processes = _whole(setting("num_processes", num_processes), "number of processes", 1)
        process_id = _whole(setting("process_id", process_id), "process id", 0)
        if coordinator and "," in coordinator:  # Keras's form: every job's address, the first leads
            addresses = coordinator.split(",")
            if num_processes == 1:
                num_processes = len(addresses)
            coordinator = addresses[0]
        if num_processes < 1:
            raise KzooError(f"--num-processes {num_processes}: expected 1 or more")
        if not 0 <= process_id < num_processes:
            raise KzooError(f"--process-id {process_id}: expected 0 to {num_processes - 1} for "
                            f"{num_processes} processes; number the processes from 0")
        if num_processes > 1 and not coordinator:
            raise KzooError(f"{num_processes} processes need a coordinator: pass --coordinator "
                            "HOST:PORT, the address of process 0, the same on every process")
        if coordinator and not _ADDRESS.match(coordinator):
            raise KzooError(f"--coordinator {coordinator!r}: expected HOST:PORT, e.g. "
                            "10.0.0.1:8476 (process 0's address and a free port)")
        return cls(coordinator if num_processes > 1 else None, num_processes, process_id,
                   _devices(devices))

    @property
    def is_chief(self) -> bool:
        return self.process_id == 0


def _whole(value, what: str, default: int) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise KzooError(f"{what} {value!r}: expected a whole number") from None


def _devices(value: str | int | None) -> str | int | None:
    if value is None or value == "all":
        return value
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if count < 1:
        raise KzooError(f"--devices {value!r}: expected all, or a number of devices >= 1")
    return None if count == 1 else count


@dataclasses.dataclass
class Distributed:
    """A started cluster: how many devices train in all, whether this process is the chief,
    and the backend's data-parallel engine (``None`` for one device)."""

    cluster: Cluster
    replicas: int = 1
    engine: Any = None  # keras.distribution.DataParallel on JAX, tf.distribute.MirroredStrategy

    @property
    def is_chief(self) -> bool:
        return self.cluster.is_chief

    @property
    def on_jax(self) -> bool:
        return self.engine is not None and hasattr(self.engine, "device_mesh")

    def summary(self) -> dict[str, int]:
        """What a run's ``metrics.json`` records: processes and devices in all."""
        return {"processes": self.cluster.num_processes, "devices": self.replicas}

    def describe(self) -> str:
        processes = self.cluster.num_processes
        if self.replicas == 1:
            return "1 device"
        where = f"{processes} processes, " if processes > 1 else ""
        return f"{where}{self.replicas} devices in all"

    def steps_per_execution(self, wanted: int) -> int:
        """``wanted``, except under TensorFlow's MirroredStrategy: Keras 3.15's multi-step
        loop fails there (a placeholder left unfed in its while loop), so one step a call."""
        return 1 if self.engine is not None and not self.on_jax else wanted

    @contextlib.contextmanager
    def stopping_together(self, advice: str) -> Iterator[None]:
        """Turn the error a collective raises when another process of the cluster is gone
        into one line naming what happened and ``advice``: what to run next."""
        try:
            yield
        except Exception as error:
            if not lost_peer(error):
                raise
            raise KzooError(
                f"process {self.cluster.process_id} of {self.cluster.num_processes}: another "
                f"process of the run stopped ({str(error).splitlines()[0][:200]}), so this one "
                f"stops too. {advice}") from None

    def scope(self) -> contextlib.AbstractContextManager:
        """Where the model, its optimizer and its training are made: replicated over the
        devices."""
        return self.engine.scope() if self.engine is not None else contextlib.nullcontext()

    def replicate(self, model, build: Callable[[], Any]):
        """``model`` made again by ``build`` in :meth:`scope`, with ``model``'s values (weights
        and random-generator states) as process 0 has them (:func:`from_process_zero`: a
        process that built other initial weights cannot drift from the others); ``model``
        itself where there is one device. Building outside first keeps a run's initial
        weights, and work such as ``adapt``, the same whatever the devices."""
        if self.engine is None:
            return model
        with self.scope():
            replica = build()
        for target, source in zip(replica.variables, model.variables, strict=True):
            if tuple(target.shape) != tuple(source.shape):
                raise KzooError(f"the model made again for {self.describe()} differs from the "
                                f"first: {target.path} {target.shape} against {source.shape}")
        import keras

        values = from_process_zero([keras.ops.convert_to_numpy(v) for v in model.variables])
        for target, value in zip(replica.variables, values):
            target.assign(value)
        return replica

    def check_same(self, what: str, value: str, advice: str) -> None:
        """Refuse, on every process, where ``value`` (a text such as a recipe's settings) is
        not the same on every process of the cluster as on process 0."""
        if self.cluster.num_processes == 1 or not joined():
            return
        import hashlib

        import numpy as np

        digest = np.frombuffer(hashlib.sha256(value.encode()).digest(), dtype=np.uint8)
        agreed = bool(np.array_equal(from_process_zero([digest])[0], digest))
        if not gather_flags(agreed):  # every process refuses, process 0 too
            raise KzooError(f"process {self.cluster.process_id} of {self.cluster.num_processes}: "
                            f"the processes of the run differ in {what}, so their models would "
                            f"drift apart. {advice}")

    def shard(self, batches):
        """This process's part of every batch of a ``tf.data`` dataset of ``(images, labels)``
        batches: the batch is padded to a multiple of the device count by repeating its first
        examples (a last, partial batch only; at most ``replicas - 1`` of them: neither engine
        takes a batch the devices cannot share evenly), and process ``i`` of ``n`` takes its
        ``i``-th contiguous slice."""
        if self.engine is None:
            return batches
        return process_part(batches, self.replicas, self.cluster.num_processes,
                            self.cluster.process_id)


def process_part(batches, replicas: int, processes: int, index: int):
    """Part ``index`` of ``processes`` of every batch (a tuple of tensors) of ``batches``,
    each batch first padded to a multiple of ``replicas`` by repeating its first examples."""
    import tensorflow as tf

    def part(*batch):
        size = tf.shape(batch[0])[0]
        share = (size + replicas - 1) // replicas * replicas // processes
        rows = tf.range(index * share, (index + 1) * share) % size
        return tuple(tf.gather(tensor, rows) for tensor in batch)

    return batches.map(part)


@contextlib.contextmanager
def outside_distribution() -> Iterator[None]:
    """Keras's distribution set aside, for work one process does alone, such as saving a
    file: under a multi-process distribution, creating any variable waits on every process."""
    import keras

    current = keras.distribution.distribution()
    if current is None:
        yield
        return
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(current)


def start(cluster: Cluster) -> Distributed:
    """Join the cluster and make the backend's data-parallel engine; call it before the
    backend runs anything (it sets how many CPU devices there are, and JAX's collectives)."""
    if cluster.num_processes == 1 and cluster.devices is None:
        return Distributed(cluster)
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        return _start_jax(cluster)
    if cluster.num_processes > 1:
        raise KzooError(
            f"training across {cluster.num_processes} processes needs Keras's JAX backend "
            f"(this is {backend}; Keras 3 does not support TensorFlow's "
            "MultiWorkerMirroredStrategy, keras-team/keras#20585): install kzoo[jax] and set "
            "KERAS_BACKEND=jax on every process"
        )
    if backend == "tensorflow":
        return _start_tensorflow(cluster)
    raise KzooError(f"--devices {cluster.devices}: several devices need the JAX or TensorFlow "
                    f"backend, not {backend}")


def _start_jax(cluster: Cluster) -> Distributed:
    import jax
    import keras

    try:
        if isinstance(cluster.devices, int):  # only the CPU platform: N devices where no accelerator
            jax.config.update("jax_num_cpu_devices", cluster.devices)
        if cluster.num_processes > 1:
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
            jax.distributed.initialize(cluster.coordinator, cluster.num_processes,
                                       cluster.process_id, heartbeat_timeout_seconds=HEARTBEAT_S,
                                       shutdown_timeout_seconds=SHUTDOWN_S)
    except RuntimeError as error:  # JAX already ran something in this process
        raise KzooError(f"cannot start training on several devices: {error}. Start the "
                        "distribution first thing, before anything else runs JAX") from None
    # A process of a cluster uses all its devices unless told otherwise, a lone one its first.
    wanted = cluster.devices or ("all" if cluster.num_processes > 1 else None)
    count = len(_chosen(jax.local_devices(), wanted))
    by_process: dict[int, list] = {}  # every process uses as many devices as this one
    for device in sorted(jax.devices(), key=lambda device: device.id):
        by_process.setdefault(device.process_index, []).append(device)
    every = [device for process in sorted(by_process) for device in by_process[process][:count]]
    if len(every) == 1:
        return Distributed(cluster)
    engine = keras.distribution.DataParallel(devices=every, auto_shard_dataset=False)
    return Distributed(cluster, replicas=len(every), engine=engine)


def _start_tensorflow(cluster: Cluster) -> Distributed:
    import tensorflow as tf

    accelerators = tf.config.list_physical_devices("GPU")
    if not accelerators and isinstance(cluster.devices, int):
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * cluster.devices)
        except RuntimeError:
            raise KzooError(f"--devices {cluster.devices}: TensorFlow has already started in "
                            "this process, so its CPU can no longer be split; start the "
                            "distribution first thing") from None
    devices = _chosen(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"),
                      cluster.devices)
    if len(devices) == 1:
        return Distributed(cluster)
    engine = tf.distribute.MirroredStrategy([device.name for device in devices])
    return Distributed(cluster, replicas=len(devices), engine=engine)


def _chosen(devices: list, wanted: str | int | None) -> list:
    if wanted in (None, "all"):
        return list(devices) if wanted == "all" else list(devices[:1])
    if wanted > len(devices):
        raise KzooError(f"--devices {wanted}: this machine has {len(devices)} "
                        f"({', '.join(str(device) for device in devices)}); pass --devices all")
    return list(devices[:wanted])


def from_process_zero(arrays: list) -> list:
    """Process 0's values of ``arrays`` (NumPy arrays of the same shapes and types on every
    process), bit for bit, on every process of a cluster; a lone process's own values as they
    are. Every process of the cluster must call it at the same point."""
    import numpy as np

    arrays = [np.asarray(array) for array in arrays]
    if not joined():
        return arrays
    from jax.experimental import multihost_utils

    raw = [np.ascontiguousarray(array).reshape(-1).view(np.uint8) for array in arrays]
    received = multihost_utils.broadcast_one_to_all(raw)  # bytes: no type is narrowed on the way
    return [np.asarray(got, dtype=np.uint8).view(array.dtype).reshape(array.shape)
            for got, array in zip(received, arrays, strict=True)]


def gather_flags(flag: bool) -> bool:
    """Whether ``flag`` holds on every process of the cluster (on a lone process, ``flag``)."""
    if not joined():
        return flag
    import numpy as np
    from jax.experimental import multihost_utils

    return bool(np.all(np.asarray(multihost_utils.process_allgather(np.int32(flag)))))


def joined() -> bool:
    """Whether this process has joined a cluster of several processes."""
    import sys

    jax = sys.modules.get("jax")
    return jax is not None and jax.distributed.is_initialized()


def lost_peer(error: BaseException) -> bool:
    """Whether ``error``, raised in a process of a cluster, says that another process is gone
    (its collectives' connection closed, or the coordinator's heartbeat stopped)."""
    text = str(error).lower()
    return joined() and any(sign in text for sign in
                            ("gloo", "connection closed", "coordination", "heartbeat",
                             "unavailable", "connection reset"))


def leave(code: int) -> None:
    """End this process at once with ``code``. After another process died, JAX's shutdown
    barrier at exit could only fail, after the heartbeat timeout, with an abort."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
