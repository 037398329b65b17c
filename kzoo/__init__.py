"""kzoo: a Keras model zoo with tested classic models, recipes and transfer learning.

>>> from kzoo import build, list_models
>>> model = build("lenet5")
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter quiet

__version__ = "0.1.0"

from kzoo.augment import augmentation  # noqa: E402
from kzoo.catalog import describe  # noqa: E402
from kzoo.datasets import load_dataset  # noqa: E402
from kzoo.errors import KzooError  # noqa: E402
from kzoo.finetune import fine_tune  # noqa: E402
from kzoo.inference import evaluate, export, predict  # noqa: E402
from kzoo.recipes import Recipe, list_recipes, load_recipe  # noqa: E402
from kzoo.registry import build, list_models, load_model, register_model  # noqa: E402
from kzoo.training import train  # noqa: E402
from kzoo.tuning import tune  # noqa: E402

__all__ = [
    "KzooError",
    "Recipe",
    "augmentation",
    "build",
    "describe",
    "evaluate",
    "export",
    "fine_tune",
    "list_models",
    "list_recipes",
    "load_dataset",
    "load_model",
    "load_recipe",
    "predict",
    "register_model",
    "train",
    "tune",
    "__version__",
]
