"""Every private name of TensorFlow, Keras and KerasTuner that kzoo relies on, in one place.

Each entry says what it is, why kzoo needs it, and the versions it was checked on.
``tests/test_compat.py`` fails with a clear message when one of them disappears, so an upgrade
that breaks kzoo is found by the tests, not by a user. ``setup.cfg`` pins the upper bounds of
the versions checked.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

CHECKED = {"keras": "3.15.1", "tensorflow": "2.21.0", "keras-tuner": "1.4.8"}

# keras.callbacks.BackupAndRestore's files (keras/src/callbacks/backup_and_restore.py, checked
# on Keras 3.15.1): the epochs done are in training_metadata.json, and with
# double_checkpoint=True the state before that is kept with a .bkp suffix.
BACKUP_WEIGHTS = "latest.weights.h5"
BACKUP_METADATA = "training_metadata.json"
PREVIOUS_SUFFIX = ".bkp"


def backup_epochs_done(backup_dir: Path) -> int:
    """Epochs a ``BackupAndRestore`` backup holds (0 if none). A backup whose metadata was
    cut off mid-write (a kill at that moment) is replaced by the one before it, with a
    message, so that Keras resumes from the last good state instead of failing."""
    metadata = backup_dir / BACKUP_METADATA
    if not metadata.is_file():
        return 0
    try:
        return int(json.loads(metadata.read_text())["epoch"])
    except (ValueError, KeyError, TypeError):
        pass
    previous = backup_dir / (BACKUP_METADATA + PREVIOUS_SUFFIX)
    weights = backup_dir / (BACKUP_WEIGHTS + PREVIOUS_SUFFIX)
    try:
        epoch = int(json.loads(previous.read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        metadata.unlink()
        (backup_dir / BACKUP_WEIGHTS).unlink(missing_ok=True)
        print("kzoo: the run's checkpoint was cut off while being written and no earlier one "
              "is kept; resuming from the start")
        return 0
    shutil.copyfile(weights, backup_dir / BACKUP_WEIGHTS)
    shutil.copyfile(previous, metadata)
    print(f"kzoo: the last checkpoint was cut off while being written; resuming from the one "
          f"before it (after epoch {epoch})")
    return epoch


def custom_gradient_names() -> set[str]:
    """The names TensorFlow's graph-mode ``tf.custom_gradient`` has registered so far
    (``tensorflow.python.framework.ops._gradient_registry._registry``, checked on TensorFlow
    2.21.0); empty where the registry is not found."""
    from tensorflow.python.framework import ops

    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", {})
    return {name for name in registry if name.startswith("CustomGradient-")}


def forget_custom_gradients(names: set[str]) -> None:
    """Drop these ``tf.custom_gradient`` registrations: each keeps its whole graph alive, and a
    tuning search makes one per trial that ``keras.backend.clear_session`` cannot free."""
    from tensorflow.python.framework import ops

    registry = ops._gradient_registry._registry
    for name in names:
        registry.pop(name, None)


# KerasTuner's Oracle internals that kzoo's oracle (kzoo/tuning.py, _KzooOracle) overrides or
# reads, checked on keras-tuner 1.4.8: the trial proposal it wraps to propose the recipe's own
# values first, the duplicate check it reuses, how a trial is saved, where the search lives,
# the failure count it turns into a clear message, and the queue of trials to run again that
# it completes on resume.
ORACLE_METHODS = ("_random_values", "_duplicate", "_save_trial", "_check_consecutive_failures",
                  "_project_dir")
ORACLE_ATTRIBUTES = ("_retry_queue", "_run_times")
