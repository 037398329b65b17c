"""resnet50 and mobilenet_v2 with weights: a local file the test writes itself, a missing file,
``'imagenet'`` offline, and a file posing as a published one with the wrong content."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kzoo
from kzoo.models.parts import classifier_parts
from kzoo.models.weights import KNOWN_SHA256, resolve_weights_file, search_weights_in

SHAPE = (64, 64, 3)


@pytest.fixture(autouse=True)
def no_local_weight_caches(monkeypatch, tmp_path):
    """'imagenet' must not find a real cached file (~/.keras/models) during these tests."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.delenv("KZOO_WEIGHTS_DIR", raising=False)


def write_backbone_weights(application, path, **kwargs):
    """Save a backbone's weights, moved away from any init to known values, and return them."""
    keras.utils.set_random_seed(1)
    backbone = application(include_top=False, weights=None, input_shape=SHAPE, **kwargs)
    rng = np.random.default_rng(1)
    values = []
    for variable in backbone.weights:
        value = np.asarray(variable) + rng.normal(0, 0.02, variable.shape).astype("float32")
        if "moving_variance" in variable.path:
            value = np.abs(value) + 0.5  # a variance stays positive
        values.append(value)
    backbone.set_weights(values)
    backbone.save_weights(path)
    return values


@pytest.mark.parametrize(
    "name, application, kwargs",
    [
        ("mobilenet_v2", keras.applications.MobileNetV2, {"alpha": 0.35}),
        ("resnet50", keras.applications.ResNet50, {}),
    ],
)
def test_local_weights_file_loads_into_the_backbone(name, application, kwargs, tmp_path):
    path = tmp_path / "w.weights.h5"
    saved = write_backbone_weights(application, path, **kwargs)
    keras.utils.set_random_seed(2)  # a different init, so equality means the file was read
    model = kzoo.build(name, weights=str(path), input_shape=SHAPE, num_classes=2, **kwargs)
    loaded = model.get_layer("backbone").get_weights()
    assert len(loaded) == len(saved)
    for got, want in zip(loaded, saved):
        np.testing.assert_array_equal(got, want)
    assert model.output_shape == (None, 2)


@pytest.mark.slow
def test_pretrained_backbone_stays_in_inference_mode_while_training(tmp_path):
    """The BatchNorm trap: training the model must neither normalise with batch statistics nor
    move the backbone's pretrained moving mean and variance."""
    path = tmp_path / "w.weights.h5"
    write_backbone_weights(keras.applications.MobileNetV2, path, alpha=0.35)
    model = kzoo.build("mobilenet_v2", weights=str(path), alpha=0.35, input_shape=SHAPE,
                       num_classes=2)
    batch = np.random.default_rng(0).integers(0, 256, (4, *SHAPE)).astype("float32")
    np.testing.assert_allclose(np.asarray(model(batch, training=True)),
                               np.asarray(model(batch, training=False)), rtol=1e-5, atol=1e-6)
    statistics = [v for v in model.get_layer("backbone").weights if "moving_" in v.path]
    assert statistics
    before = [np.asarray(v).copy() for v in statistics]
    head_before = np.asarray(model.get_layer("predictions").kernel).copy()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    model.train_on_batch(batch, np.array([0, 1, 0, 1]))
    for variable, value in zip(statistics, before):
        np.testing.assert_array_equal(np.asarray(variable), value)
    assert not np.array_equal(np.asarray(model.get_layer("predictions").kernel), head_before)


def test_missing_weights_file_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "w.weights.h5"
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.build("mobilenet_v2", weights=str(missing), alpha=0.35, input_shape=SHAPE)
    assert str(missing) in str(error.value)


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2"])
def test_imagenet_offline_says_how_to_pass_a_local_file(name):
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.build(name, weights="imagenet", input_shape=SHAPE, num_classes=2)
    message = str(error.value)
    assert "KZOO_OFFLINE" in message
    assert "weights=PATH" in message and "--weights" in message


def test_file_posing_as_a_published_one_fails_its_sha256(tmp_path):
    name = next(iter(KNOWN_SHA256))
    fake = tmp_path / name
    fake.write_bytes(b"not the published weights")
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.build("mobilenet_v2", weights=str(fake), alpha=0.35, input_shape=SHAPE)
    message = str(error.value)
    assert "sha256" in message and KNOWN_SHA256[name] in message
    assert str(fake) in message


def test_weights_of_another_backbone_fail_clearly(tmp_path):
    path = tmp_path / "mobilenet.weights.h5"
    write_backbone_weights(keras.applications.MobileNetV2, path, alpha=0.35)
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.build("mobilenet_v2", weights=str(path), alpha=1.0, input_shape=SHAPE)
    assert str(path) in str(error.value)


def test_a_bare_weights_file_name_is_found_in_the_data_dir(tmp_path):
    """A recipe names a weights file (``mobilenet_v2_100_ants_bees``); --data-dir's weights/
    holds it."""
    saved = kzoo.build("mobilenet_v2", weights=None, alpha=0.35, input_shape=SHAPE, num_classes=2)
    (tmp_path / "weights").mkdir()
    backbone = classifier_parts(saved).backbone
    backbone.save_weights(tmp_path / "weights" / "my_backbone.weights.h5")
    with search_weights_in(tmp_path):
        assert resolve_weights_file("my_backbone.weights.h5") == tmp_path / "weights" / "my_backbone.weights.h5"
        loaded = kzoo.build("mobilenet_v2", weights="my_backbone.weights.h5", alpha=0.35,
                            input_shape=SHAPE, num_classes=2)
    np.testing.assert_array_equal(classifier_parts(loaded).backbone.weights[0].numpy(),
                                  backbone.weights[0].numpy())
    with pytest.raises(kzoo.KzooError, match="'elsewhere.weights.h5' does not exist"):
        resolve_weights_file("elsewhere.weights.h5")
