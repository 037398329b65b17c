"""kzoo: a Keras model zoo with tested classic models, recipes and transfer learning.

>>> from kzoo import build, list_models
>>> model = build("lenet5")
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter quiet

__version__ = "0.1.0"

from kzoo.augment import augmentation
from kzoo.catalog import describe
from kzoo.datasets import load_dataset
from kzoo.errors import KzooError
from kzoo.finetune import fine_tune
from kzoo.inference import evaluate, export, predict
from kzoo.recipes import Recipe, list_recipes, load_recipe
from kzoo.registry import build, list_models, load_model, register_model
from kzoo.training import train
from kzoo.tuning import tune

__all__ = [
    "KzooError",
    "Recipe",
    "__version__",
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
]
