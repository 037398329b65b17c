"""Saving a model for inference: no optimizer, its class names and framing inside, written
atomically, so a bare ``model.keras`` predicts correctly."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kzoo.files import write_atomically

if TYPE_CHECKING:
    import keras


def save_model(model: keras.Model, path: Path, class_names: Sequence[str] | None = None,
               center_crop: float | None = None) -> None:
    """Save ``model`` for inference (no optimizer: small, and it loads with
    ``safe_mode=True``), carrying its class names and image framing where it is a classifier
    with one output per class; written atomically. Under a
    distribution, call it inside ``outside_distribution()``: one process saves alone."""
    import keras

    from kzoo.models.blocks import classifier_info, with_classifier_info

    plain = keras.Model(model.input, model.output, name=model.name)
    if (class_names is not None and classifier_info(plain) is None
            and plain.output_shape[-1] == len(class_names)):
        plain = with_classifier_info(plain, class_names, center_crop)
    write_atomically(path, lambda partial: _save_keras(plain, partial))


def _save_keras(model: keras.Model, partial: Path) -> None:
    model.save(partial.with_suffix(".keras"))  # Keras insists on the extension
    os.replace(partial.with_suffix(".keras"), partial)
