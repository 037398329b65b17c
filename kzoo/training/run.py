"""Run directories: the one layer under ``train``, ``fine_tune`` and ``tune --retrain-best``.

It chooses, creates and resumes a run directory, seeds every random generator, records the
versions and the machine, and gives every kind of run one metrics schema. Every file it holds
is written atomically (:mod:`kzoo.files`), and every ``model.keras`` carries its class names
and how images are framed for it, so a bare model file predicts correctly.

A run directory::

    recipe.yaml        the exact settings          run.json       data dir, start time, kind
    model.keras        the model to use            metrics.json   the one schema, below
    history.csv        a row per epoch             class_names.json
    ...                and what each kind adds (logs/, backup/, report.html, audit.json)

>>> run_dir = choose_run_dir(recipe, None, resume=False)
>>> start_run_dir(recipe, run_dir, kind="train", data_dir="~/data")
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from kzoo.errors import KzooError
from kzoo.files import read_json, write_atomically, write_csv, write_json
from kzoo.recipes.recipe import Recipe
from kzoo.recipes.zoo import load_recipe, save_recipe

if TYPE_CHECKING:
    import keras

RUNS_ROOT = Path("runs")
FINISHED = ("completed", "stopped_nan")


class TrainResult(NamedTuple):
    """What a run returns: the model, its history, its metrics and where it lives."""

    model: keras.Model
    history: dict[str, list[float]]
    metrics: dict[str, Any]
    run_dir: Path


# --- seeds, versions, machine ------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, TensorFlow and the Keras backend, and make TensorFlow's ops
    deterministic: on every backend, since the tf.data pipelines (shuffle, augmentation) run
    TensorFlow ops even when the model runs on JAX."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    from kzoo import __version__

    return {"kzoo": __version__, "keras": keras.__version__, "backend": keras.backend.backend(),
            "tensorflow": tf.__version__}


def machine() -> dict[str, Any]:
    """The machine a run ran on: platform, processor, cores, memory."""
    cpu = platform.processor()
    try:
        names = [line.split(":", 1)[1].strip() for line in
                 Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = None
    return {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
            "memory_gb": round(memory / 2**30, 1) if memory else None,
            "python": platform.python_version()}


# --- choosing, creating, resuming ----------------------------------------------------------


def _resolved(data_dir: str | os.PathLike | None) -> str | None:
    return str(Path(data_dir).expanduser().resolve()) if data_dir else None


def is_finished(run_dir: Path) -> bool:
    return (read_json(run_dir / "metrics.json", {}) or {}).get("status") in FINISHED


def latest_unfinished_run(recipe_name: str, root: Path = RUNS_ROOT) -> Path | None:
    """The newest run directory of ``recipe_name`` under ``root`` that did not finish."""
    runs = [path for path in root.glob(f"{recipe_name}-*")
            if (path / "recipe.yaml").is_file() and not is_finished(path)]
    return max(runs, key=lambda path: path.stat().st_mtime) if runs else None


def choose_run_dir(
    recipe: Recipe,
    run_dir: str | os.PathLike | None,
    resume: bool,
    data_dir: str | os.PathLike | None = None,
    process_id: int = 0,
    num_processes: int = 1,
) -> Path:
    """The run directory to use, checked but not yet created: a new one, or the one to resume
    (``run_dir``, else the latest unfinished run of the recipe).

    A finished run is never resumed, a run is resumed only with the settings and data it
    started with, and a non-empty directory is never reused for a new run. The processes of
    one training run (:mod:`kzoo.training.distributed`) must all be given the same directory, on
    storage they share: process 0 checks and creates a new one, and every process resumes
    from its checkpoints.
    """
    require_shared_run_dir(run_dir, num_processes)
    if process_id != 0 and not resume:
        return Path(run_dir)
    if run_dir is None and resume:
        run_dir = latest_unfinished_run(recipe.name)
        if run_dir is None:
            raise KzooError(
                f"nothing to resume: no unfinished run of {recipe.name!r} under {RUNS_ROOT}/ "
                "(where runs go without --run-dir); a run started with --run-dir DIR is "
                "resumed with the same --run-dir DIR and --resume"
            )
        print(f"kzoo: resuming {run_dir}, the latest unfinished run of {recipe.name}")
    if run_dir is None:
        run_dir = RUNS_ROOT / f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(run_dir)
    if resume:
        _check_resumable(recipe, run_dir, data_dir)
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        raise KzooError(
            f"run directory {str(run_dir)!r} already exists and is not empty; pass --resume to "
            "continue it, or choose another --run-dir"
        )
    return run_dir


def require_shared_run_dir(run_dir: str | os.PathLike | None, num_processes: int) -> None:
    """Refuse a run of several processes without an explicit run directory: each would
    choose its own."""
    if num_processes > 1 and run_dir is None:
        raise KzooError(f"training across {num_processes} processes needs --run-dir DIR: a "
                        "folder every process reaches (shared storage), the same on each")


def _check_resumable(recipe: Recipe, run_dir: Path, data_dir) -> None:
    saved = run_dir / "recipe.yaml"
    if not saved.is_file():
        raise KzooError(f"cannot resume {str(run_dir)!r}: it holds no recipe.yaml of a kzoo run")
    before, now = load_recipe(saved).to_dict(), recipe.to_dict()
    changed = sorted(key for key in {*before, *now} if before.get(key) != now.get(key))
    if changed:
        raise KzooError(
            f"cannot resume {str(run_dir)!r} with different settings ({', '.join(changed)}); "
            "rerun with the same recipe and flags, or start a new run"
        )
    record = read_json(run_dir / "run.json", {}) or {}
    if "data_dir" in record and record["data_dir"] != _resolved(data_dir):
        raise KzooError(
            f"cannot resume {str(run_dir)!r} with --data-dir {data_dir!r}: it started with "
            f"--data-dir {record['data_dir']!r}; resume with the same data, or start a new run"
        )
    if is_finished(run_dir):
        raise KzooError(f"run {str(run_dir)!r} already finished; nothing to resume")


def start_run_dir(recipe: Recipe, run_dir: Path, kind: str,
                  data_dir: str | os.PathLike | None = None,
                  class_names: Sequence[str] | None = None) -> None:
    """Create a new run directory: ``recipe.yaml`` (the exact settings), ``run.json`` (kind,
    data directory, start time) and ``class_names.json``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    save_run_recipe(recipe, run_dir)
    write_json(run_dir / "run.json", {"kind": kind, "data_dir": _resolved(data_dir),
                                      "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    if class_names is not None:
        write_json(run_dir / "class_names.json", [str(name) for name in class_names])


def save_run_recipe(recipe: Recipe, run_dir: Path) -> None:
    """``recipe.yaml``: the run's exact settings (again, where a setting is found while the run
    goes, such as a learning rate from the finder)."""
    write_atomically(run_dir / "recipe.yaml", lambda partial: save_recipe(recipe, partial))


# --- what a run writes ---------------------------------------------------------------------


def worker_result(kind: str, model: keras.Model, run_dir: Path, process_id: int) -> TrainResult:
    """What a process other than process 0 of a cluster returns once its part of a run is
    done: process 0 writes the run directory."""
    print(f"kzoo: process {process_id} done; process 0 writes the results into {run_dir}")
    return TrainResult(model, {}, {"status": "completed", "kind": kind,
                                   "process_id": process_id}, run_dir)


def write_history(history: Mapping[str, Sequence[Any]], path: Path) -> None:
    write_csv(path, list(history), zip(*history.values()))


def run_metrics(kind: str, recipe: Recipe, *, class_names: Sequence[str], test_split: str,
                sizes: Mapping[str, int], wall_time_s: float, timings_s: Mapping[str, float],
                data_dir: str | os.PathLike | None = None, status: str = "completed",
                ) -> dict[str, Any]:
    """The fields every run's ``metrics.json`` holds, whatever its kind; each kind adds its
    figures (``test_accuracy`` only where there is a test split of its own)."""
    import keras

    return {
        "kind": kind, "status": status, "recipe": recipe.name, "model": recipe.model,
        "dataset": recipe.dataset, "data_dir": _resolved(data_dir), "seed": recipe.seed,
        "class_names": [str(name) for name in class_names], "test_split": test_split,
        "sizes": dict(sizes), "wall_time_s": round(wall_time_s, 2),
        "timings_s": {key: round(value, 2) for key, value in timings_s.items()},
        "precision": keras.config.dtype_policy().name, "backend": keras.backend.backend(),
        "expected_accuracy": recipe.expected_accuracy, "versions": versions(),
        "machine": machine(),
    }


def read_history(history_csv: Path) -> dict[str, list[float]]:
    """``history.csv`` as columns (what Keras's ``CSVLogger`` wrote, resumed runs included)."""
    import csv

    if not history_csv.is_file():
        return {}
    with history_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    # CSVLogger writes NA in the val_ columns of a fit without validation data.
    return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})
            if not any(row[key] == "NA" for row in rows)}


def merge_phases(phases: Sequence[tuple[str, Mapping[str, Sequence[float]]]]) -> dict[str, list]:
    """The histories of a run's phases (name, Keras ``History.history``) as one table, the
    epochs counted across phases (1-based) and each row naming its phase."""
    keys = ("loss", "accuracy", "val_loss", "val_accuracy")
    merged: dict[str, list] = {"epoch": [], "phase": [], **{key: [] for key in keys}}
    for phase, history in phases:
        for index in range(len(history.get("loss", []))):
            merged["epoch"].append(len(merged["epoch"]) + 1)
            merged["phase"].append(phase)
            for key in keys:
                values = history.get(key, [])
                merged[key].append(float(values[index]) if index < len(values) else float("nan"))
    return merged


# --- the run lifecycle ---------------------------------------------------------------------


class Run:
    """One run, whatever its kind (``train``, ``finetune``, ``lr_find``): it owns the run
    directory, seeding, precision, the distribution over processes and devices, the saved
    model, the final evaluation and ``metrics.json``. The kinds are small pieces run inside it.

    >>> with Run(recipe, "train", run_dir=None) as run:      # dir chosen, cluster started,
    ...     model = ...                                       # precision set, seeded
    ...     run.create(class_names)                           # recipe.yaml, run.json
    ...     run.save_model(model, class_names)
    ...     metrics = run.evaluate(model, splits)             # confusion_matrix.csv
    ...     run.finish(model, history, metrics)               # metrics.json
    """

    def __init__(self, recipe: Recipe, kind: str, *, run_dir: str | os.PathLike | None = None,
                 resume: bool = False, data_dir: str | os.PathLike | None = None,
                 distribution: Any = None):
        from kzoo.training.distributed import start

        self.recipe, self.kind, self.resume, self.data_dir = recipe, kind, resume, data_dir
        cluster = cluster_of(distribution)
        require_shared_run_dir(run_dir, cluster.num_processes)  # before waiting for the others
        self.distributed = start(cluster)
        self.dir = choose_run_dir(recipe, run_dir, resume, data_dir, cluster.process_id,
                                  cluster.num_processes)
        self.started = time.perf_counter()
        self.precision = "float32"
        self._policy = None

    def __enter__(self):
        from kzoo.training.precision import precision_policy

        self._policy = precision_policy(self.recipe.precision)
        self.precision = self._policy.__enter__()
        seed_everything(self.recipe.seed)
        return self

    def __exit__(self, *exc_info) -> None:
        self._policy.__exit__(*exc_info)

    @property
    def chief(self) -> bool:
        """Whether this process writes the run directory (process 0 of a cluster)."""
        return self.distributed.is_chief

    def seed(self) -> None:
        """Seed every generator again, as at the start (after a piece that drew numbers)."""
        seed_everything(self.recipe.seed)

    def create(self, class_names: Sequence[str] | None, recipe: Recipe | None = None) -> None:
        """Create the run directory (process 0, a new run): only once the data and the model
        are known good, so bad input leaves no half-made directory."""
        if recipe is not None:
            self.recipe = recipe
        if self.chief and not self.resume:
            start_run_dir(self.recipe, self.dir, self.kind, self.data_dir, class_names)

    def update_recipe(self, recipe: Recipe) -> None:
        """The run's settings changed while it ran (a learning rate found by the finder)."""
        self.recipe = recipe
        if self.chief and self.dir.is_dir():
            save_run_recipe(recipe, self.dir)

    def save_model(self, model: keras.Model, class_names: Sequence[str] | None = None) -> Path:
        """``model.keras`` for inference, saved by one process alone."""
        from kzoo.models.saving import save_model
        from kzoo.training.distributed import outside_distribution

        path = self.dir / "model.keras"
        with outside_distribution():
            save_model(model, path, class_names)
        return path

    def model_as_saved(self, model: keras.Model) -> keras.Model:
        """The model to evaluate: the saved file's, on one device, when it trained on several."""
        if self.distributed.replicas > 1:
            from kzoo.models.registry import load_model

            return load_model(str(self.dir / "model.keras"))
        return model

    def evaluate(self, model: keras.Model, splits, tta: str | None = None):
        """The final evaluation (:func:`kzoo.analysis.evaluation.evaluate_splits`) of every
        split the run holds out; the confusion matrix printed and saved as CSV. Returns the
        metrics and the probabilities they come from."""
        import numpy as np

        from kzoo.analysis.evaluation import evaluate_splits, format_confusion_matrix

        metrics, probabilities = evaluate_splits(model, splits, self.recipe.batch_size,
                                                 tta or self.recipe.tta)
        names = splits.class_names
        matrix = metrics["confusion_matrix"]
        print(format_confusion_matrix(np.asarray(matrix), names))
        write_csv(self.dir / "confusion_matrix.csv", ["true\\predicted", *names],
                  ([name, *row] for name, row in zip(names, matrix)))
        return metrics, probabilities

    def finish(self, model: keras.Model, history: Mapping[str, Sequence[Any]],
               metrics: Mapping[str, Any], *, splits, timings_s: Mapping[str, float],
               status: str = "completed") -> TrainResult:
        """Write ``metrics.json``: the fields every run has (:func:`run_metrics`), then the
        kind's own ``metrics``; the run is then finished."""
        wall_time = time.perf_counter() - self.started
        record = run_metrics(self.kind, self.recipe, class_names=splits.class_names,
                             test_split=splits.test_split, sizes=splits.sizes,
                             wall_time_s=wall_time, timings_s=timings_s,
                             data_dir=self.data_dir, status=status)
        record.update(metrics)
        record["distribution"] = self.distributed.summary()
        write_json(self.dir / "metrics.json", record)
        return TrainResult(model, dict(history), record, self.dir)

    def worker_result(self, model: keras.Model) -> TrainResult:
        """What a process other than process 0 returns: process 0 writes the results."""
        return worker_result(self.kind, model, self.dir, self.distributed.cluster.process_id)


def cluster_of(distribution: Any):
    """A :class:`~kzoo.training.distributed.Cluster` from ``distribution``: ``None`` (one
    process, or what ``KERAS_DISTRIBUTION_*`` says), a ``Cluster``, or a mapping of its
    settings (``coordinator``, ``num_processes``, ``process_id``, ``devices``)."""
    from kzoo.training.distributed import Cluster

    if isinstance(distribution, Cluster):
        return distribution
    settings = dict(distribution or {})
    allowed = ("coordinator", "num_processes", "process_id", "devices")
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise KzooError(f"distribution setting {unknown[0]!r} is unknown; expected "
                        f"{', '.join(allowed)}")
    return Cluster.from_settings(*(settings.get(key) for key in allowed))
