"""The private TensorFlow, Keras and KerasTuner names kzoo relies on (kzoo/_compat.py) are
still there: a clear message names the one that went, instead of a failure deep in a run."""

from __future__ import annotations

import keras_tuner as kt

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


def test_keras_image_layer_hooks_are_there():
    import keras

    missing = [name for name in _compat.IMAGE_LAYER_HOOKS
               if not hasattr(keras.layers.RandomRotation, name)]
    assert not missing, (f"Keras {keras.__version__} lacks {', '.join(missing)}, which "
                         f"kzoo.data.augment.RandomAffine relies on (checked on "
                         f"{_compat.CHECKED['keras']}); see kzoo/_compat.py")
