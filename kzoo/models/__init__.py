"""The model families; importing this package registers every model."""

from kzoo.models import alexnet, cifar, lenet, linear, pretrained  # noqa: F401
