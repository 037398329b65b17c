"""Datasets: a tiny local mnist.npz, the bundled sample, the logic gates, image folders and a
tiny CIFAR-10 tree or zip, all written by the tests themselves."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from conftest import synthetic_digits, write_image_folder, write_mnist_npz

import kzoo
from kzoo.data.datasets import CIFAR10_CLASSES


def as_arrays(dataset):
    images, labels = zip(*[(np.asarray(x), np.asarray(y)) for x, y in dataset])
    return np.stack(images), np.stack(labels)


# --- mnist ---------------------------------------------------------------------------------------


def test_mnist_from_data_dir_splits_add_up(tmp_path):
    write_mnist_npz(tmp_path, train=300, test=100)
    splits = kzoo.load_dataset("mnist", data_dir=tmp_path, validation_split=0.2)
    assert splits.sizes == {"train": 240, "validation": 60, "test": 100}
    assert splits.sizes["train"] + splits.sizes["validation"] == 300
    assert splits.class_names == [str(d) for d in range(10)]
    images, labels = as_arrays(splits.train)
    assert images.shape == (240, 28, 28, 1)
    assert images.dtype == np.uint8 and images.max() > 1  # raw pixels, not rescaled
    assert labels.min() >= 0 and labels.max() <= 9
    assert splits.input_shape == (28, 28, 1)
    assert len(as_arrays(splits.test)[0]) == 100


def test_mnist_keeps_every_training_image_once(tmp_path):
    write_mnist_npz(tmp_path, train=200, test=50)
    original, _ = synthetic_digits(200, seed=0)  # what write_mnist_npz wrote as x_train
    splits = kzoo.load_dataset("mnist", data_dir=tmp_path, validation_split=0.25, seed=3)
    train, validation = as_arrays(splits.train)[0], as_arrays(splits.validation)[0]
    together = np.concatenate([train, validation])[..., 0]
    assert sorted(i.tobytes() for i in together) == sorted(i.tobytes() for i in original)


def test_mnist_from_the_environment_variable(tmp_path, monkeypatch):
    write_mnist_npz(tmp_path, train=120, test=30)
    monkeypatch.setenv("KZOO_DATA_DIR", str(tmp_path))
    splits = kzoo.load_dataset("mnist")
    assert splits.sizes["train"] + splits.sizes["validation"] == 120
    assert splits.sizes["test"] == 30


def test_validation_split_depends_on_the_seed_only(tmp_path):
    write_mnist_npz(tmp_path, train=200, test=20)

    def validation_images(seed):
        splits = kzoo.load_dataset("mnist", data_dir=tmp_path, seed=seed)
        return as_arrays(splits.validation)[0]

    first, again, other = validation_images(0), validation_images(0), validation_images(1)
    np.testing.assert_array_equal(first, again)
    assert first.shape == other.shape
    assert not np.array_equal(first, other)


def test_mnist_sample_is_bundled():
    splits = kzoo.load_dataset("mnist_sample")
    assert splits.sizes == {"train": 4500, "validation": 500, "test": 1000}
    image, label = next(iter(splits.test))
    assert tuple(image.shape) == (28, 28, 1)
    assert 0 <= int(label) <= 9


def test_missing_mnist_offline_says_where_to_put_it(tmp_path):
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.load_dataset("mnist", data_dir=tmp_path)
    message = str(error.value)
    assert "mnist.npz" in message and "--data-dir" in message
    assert str(tmp_path) in message  # where it looked
    assert "KZOO_OFFLINE" in message


def test_a_data_dir_that_does_not_exist_is_named(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.load_dataset("mnist", data_dir=missing)
    assert str(missing) in str(error.value)


def test_unknown_dataset_name_suggests_close_ones():
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.load_dataset("mnsit")
    assert "'mnist'" in str(error.value)


# --- logic gates --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, truth",
    [("or", [0, 1, 1, 1]), ("and", [0, 0, 0, 1]), ("xor", [0, 1, 1, 0])],
)
def test_logic_gate_truth_tables(name, truth):
    splits = kzoo.load_dataset(name)
    x, y = as_arrays(splits.test)
    table = {tuple(int(v) for v in row): int(label[0]) for row, label in zip(x, y)}
    assert table == {(0, 0): truth[0], (0, 1): truth[1], (1, 0): truth[2], (1, 1): truth[3]}
    train_x, train_y = as_arrays(splits.train)
    for row, label in zip(train_x, train_y):  # the training split only repeats the table
        assert table[tuple(int(v) for v in row)] == int(label[0])
    assert splits.class_names == ["false", "true"]


# --- image folders ------------------------------------------------------------------------------


def test_image_folder_with_train_and_val(tmp_path):
    write_image_folder(tmp_path / "pets" / "train", {"cat": 4, "dog": 3})
    write_image_folder(tmp_path / "pets" / "val", {"cat": 2, "dog": 1}, seed=1)
    splits = kzoo.load_dataset(str(tmp_path / "pets"), input_shape=(16, 16, 3))
    assert splits.class_names == ["cat", "dog"]
    assert splits.sizes["train"] == 7 and splits.sizes["validation"] == 3
    images, labels = as_arrays(splits.train)
    assert images.shape == (7, 16, 16, 3)  # resized to the model's input
    assert sorted(labels.tolist()) == [0, 0, 0, 0, 1, 1, 1]
    assert images.max() > 100  # raw 0-255 pixels, not rescaled
    assert sorted(as_arrays(splits.validation)[1].tolist()) == [0, 0, 1]


def test_flat_image_folder_carves_a_seeded_validation_split(tmp_path):
    write_image_folder(tmp_path / "flat", {"a": 10, "b": 10})

    def load(seed):
        return kzoo.load_dataset(str(tmp_path / "flat"), validation_split=0.2, seed=seed,
                                 input_shape=(8, 8, 3))

    splits = load(0)
    assert splits.sizes["train"] == 16 and splits.sizes["validation"] == 4
    np.testing.assert_array_equal(as_arrays(load(0).validation)[0],
                                  as_arrays(splits.validation)[0])
    assert not np.array_equal(as_arrays(load(5).validation)[0], as_arrays(splits.validation)[0])


def test_image_folder_name_resolves_inside_data_dir(tmp_path, monkeypatch):
    write_image_folder(tmp_path / "data" / "shapes", {"circle": 3, "square": 3})
    monkeypatch.chdir(tmp_path)  # "shapes" is no folder here; only inside the data dir
    splits = kzoo.load_dataset("shapes", data_dir=tmp_path / "data", input_shape=(8, 8, 3))
    assert splits.class_names == ["circle", "square"]
    assert splits.sizes["train"] + splits.sizes["validation"] == 6


def test_grayscale_model_input_reads_one_channel(tmp_path):
    write_image_folder(tmp_path / "gray", {"a": 3, "b": 3})
    splits = kzoo.load_dataset(str(tmp_path / "gray"), input_shape=(10, 10, 1))
    assert splits.input_shape == (10, 10, 1)


def test_empty_class_folder_is_a_clear_error(tmp_path):
    write_image_folder(tmp_path / "pets", {"cat": 3, "dog": 3})
    (tmp_path / "pets" / "fish").mkdir()
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.load_dataset(str(tmp_path / "pets"), input_shape=(8, 8, 3))
    assert "fish" in str(error.value)


def test_single_class_folder_is_a_clear_error(tmp_path):
    write_image_folder(tmp_path / "one", {"cat": 3})
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.load_dataset(str(tmp_path / "one"), input_shape=(8, 8, 3))
    message = str(error.value)
    assert "cat" in message and "at least 2" in message


# --- cifar10 ---------------------------------------------------------------------------------


def write_cifar_tree(root, train=2, test=1):
    write_image_folder(root / "train", dict.fromkeys(CIFAR10_CLASSES, train), size=(32, 32))
    write_image_folder(root / "test", dict.fromkeys(CIFAR10_CLASSES, test), size=(32, 32), seed=1)
    return root


def check_cifar(splits, train=2, test=1):
    assert splits.class_names == CIFAR10_CLASSES
    assert splits.sizes["train"] + splits.sizes["validation"] == 10 * train
    assert splits.sizes["test"] == 10 * test
    images, labels = as_arrays(splits.test)
    assert images.shape == (10 * test, 32, 32, 3)
    assert sorted(labels.tolist()) == sorted(list(range(10)) * test)
    # each class folder had its own colour; the label must follow the folder
    first_airplane = images[labels == CIFAR10_CLASSES.index("airplane")][0]
    first_auto = images[labels == CIFAR10_CLASSES.index("automobile")][0]
    assert first_airplane[..., 0].mean() > first_airplane[..., 1].mean()
    assert first_auto[..., 1].mean() > first_auto[..., 0].mean()


def test_cifar10_from_a_class_folder_tree(tmp_path):
    write_cifar_tree(tmp_path / "data" / "cifar10", train=3, test=1)
    splits = kzoo.load_dataset("cifar10", data_dir=tmp_path / "data", validation_split=0.1)
    check_cifar(splits, train=3, test=1)
    assert splits.sizes["validation"] == 10  # stratified: at least one image of every class


def test_cifar10_from_a_zip(tmp_path, monkeypatch):
    tree = write_cifar_tree(tmp_path / "tree")
    data = tmp_path / "data"
    data.mkdir()
    with zipfile.ZipFile(data / "cifar10_jpg.zip", "w") as archive:  # train/ and test/ at the top
        for path in sorted(tree.rglob("*.png")):
            archive.write(path, path.relative_to(tree).as_posix())
    cache = tmp_path / "cache"
    monkeypatch.setenv("KZOO_CACHE_DIR", str(cache))
    check_cifar(kzoo.load_dataset("cifar10", data_dir=data))
    assert (cache / "cifar10_jpg" / "train" / "airplane").is_dir()  # extracted once, kept
    (data / "cifar10_jpg.zip").write_bytes(b"")  # a second load reads the extracted copy
    check_cifar(kzoo.load_dataset("cifar10", data_dir=data))


def test_missing_cifar10_offline_names_what_to_provide(tmp_path):
    with pytest.raises(kzoo.KzooError) as error:
        kzoo.load_dataset("cifar10", data_dir=tmp_path)
    message = str(error.value)
    assert "cifar10_jpg.zip" in message and "--data-dir" in message
