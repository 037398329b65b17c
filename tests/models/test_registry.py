"""The registry and every registered model: parametrized over ``kzoo.list_models()``, so a newly
registered model is built, run, saved, reloaded and trained here without a new test."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kzoo
from kzoo.models.pretrained import CaffePreprocessing
from kzoo.models.registry import get_spec

MODELS = kzoo.list_models()


def slow_for(*names: str) -> list:
    """MODELS with ``names`` marked slow (their case takes over ~5 s on two cores)."""
    return [pytest.param(name, marks=pytest.mark.slow) if name in names else name
            for name in MODELS]

# Small settings for the big models, so the suite stays fast: pretrained backbones are built
# without weights (never downloaded), every image model on at most 64x64 input, and AlexNet with
# narrow layers too.
SMALL_SIDE = 64
LIGHT = {"alexnet": {"width": 0.25, "dense_units": 256}}


def light(name: str, **extra):
    """Options that keep ``name`` small and offline; pretrained models always get weights=None."""
    spec = get_spec(name)
    options = {}
    if "pretrained" in spec.tags:
        options["weights"] = None
    shape = spec.input_shape
    if shape is not None and len(shape) == 3 and min(shape[:2]) > SMALL_SIDE:
        options["input_shape"] = (SMALL_SIDE, SMALL_SIDE, shape[2])
    options.update(LIGHT.get(name, {}))
    options.update(extra)
    return options


_BUILT: dict[tuple, keras.Model] = {}


def built(name: str, **extra) -> keras.Model:
    """``kzoo.build(name, **light(name, **extra))``, built once and shared by the tests that only
    read the model (the training test builds its own)."""
    options = light(name, **extra)
    key = (name, tuple(sorted(options.items())))
    if key not in _BUILT:
        _BUILT[key] = kzoo.build(name, **options)
    return _BUILT[key]


@pytest.fixture(autouse=True, scope="module")
def forget_built_models():
    yield
    _BUILT.clear()


def sample_batch(model: keras.Model, count: int = 4, seed: int = 0) -> np.ndarray:
    """Raw inputs of the model's shape: 0-255 pixels for images, bits for the logic gate."""
    rng = np.random.default_rng(seed)
    shape = (count, *model.input_shape[1:])
    if len(shape) == 4:
        return rng.integers(0, 256, shape).astype("float32")
    return rng.integers(0, 2, shape).astype("float32")


@pytest.mark.parametrize("name", MODELS)
def test_build_gives_a_model_with_the_spec_defaults(name):
    spec = get_spec(name)
    model = built(name)
    assert isinstance(model, keras.Model)
    expected_input = light(name).get("input_shape", spec.input_shape)
    assert tuple(model.input_shape[1:]) == tuple(expected_input)
    assert model.count_params() > 0


@pytest.mark.parametrize("name", MODELS)
def test_forward_pass_has_one_output_per_class(name):
    spec = get_spec(name)
    model = built(name)
    outputs = np.asarray(model(sample_batch(model), training=False))
    classes = spec.num_classes if spec.num_classes is not None else 1  # logic_gate: one sigmoid
    assert outputs.shape == (4, classes)
    assert np.all(np.isfinite(outputs))
    if classes > 1:  # a softmax: each row is a distribution
        np.testing.assert_allclose(outputs.sum(axis=-1), 1.0, rtol=1e-4)
    else:
        assert np.all((outputs >= 0) & (outputs <= 1))


@pytest.mark.parametrize("name", [n for n in MODELS if "num_classes" in get_spec(n).options])
def test_num_classes_changes_the_output(name):
    model = built(name, num_classes=3)
    outputs = np.asarray(model(sample_batch(model, count=2), training=False))
    assert outputs.shape == (2, 3)


@pytest.mark.parametrize("name", slow_for("efficientnet_b0"))
def test_save_and_reload_gives_the_same_outputs(name, tmp_path):
    small_head = {"num_classes": 3} if "num_classes" in get_spec(name).options else {}
    model = built(name, **small_head)  # a small head: quicker to save
    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = kzoo.load_model(str(path))
    batch = sample_batch(model, count=3, seed=1)
    np.testing.assert_allclose(
        np.asarray(reloaded(batch, training=False)), np.asarray(model(batch, training=False)),
        rtol=1e-5, atol=1e-6,
    )
    assert [layer.name for layer in reloaded.layers] == [layer.name for layer in model.layers]


@pytest.mark.parametrize(
    "name", slow_for("resnet50", "efficientnet_b0", "mobilenet_v2", "mobilenet_v3_small"))
def test_a_few_steps_on_one_batch_lower_the_loss(name):
    spec = get_spec(name)
    options = light(name)
    if "dropout" in spec.options:
        options["dropout"] = 0.0  # the training-mode loss must not depend on dropout masks
    if "num_classes" in spec.options:
        options["num_classes"] = 3
    keras.utils.set_random_seed(0)
    model = kzoo.build(name, **options)
    if spec.num_classes is None:  # the gate: the OR truth table, one sigmoid output
        x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 2, dtype="float32")
        y = np.array([0, 1, 1, 1] * 2, dtype="float32")[:, None]
        loss = "binary_crossentropy"
    else:
        x = sample_batch(model, count=8)
        y = np.random.default_rng(0).integers(0, 3, 8)
        loss = "sparse_categorical_crossentropy"
    # Plain gradient descent with a small step lowers the loss on a fixed batch; eager mode
    # skips tracing, which is the slow part for the big backbones.
    model.compile(optimizer=keras.optimizers.SGD(0.003), loss=loss, run_eagerly=True)
    losses = [float(model.train_on_batch(x, y)) for _ in range(4)]  # each: loss before its step
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], losses


def first_computing_layer(model: keras.Model) -> keras.layers.Layer:
    """The first layer after the input, looking inside a nested backbone model."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            return first_computing_layer(layer)
        return layer
    raise AssertionError(f"{model.name} has no layers")


@pytest.mark.parametrize("name", [n for n in MODELS if len(get_spec(n).input_shape or ()) == 3])
def test_image_models_take_raw_pixels(name):
    """The first layer after the input (the model's own or its backbone's) maps raw 0-255
    pixels to the range the network expects."""
    model = built(name)
    first = first_computing_layer(model)
    pixels = np.linspace(0, 255, 3 * 4 * 4).reshape(1, 4, 4, 3).astype("float32")
    pixels = pixels[..., : model.input_shape[-1]]
    if isinstance(first, CaffePreprocessing):  # ResNet50: BGR minus the ImageNet means
        expected = pixels[..., ::-1] - np.array([103.939, 116.779, 123.68], dtype="float32")
        np.testing.assert_allclose(np.asarray(first(pixels)), expected, rtol=1e-5)
    elif isinstance(first, keras.layers.Normalization):  # airbench: adapted to the training images
        first.adapt(pixels)
        scaled = np.asarray(first(pixels))
        np.testing.assert_allclose(scaled.mean(), 0.0, atol=1e-5)
        assert scaled.std() > 0.5
    else:
        assert isinstance(first, keras.layers.Rescaling), type(first)
        scaled = np.asarray(first(pixels))
        assert scaled.min() >= -1.0 - 1e-6 and scaled.max() <= 1.0 + 1e-6
        assert scaled.max() - scaled.min() > 0.9  # a real rescale, not a squash to a constant


def test_alexnet_uses_the_2012_stem_on_large_inputs():
    small = kzoo.build("alexnet", input_shape=(64, 64, 3), width=0.25, dense_units=32)
    large = kzoo.build("alexnet", input_shape=(112, 112, 3), width=0.25, dense_units=32)
    assert small.get_layer("conv1").kernel_size == (3, 3)
    assert large.get_layer("conv1").kernel_size == (11, 11)
    assert large.get_layer("conv1").strides == (4, 4)
    assert np.asarray(large(sample_batch(large, count=1))).shape == (1, 1000)


def test_torch_digit_convnet_features_are_2x2x64():
    model = kzoo.build("torch_digit_convnet")
    assert tuple(model.get_layer("flatten").input.shape[1:]) == (2, 2, 64)
    assert model.get_layer("hidden").units == 200


# --- build's options ---------------------------------------------------------------------------


def test_build_drops_none_overrides():
    dropped = kzoo.build("lenet5", num_classes=None, input_shape=None, dropout=None)
    default = kzoo.build("lenet5")
    assert dropped.output_shape == default.output_shape == (None, 10)
    assert dropped.count_params() == default.count_params()


def test_pretrained_weights_none_means_random_init_not_the_default():
    # weights=None is a value (random init); it must not fall back to the 'imagenet' default,
    # which offline is an error.
    model = kzoo.build("mobilenet_v2", weights=None, alpha=0.35, input_shape=(32, 32, 3),
                       num_classes=2)
    assert model.output_shape == (None, 2)


def test_unknown_model_suggests_close_names():
    with pytest.raises(kzoo.KzooError, match="lenet5") as error:
        kzoo.build("lenet")
    assert "'lenet'" in str(error.value)


def test_unknown_option_lists_the_accepted_ones():
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.build("lenet5", dropuot=0.5)
    message = str(error.value)
    assert "'dropuot'" in message
    for option in get_spec("lenet5").options:
        assert option in message


@pytest.mark.parametrize(
    "name, options, shown",
    [
        ("lenet5", {"dropout": 1.5}, "dropout=1.5"),
        ("mlp", {"dropout": -0.1}, "dropout=-0.1"),
        ("lenet5", {"num_classes": 0}, "num_classes=0"),
        ("softmax_regression", {"num_classes": 2.5}, "num_classes=2.5"),
        ("lenet5", {"input_shape": (8, 8, 1)}, "(8, 8, 1)"),
        ("cifar_convnet", {"input_shape": (32, 32)}, "(32, 32)"),
        ("lenet5", {"activation": "gelu"}, "'gelu'"),
        ("alexnet", {"width": 0}, "width=0"),
        ("mobilenet_v2", {"alpha": 0.6, "weights": None}, "alpha=0.6"),
        ("logic_gate", {"hidden_units": -1}, "hidden_units=-1"),
    ],
)
def test_invalid_values_fail_naming_the_value(name, options, shown):
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.build(name, **options)
    assert shown in str(error.value)


def test_list_models_filters_by_pattern_and_tag():
    assert kzoo.list_models("lenet*") == ["lenet5"]
    assert kzoo.list_models("nothing-like-this*") == []
    pretrained = kzoo.list_models(tag="pretrained")
    assert {"resnet50", "mobilenet_v2"} <= set(pretrained)
    assert pretrained == [name for name in MODELS if "pretrained" in get_spec(name).tags]
    assert "lenet5" not in pretrained
    assert kzoo.list_models() == sorted(MODELS)
    assert set(pretrained) < set(kzoo.list_models())


def test_describe_lenet5():
    info = kzoo.describe("lenet5")
    spec = get_spec("lenet5")
    assert info["description"] == spec.description and info["description"]
    assert info["source"] == spec.source and "LeCun" in info["source"]
    assert tuple(info["input_shape"]) == (28, 28, 1)
    assert info["num_classes"] == 10
    assert info["parameters"] == kzoo.build("lenet5").count_params()
    recipes = {entry["recipe"] for entry in info["recipes"]}
    assert "lenet5_mnist" in recipes
    assert recipes <= set(kzoo.list_recipes())
    assert all(kzoo.load_recipe(r).model == "lenet5" for r in recipes)


def test_describe_pretrained_never_downloads():
    # Counting parameters builds the model; offline that must use weights=None.
    info = kzoo.describe("mobilenet_v2")
    assert info["parameters"] == kzoo.build("mobilenet_v2", weights=None).count_params()


def test_register_model_reads_defaults_from_the_signature():
    from kzoo.models import specs

    @kzoo.register_model(summary="a test model", description="d", source="s", tags=("test",))
    def zz_test_model(num_classes=4, input_shape=(6, 6, 1), width=3):
        inputs = keras.Input(input_shape)
        x = keras.layers.Flatten()(inputs)
        return keras.Model(inputs, keras.layers.Dense(num_classes)(x))

    try:
        spec = get_spec("zz_test_model")
        assert (spec.num_classes, spec.input_shape) == (4, (6, 6, 1))
        assert spec.options == {"num_classes": 4, "input_shape": (6, 6, 1), "width": 3}
        assert kzoo.list_models(tag="test") == ["zz_test_model"]
        assert kzoo.build("zz_test_model", num_classes=5).output_shape == (None, 5)
        with pytest.raises(kzoo.KzooError, match="registered twice"):
            kzoo.register_model(summary="", description="", source="")(zz_test_model)
    finally:
        specs.REGISTERED.pop("zz_test_model", None)


def test_every_public_name_resolves_and_importing_kzoo_needs_no_tensorflow():
    import subprocess
    import sys

    import kzoo

    assert sorted(kzoo.__all__) == sorted(["__version__", *kzoo._PUBLIC])
    for name in kzoo.__all__:
        assert getattr(kzoo, name) is not None
    code = "import sys, kzoo, kzoo.data.scan, kzoo.data.images; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.slow
def test_the_model_index_matches_the_builders():
    """kzoo/models/index.json (what `kzoo list` and `kzoo info` read without Keras) is what the
    builders say; after changing a model, `python -m kzoo.models.catalog` rewrites it."""
    import json

    from kzoo.models.catalog import model_index
    from kzoo.models.registry import INDEX

    assert json.loads(INDEX.read_text()) == model_index(), "run `python -m kzoo.models.catalog`"
