"""Pieces every model file shares: option checks, the pixel input, the classifier head."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from kzoo.errors import KzooError

# The parts a fine-tunable classifier declares by these names (read by kzoo.models.parts only).
BACKBONE = "backbone"  # the nested model of a pretrained backbone
POOLING = "pool"  # the layer that pools the features for the head


def check_num_classes(num_classes: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise KzooError(f"num_classes={num_classes!r} is invalid; expected an integer >= 2")
    return num_classes


def check_rate(name: str, value: float) -> float:
    """A dropout-style rate in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise KzooError(f"{name}={value!r} is invalid; expected a number in [0, 1)")
    return float(value)


def check_non_negative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise KzooError(f"{name}={value!r} is invalid; expected a number >= 0")
    return float(value)


def check_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise KzooError(f"{name}={value!r} is invalid; expected an integer >= {minimum}")
    return value


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise KzooError(f"{name}={value!r} is invalid; expected one of {', '.join(map(str, choices))}")
    return value


def check_image_shape(
    model: str, input_shape: Sequence[int], min_side: int, channels: Sequence[int] = (1, 3)
) -> tuple[int, int, int]:
    """An (height, width, channels) shape large enough for ``model``."""
    shape = tuple(input_shape)
    valid = (
        len(shape) == 3
        and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        and shape[2] in channels
    )
    if not valid:
        raise KzooError(
            f"input_shape={shape!r} is invalid for {model}; expected (height, width, channels) "
            f"with channels in {tuple(channels)}"
        )
    if min(shape[:2]) < min_side:
        raise KzooError(
            f"input_shape={shape!r} is too small for {model}; height and width must be "
            f">= {min_side} (resize the images or pick a smaller model)"
        )
    return shape  # type: ignore[return-value]


def pixel_input(input_shape: Sequence[int], scale: float = 1 / 255.0, offset: float = 0.0):
    """The model's input, taking raw 0-255 pixels, and the rescaled tensor after it."""
    inputs = keras.Input(shape=tuple(input_shape), name="pixels")
    return inputs, layers.Rescaling(scale, offset, name="rescale")(inputs)


def classifier_head(x, num_classes: int, dropout: float = 0.0, name: str = "predictions"):
    """Optional dropout, then a softmax layer of ``num_classes`` units, computed in float32
    whatever the precision of the layers below (Keras's mixed-precision advice)."""
    if dropout:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    return layers.Dense(num_classes, activation="softmax", name=name, dtype="float32")(x)


def pad_to(x, side: int):
    """Zero-pad a feature map symmetrically up to ``side`` x ``side`` (the 28 -> 32 digit pad)."""
    height, width = x.shape[1], x.shape[2]
    pad_h, pad_w = max(side - height, 0), max(side - width, 0)
    if not (pad_h or pad_w):
        return x
    padding = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
    return layers.ZeroPadding2D(padding, name=f"pad_to_{side}")(x)


@keras.saving.register_keras_serializable(package="kzoo")
class ClassifierInfo(layers.Identity):
    """An identity layer closing a classifier, whose config carries what using the saved model
    needs: the class names, and how an image is framed before it is resized to the input
    (``center_crop``: the central fraction kept, without distortion; ``None``: the whole image,
    squashed). See :func:`classifier_info`.
    """

    def __init__(self, class_names: Sequence[str], center_crop: float | None = None, **kwargs):
        super().__init__(**kwargs)
        self.class_names = [str(name) for name in class_names]
        self.center_crop = None if center_crop is None else float(center_crop)

    def get_config(self):
        return {**super().get_config(), "class_names": self.class_names,
                "center_crop": self.center_crop}


def with_classifier_info(
    model: keras.Model, class_names: Sequence[str], center_crop: float | None = None
) -> keras.Model:
    """``model`` (a classifier over ``len(class_names)`` classes) ending in a
    :class:`ClassifierInfo` layer; the layers, and their weights, are shared.
    """
    names = [str(name) for name in class_names]
    if model.output_shape[-1] != len(names):
        raise KzooError(
            f"model {model.name!r} has {model.output_shape[-1]} outputs but {len(names)} class "
            f"names were given ({', '.join(names)}); expected one name per output"
        )
    info = ClassifierInfo(names, center_crop, name="classifier_info", dtype="float32")
    return keras.Model(model.input, info(model.output), name=model.name)


def classifier_info(model: keras.Model) -> dict | None:
    """``{"class_names": [...], "center_crop": ...}`` of a model closed by a
    :class:`ClassifierInfo` layer; ``None`` for any other model.
    """
    found = [layer for layer in model.layers if isinstance(layer, ClassifierInfo)]
    if not found:
        return None
    return {"class_names": list(found[-1].class_names), "center_crop": found[-1].center_crop}


def class_names_of(model: keras.Model) -> list[str] | None:
    """The class names a model carries in its :class:`ClassifierInfo` layer, if it has one."""
    info = classifier_info(model)
    return info["class_names"] if info else None
