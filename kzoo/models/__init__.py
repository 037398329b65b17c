"""The model families; importing this package registers every model."""

from kzoo.models import airbench, alexnet, cifar, lenet, linear, pretrained  # noqa: F401
