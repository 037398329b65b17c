"""The private TensorFlow, Keras and KerasTuner names kzoo relies on (kzoo/_compat.py) are
still there: a clear message names the one that went, instead of a failure deep in a run."""

from __future__ import annotations

import json

import keras
import keras_tuner as kt
import pytest

from kzoo import _compat


def test_keras_tuner_oracle_internals_are_there():
    oracle = kt.oracles.RandomSearchOracle(objective="val_accuracy", max_trials=1)
    missing = [name for name in _compat.ORACLE_METHODS if not hasattr(type(oracle), name)]
    missing += [name for name in _compat.ORACLE_ATTRIBUTES if not hasattr(oracle, name)]
    assert not missing, (f"keras-tuner {kt.__version__} lacks {', '.join(missing)}, which kzoo's "
                         f"oracle relies on (checked on {_compat.CHECKED['keras-tuner']}); see "
                         "kzoo/_compat.py")


def test_tensorflow_gradient_registry_is_there():
    from tensorflow.python.framework import ops

    assert hasattr(getattr(ops, "_gradient_registry", None), "_registry"), (
        "TensorFlow moved its custom-gradient registry; kzoo's tuner can no longer free each "
        "trial's graphs (see kzoo/_compat.py)")
    assert isinstance(_compat.custom_gradient_names(), set)


def test_backup_and_restore_files_are_named_as_assumed(tmp_path):
    callback = keras.callbacks.BackupAndRestore(str(tmp_path), double_checkpoint=True)
    assert callback._weights_path.endswith(_compat.BACKUP_WEIGHTS), "see kzoo/_compat.py"
    assert callback._training_metadata_path.endswith(_compat.BACKUP_METADATA)
    assert callback._prev_weights_path.endswith(_compat.BACKUP_WEIGHTS + _compat.PREVIOUS_SUFFIX)


@pytest.mark.parametrize("previous", [True, False])
def test_a_backup_cut_off_mid_write_falls_back_to_the_one_before(tmp_path, capsys, previous):
    (tmp_path / _compat.BACKUP_METADATA).write_text('{"epoch": 3')  # cut off
    (tmp_path / _compat.BACKUP_WEIGHTS).write_bytes(b"new")
    if previous:
        (tmp_path / (_compat.BACKUP_METADATA + ".bkp")).write_text(json.dumps({"epoch": 2}))
        (tmp_path / (_compat.BACKUP_WEIGHTS + ".bkp")).write_bytes(b"old")
    done = _compat.backup_epochs_done(tmp_path)
    printed = capsys.readouterr().out
    if previous:
        assert done == 2 and "resuming from the one before it (after epoch 2)" in printed
        assert (tmp_path / _compat.BACKUP_WEIGHTS).read_bytes() == b"old"
        assert json.loads((tmp_path / _compat.BACKUP_METADATA).read_text()) == {"epoch": 2}
    else:
        assert done == 0 and "resuming from the start" in printed
        assert not (tmp_path / _compat.BACKUP_METADATA).exists()
