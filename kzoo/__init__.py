"""kzoo: a Keras model zoo with tested classic models, recipes and transfer learning.

>>> from kzoo import build, list_models
>>> model = build("lenet5")

The public names are imported on first use, so ``import kzoo`` (and modules that need no
TensorFlow, such as :mod:`kzoo.data.images`) start in a fraction of a second.
"""

import importlib as _importlib

__version__ = "0.1.0"

_PUBLIC = {
    "KzooError": "kzoo.errors",
    "Recipe": "kzoo.recipes.recipe",
    "audit": "kzoo.data.audit",
    "augmentation": "kzoo.data.augment",
    "build": "kzoo.models.registry",
    "describe": "kzoo.models.catalog",
    "evaluate": "kzoo.analysis.inference",
    "explain": "kzoo.analysis.explain",
    "export": "kzoo.analysis.export",
    "find_label_issues": "kzoo.analysis.labels",
    "fine_tune": "kzoo.training.finetune",
    "grad_cam": "kzoo.analysis.explain",
    "list_models": "kzoo.models.registry",
    "list_recipes": "kzoo.recipes.zoo",
    "load_dataset": "kzoo.data.datasets",
    "load_model": "kzoo.models.registry",
    "load_recipe": "kzoo.recipes.zoo",
    "lr_find": "kzoo.training.lr_find",
    "predict": "kzoo.analysis.inference",
    "register_model": "kzoo.models.specs",
    "train": "kzoo.training.train",
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
    value = getattr(_importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(__all__)  # the API only: not the subpackages, which are internal
