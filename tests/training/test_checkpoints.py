"""The checkpoints a run resumes from: weights, optimizer and dropout's random state come back,
and a damaged or half-written newest checkpoint gives way to the one before, with a message."""

from __future__ import annotations

import keras
import numpy as np

from kzoo.training.checkpoints import EpochCheckpoints, random_states


def small_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dropout(0.5),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def train_a_little(model, seed=1):
    rng = np.random.default_rng(seed)
    model.fit(rng.random((32, 4), dtype="float32"), rng.integers(0, 2, 32), epochs=1, verbose=0)


def test_weights_optimizer_and_random_states_come_back(tmp_path):
    model = small_model()
    train_a_little(model)
    checkpoints = EpochCheckpoints(tmp_path / "backup")
    checkpoints.save(model, 1)
    saved_weights = [np.array(w) for w in model.weights]
    saved_states = [np.array(v) for v in random_states(model)]
    saved_step = int(model.optimizer.iterations)
    assert saved_states and saved_step > 0

    fresh = small_model(seed=5)
    assert EpochCheckpoints(tmp_path / "backup").restore(fresh) == 1
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(saved_weights, fresh.weights))
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(saved_states, random_states(fresh)))
    assert int(fresh.optimizer.iterations) == saved_step
    train_a_little(model, seed=2)
    train_a_little(fresh, seed=2)  # the same next step: dropout masks and Adam moments alike
    assert all(np.allclose(np.array(a), np.array(b)) for a, b in zip(model.weights, fresh.weights))


def test_a_damaged_newest_checkpoint_gives_way_to_the_one_before(tmp_path, capsys):
    model = small_model()
    checkpoints = EpochCheckpoints(tmp_path / "backup")
    for epoch in (1, 2, 3):
        train_a_little(model, seed=epoch)
        if epoch == 2:
            kept = [np.array(w) for w in model.weights]
        checkpoints.save(model, epoch)
    assert checkpoints.saved() == [3, 2]  # the two newest are kept
    with open(tmp_path / "backup" / "epoch-0003.weights.h5", "r+b") as handle:
        handle.truncate(200)  # as a disk that failed mid-write would leave it
    (tmp_path / "backup" / ".partial-epoch-0004.weights.h5").write_bytes(b"half")
    fresh = small_model(seed=7)
    assert checkpoints.restore(fresh) == 2
    printed = capsys.readouterr().out
    assert "a checkpoint was being written when the run stopped" in printed
    assert "the checkpoint after epoch 3 cannot be read" in printed
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(kept, fresh.weights))


def test_no_checkpoint_means_epoch_zero(tmp_path):
    assert EpochCheckpoints(tmp_path / "none").restore(small_model()) == 0


class Average:
    """A callback's own state, as Lookahead keeps its average of the weights."""

    def __init__(self, values=None):
        self.values, self.restored = values, None

    def get_state(self):
        return self.values

    def set_state(self, model, values):
        if len(values) != len(model.weights):
            raise ValueError("the average does not fit the model")
        self.restored = [np.array(value) for value in values]


def test_a_callbacks_state_is_saved_and_restored_with_the_weights(tmp_path):
    model = small_model()
    average = [np.full(np.shape(w), 0.5 + index, "float32") for index, w in
               enumerate(model.weights)]
    EpochCheckpoints(tmp_path / "backup", states={"lookahead": Average(average)}).save(model, 1)
    assert (tmp_path / "backup" / "epoch-0001.states.npz").is_file()
    assert not list((tmp_path / "backup").glob(".partial-*"))
    back = Average()
    assert EpochCheckpoints(tmp_path / "backup", states={"lookahead": back}).restore(
        small_model(seed=3)) == 1
    assert all(np.array_equal(a, b) for a, b in zip(average, back.restored, strict=True))


def test_a_checkpoint_without_the_state_a_run_needs_is_passed_over(tmp_path, capsys):
    model = small_model()
    EpochCheckpoints(tmp_path / "backup").save(model, 1)  # saved without the average
    back = Average()
    assert EpochCheckpoints(tmp_path / "backup", states={"lookahead": back}).restore(model) == 0
    assert "holds no state of lookahead" in capsys.readouterr().out and back.restored is None
