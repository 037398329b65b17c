"""Every model family: importing this module registers every model. A new family module is
added to this list."""

from kzoo.models import airbench, alexnet, cifar, lenet, linear, pretrained  # noqa: F401
