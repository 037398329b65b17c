"""Pretrained ``keras.applications`` backbones with a new classification head.

The backbone sits inside the model as one layer named ``backbone``, after the preprocessing it
was trained with, so the model takes raw 0-255 RGB pixels. With pretrained weights the backbone
runs in inference mode (``training=False``, and its BatchNormalization layers frozen), which
keeps its BatchNorm statistics intact when it is later unfrozen for fine-tuning.
"""

from __future__ import annotations

import keras
from keras import layers

from kzoo.models.blocks import (
    BACKBONE,
    POOLING,
    check_choice,
    check_image_shape,
    check_num_classes,
    check_rate,
    classifier_head,
)
from kzoo.models.specs import register_model
from kzoo.models.weights import load_application


@keras.saving.register_keras_serializable(package="kzoo")
class CaffePreprocessing(layers.Layer):
    """RGB 0-255 to BGR minus the ImageNet channel means (the ``caffe`` mode of ResNet50)."""

    def call(self, inputs):
        bgr = keras.ops.flip(inputs, axis=-1)
        return bgr - keras.ops.convert_to_tensor([103.939, 116.779, 123.68], dtype=inputs.dtype)


def _classifier(name, application, input_shape, weights, num_classes, dropout, preprocess=None,
                **application_options):
    """``application`` (a ``keras.applications`` constructor) as a backbone with a new head.

    ``preprocess`` is the layer mapping 0-255 pixels to the backbone's input, or ``None`` where
    the application rescales its input itself (EfficientNet, MobileNetV3).
    """
    shape = check_image_shape(name, input_shape, min_side=32, channels=(3,))
    backbone = load_application(
        application, weights, include_top=False, input_shape=shape, **application_options
    )
    backbone.name = BACKBONE  # the declared part (kzoo.models.parts), whatever its own name
    inputs = keras.Input(shape=shape, name="pixels")
    pixels = preprocess(inputs) if preprocess is not None else inputs
    features = backbone(pixels, training=False if weights is not None else None)
    if weights is not None:
        # Keras 3 lets the outer model's training=True override the training=False above
        # (keras-team/keras#20285); a BatchNormalization layer that is not trainable always runs
        # in inference mode, so the pretrained statistics stay intact while the model trains.
        for layer in backbone.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.trainable = False
    x = layers.GlobalAveragePooling2D(name=POOLING)(features)
    outputs = classifier_head(x, check_num_classes(num_classes), check_rate("dropout", dropout))
    return keras.Model(inputs, outputs, name=name)


@register_model(
    summary="ResNet50 backbone + new head, ImageNet weights",
    description="ResNet50 backbone (keras.applications) with global pooling and a new softmax head.",
    source="He, Zhang, Ren, Sun 2015, Deep residual learning for image recognition",
    tags=("pretrained", "imagenet-arch"),
)
def resnet50(num_classes=1000, input_shape=(224, 224, 3), weights="imagenet", dropout=0.0):
    return _classifier("resnet50", keras.applications.ResNet50, input_shape, weights, num_classes,
                       dropout, preprocess=CaffePreprocessing(name="caffe_preprocessing"))


@register_model(
    summary="MobileNetV2 backbone + new head, ImageNet weights",
    description=(
        "MobileNetV2 backbone (keras.applications, width multiplier alpha) with global pooling "
        "and a new softmax head: the small pretrained backbone."
    ),
    source="Sandler, Howard, Zhu, Zhmoginov, Chen 2018, MobileNetV2: inverted residuals and linear bottlenecks",
    tags=("pretrained", "imagenet-arch"),
)
def mobilenet_v2(
    num_classes=1000, input_shape=(224, 224, 3), weights="imagenet", alpha=1.0, dropout=0.0
):
    check_choice("alpha", alpha, (0.35, 0.5, 0.75, 1.0, 1.3, 1.4))
    return _classifier("mobilenet_v2", keras.applications.MobileNetV2, input_shape, weights,
                       num_classes, dropout, alpha=alpha,
                       preprocess=layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale"))


@register_model(
    summary="EfficientNet-B0 backbone + new head, ImageNet weights",
    description=(
        "EfficientNet-B0 backbone (keras.applications; it rescales and normalises its input "
        "itself) with global pooling and a new softmax head."
    ),
    source="Tan, Le 2019, EfficientNet: rethinking model scaling for convolutional neural networks",
    tags=("pretrained", "imagenet-arch"),
)
def efficientnet_b0(num_classes=1000, input_shape=(224, 224, 3), weights="imagenet", dropout=0.0):
    return _classifier("efficientnet_b0", keras.applications.EfficientNetB0, input_shape, weights,
                       num_classes, dropout)


@register_model(
    summary="MobileNetV3-Small backbone + new head, ImageNet weights",
    description=(
        "MobileNetV3-Small backbone (keras.applications, width multiplier alpha; it rescales its "
        "input itself) with global pooling and a new softmax head: the fastest on a CPU."
    ),
    source="Howard et al. 2019, Searching for MobileNetV3",
    tags=("pretrained", "imagenet-arch"),
)
def mobilenet_v3_small(
    num_classes=1000, input_shape=(224, 224, 3), weights="imagenet", alpha=1.0, dropout=0.0
):
    check_choice("alpha", alpha, (0.75, 1.0))
    return _classifier("mobilenet_v3_small", keras.applications.MobileNetV3Small, input_shape,
                       weights, num_classes, dropout, alpha=alpha)
