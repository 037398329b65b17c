"""airbench and its pieces: the identity initialiser, the patch-whitening layer, the Lookahead
EMA, layer freezing, the alternating flip, the triangle schedule, the smoothed loss, and a
tiny airbench recipe trained, saved and reloaded."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml
from conftest import write_image_folder

import kzoo
from kzoo.data.augment import AlternatingFlip, augmentation
from kzoo.data.pipeline import Examples, epoch_batches
from kzoo.models.layers import Dirac, PatchWhitening, _patches
from kzoo.recipes.zoo import load_recipe
from kzoo.training.callbacks import FreezeAfter, Lookahead
from kzoo.training.losses import SmoothedSparseCrossentropy
from kzoo.training.optimizers import Triangle


def test_dirac_kernel_passes_channels_through():
    conv = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, kernel_initializer=Dirac(seed=1))
    images = np.random.default_rng(0).random((2, 5, 5, 4)).astype("float32")
    out = keras.ops.convert_to_numpy(conv(images))
    np.testing.assert_allclose(out[..., :4], images, atol=1e-6)  # the first 4 filters: identity
    assert np.abs(out[..., 4:]).sum() > 0  # the other 2: drawn


def test_patch_whitening_whitens_the_patches_it_was_fitted_to():
    rng = np.random.default_rng(0)
    base = rng.random((200, 9, 9, 1)).astype("float32")
    images = np.concatenate([base, 0.5 * base + 0.1 * rng.random(base.shape)], -1)  # correlated
    layer = PatchWhitening(patch_size=2, epsilon=1e-9)  # no floor under small eigenvalues
    layer.build(images.shape)
    assert layer.kernel.shape == (2, 2, 2, 16) and not layer.kernel.trainable
    assert [w.name for w in layer.trainable_weights] == ["bias"]
    layer.adapt(images)
    out = keras.ops.convert_to_numpy(layer(images)).reshape(-1, 16)[:, :8]  # one sign of each
    covariance = np.cov(out, rowvar=False)
    np.testing.assert_allclose(covariance, np.eye(8), atol=0.05)
    assert _patches(images, 2).shape == (200 * 8 * 8, 8)


def _tiny_model():
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Dense(4)(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    return model


def test_lookahead_pulls_the_weights_to_their_average():
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((64, 3)).astype("float32")
    y = (x[:, 0] > 0.5).astype("int32")
    model = _tiny_model()
    start = [w.numpy().copy() for w in model.trainable_weights]
    lookahead = Lookahead(total_steps=8, every=4, decay=0.9)
    plain = _tiny_model()
    plain.set_weights(model.get_weights())
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[lookahead])
    plain.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    assert lookahead.updates_done == 2
    moved = [np.abs(a.numpy() - s).sum() for a, s in zip(model.trainable_weights, start)]
    assert all(m > 0 for m in moved)
    # an average of past weights lags behind plain SGD's last weights
    assert any(not np.allclose(a.numpy(), b.numpy()) for a, b in
               zip(model.trainable_weights, plain.trainable_weights))
    np.testing.assert_allclose(model.get_weights()[0], lookahead.average[0])


def test_freeze_after_stops_a_layer_training():
    x = np.random.default_rng(0).random((32, 3)).astype("float32")
    y = (x[:, 0] > 0.5).astype("int32")
    model = _tiny_model()
    first = model.layers[1]
    snapshots = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: snapshots.append(first.kernel.numpy().copy()))
    model.fit(x, y, batch_size=8, epochs=4, verbose=0,
              callbacks=[FreezeAfter({first.name: 2}), record])
    assert not np.allclose(snapshots[0], snapshots[1])  # epochs 0 and 1 train it
    np.testing.assert_array_equal(snapshots[1], snapshots[3])  # from epoch 2 on, frozen
    assert not first.trainable


def test_alternating_flip_flips_each_image_in_every_other_epoch():
    images = tf.reshape(tf.range(10 * 2 * 3, dtype=tf.float32), (10, 2, 3, 1))
    ids = tf.range(10)
    flip = AlternatingFlip(seed=3)
    flipped = []
    for epoch in range(3):
        out = flip(images, example_ids=ids, epoch=epoch).numpy()
        flipped.append([not np.array_equal(o, i) for o, i in zip(out, images.numpy())])
    flipped = np.array(flipped)
    assert 0 < flipped[0].sum() < 10  # a seeded share in epoch 0
    np.testing.assert_array_equal(flipped[1], ~flipped[0])  # the others next epoch
    np.testing.assert_array_equal(flipped[2], flipped[0])
    np.testing.assert_array_equal(
        AlternatingFlip(seed=3)(images, example_ids=ids, epoch=0).numpy(),
        flip(images, example_ids=ids, epoch=0).numpy())  # a function of the seed alone


def test_airbench_augmentation_follows_each_image_through_epoch_batches():
    images = np.random.default_rng(0).integers(0, 255, (40, 8, 8, 3)).astype("uint8")
    examples = Examples.from_arrays(images, np.arange(40))
    stack = augmentation("airbench", seed=0)
    assert isinstance(stack, list)
    batches = list(epoch_batches(examples, 16, seed=0, augment=stack, epochs=2))
    assert len(batches) == 6
    seen = [sorted(np.concatenate([b[1].numpy() for b in batches[:3]]).tolist()),
            sorted(np.concatenate([b[1].numpy() for b in batches[3:]]).tolist())]
    assert seen == [list(range(40))] * 2  # every image once an epoch


def test_triangle_schedule_rises_peaks_and_falls():
    schedule = Triangle(2.0, total_steps=100, start=0.2, peak=0.25, end=0.1)
    rates = [float(schedule(step)) for step in (0, 25, 100, 200)]
    assert rates == pytest.approx([0.4, 2.0, 0.2, 0.2])
    assert float(schedule(10)) == pytest.approx(0.4 + (2.0 - 0.4) * 10 / 25)


def test_smoothed_loss_matches_its_definition():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], "float32")
    labels = np.array([0, 1])
    targets = np.full((2, 3), 0.3 / 3) + 0.7 * np.eye(3)[labels]
    expected = -(targets * np.log(probabilities)).sum(1).mean()
    loss = SmoothedSparseCrossentropy(0.3)(labels, probabilities)
    assert float(loss) == pytest.approx(expected, rel=1e-5)


# --- a tiny airbench recipe, end to end ------------------------------------------------------------


@pytest.mark.slow
def test_tiny_airbench_recipe_trains_saves_and_reloads(tmp_path):
    folder = write_image_folder(tmp_path / "shapes" / "train", {"red": 24, "green": 24},
                                size=(16, 16))
    write_image_folder(tmp_path / "shapes" / "test", {"red": 6, "green": 6}, size=(16, 16), seed=1)
    recipe = load_recipe("airbench_cifar10").to_dict()
    recipe.update(dataset=str(folder.parent), batch_size=16, epochs=3, validation_split=0.25,
                  model_options={"input_shape": [16, 16, 3], "num_classes": 2,
                                "widths": [8, 16, 16], "activation": "relu"},
                  freeze_after={"whiten": 1}, precision="float32")
    path = tmp_path / "tiny_airbench.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = kzoo.train(path, run_dir=tmp_path / "run", verbose=0)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["tta"] == "flip+shift" and "test_accuracy_without_tta" in metrics
    assert metrics["training_flops"] > 0
    whiten = result.model.get_layer("whiten")
    assert not whiten.trainable and np.abs(whiten.kernel.numpy()).sum() > 0  # adapted, frozen
    assert float(np.var(result.model.get_layer("normalize").variance)) > 0
    reloaded = kzoo.load_model(str(tmp_path / "run" / "model.keras"))
    images = np.random.default_rng(0).integers(0, 255, (4, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(reloaded.predict(images, verbose=0),
                               result.model.predict(images, verbose=0), rtol=1e-4, atol=1e-5)


def test_tune_refuses_the_alternating_flip_before_searching(tmp_path):
    with pytest.raises(kzoo.KzooError, match="'airbench' augmentation.*kzoo tune cannot apply"):
        kzoo.tune("airbench_cifar10", run_dir=tmp_path, max_trials=1)


def test_whitening_computes_in_float32_under_bf16():
    """In bfloat16 the whitened high-frequency channels would be 10-30% rounding noise."""
    from kzoo.training.precision import precision_policy

    with precision_policy("mixed_bfloat16"):
        model = kzoo.build("airbench")
    assert model.get_layer("block1_conv1").compute_dtype == "bfloat16"
    for name in ("normalize", "whiten"):
        assert model.get_layer(name).compute_dtype == "float32"
