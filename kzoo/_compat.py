"""Every private name of TensorFlow, Keras and KerasTuner that kzoo relies on, in one place.

Each entry says what it is, why kzoo needs it, and the versions it was checked on.
``tests/test_compat.py`` fails with a clear message when one of them disappears, so an upgrade
that breaks kzoo is found by the tests, not by a user. ``setup.cfg`` pins the upper bounds of
the versions checked.
"""

from __future__ import annotations

CHECKED = {"keras": "3.15.1", "tensorflow": "2.21.0", "keras-tuner": "1.4.8"}

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
# it completes on resume, and the display that prints each new trial's hyperparameters.
ORACLE_METHODS = ("_random_values", "_duplicate", "_save_trial", "_check_consecutive_failures",
                  "_project_dir")
ORACLE_ATTRIBUTES = ("_retry_queue", "_run_times", "_display")


def oracle_display(oracle):
    """The object that prints each new trial's table of hyperparameters (``Oracle._display``,
    checked on keras-tuner 1.4.8), or ``None`` where KerasTuner has none."""
    return getattr(oracle, "_display", None)


# Keras's image-layer hooks that kzoo.data.augment.RandomAffine overrides or calls (a subclass of
# keras.layers.RandomRotation), checked on Keras 3.15.1: every image layer's call goes through
# _transform_images, and _get_seed_generator picks the generator of the backend in use.
IMAGE_LAYER_HOOKS = ("_transform_images", "_get_seed_generator")


def pipeline_seed_generator(layer):
    """The ``keras.random.SeedGenerator`` a Keras image layer draws from inside ``tf.data``:
    its own ``generator`` on the TensorFlow backend; on another backend, the TensorFlow one
    it makes for ``tf.data`` on first use (``DataLayer._get_seed_generator("tensorflow")``,
    with the layer's ``DynamicBackend`` switched to TensorFlow as ``DataLayer.__call__`` does
    in a ``tf.data`` graph; checked on Keras 3.15.1), made here, outside any traced function."""
    import keras

    if keras.backend.backend() == "tensorflow":
        return layer.generator
    layer.backend.set_backend("tensorflow")
    try:
        return layer._get_seed_generator("tensorflow")
    finally:
        layer.backend.reset()
