"""kzoo: a Keras model zoo with tested classic models, recipes and transfer learning.

>>> from kzoo import build, list_models
>>> model = build("lenet5")

The public names are imported on first use, so ``import kzoo`` (and modules that need no
TensorFlow, such as :mod:`kzoo.images`) start in a fraction of a second.
"""

import importlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter quiet

__version__ = "0.1.0"

_PUBLIC = {
    "KzooError": "kzoo.errors",
    "Recipe": "kzoo.recipes",
    "audit": "kzoo.folders",
    "augmentation": "kzoo.augment",
    "build": "kzoo.registry",
    "describe": "kzoo.catalog",
    "evaluate": "kzoo.inference",
    "explain": "kzoo.explain",
    "export": "kzoo.inference",
    "find_label_issues": "kzoo.labels",
    "fine_tune": "kzoo.finetune",
    "grad_cam": "kzoo.explain",
    "list_models": "kzoo.registry",
    "list_recipes": "kzoo.recipes",
    "load_dataset": "kzoo.datasets",
    "load_model": "kzoo.registry",
    "load_recipe": "kzoo.recipes",
    "lr_find": "kzoo.training",
    "predict": "kzoo.inference",
    "register_model": "kzoo.specs",
    "train": "kzoo.training",
    "tune": "kzoo.tuning",
}
__all__ = [  # each name is imported on first use, by __getattr__ below
    "KzooError", "Recipe", "__version__", "audit", "augmentation", "build", "describe",
    "evaluate", "explain", "export", "find_label_issues", "fine_tune", "grad_cam",
    "list_models", "list_recipes", "load_dataset", "load_model", "load_recipe", "lr_find",
    "predict", "register_model", "train", "tune",
]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'kzoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted([*globals(), *_PUBLIC])
