"""Shared fixtures: tiny data written on the fly, an offline environment, and a CLI runner.

No test reads ../shared or the network: every dataset is a few hundred synthetic images written
into a temporary folder, and ``KZOO_OFFLINE=1`` is set for the whole session (and inherited by
every ``python -m kzoo`` subprocess) so nothing tries to download.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def offline_environment(tmp_path_factory):
    """No downloads, no data dir from the caller's shell, and a private unzip cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KZOO_OFFLINE", "1")
        patch.setenv("KZOO_CACHE_DIR", str(tmp_path_factory.mktemp("kzoo-cache")))
        patch.delenv("KZOO_DATA_DIR", raising=False)
        yield


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Per test as well, so a test that changes the environment cannot leak it."""
    monkeypatch.setenv("KZOO_OFFLINE", "1")
    monkeypatch.delenv("KZOO_DATA_DIR", raising=False)


# --- tiny data ----------------------------------------------------------------------------------


# The smallest useful tuning recipe: softmax regression, one epoch of the tiny MNIST.
TINY_SOFTMAX_RECIPE = {
    "model": "softmax_regression",
    "dataset": "mnist",
    "optimizer": {"name": "sgd", "learning_rate": 0.1},
    "batch_size": 32,
    "epochs": 1,
}


# LeNet-5 on the tiny mnist.npz below, with dropout and the digits augmentation in tf.data.
TINY_LENET_RECIPE = {
    "description": "LeNet-5 on a tiny synthetic mnist.npz",
    "model": "lenet5",
    "model_options": {"dropout": 0.2},
    "dataset": "mnist",
    "augmentation": "digits",
    "optimizer": {"name": "adam", "learning_rate": 0.003},
    "batch_size": 32,
    "epochs": 1,
    "seed": 0,
    "validation_split": 0.1,
}


def recipe_workspace(root: Path, recipe: dict, train: int, test: int,
                     name: str = "tiny.yaml") -> Path:
    """``root`` holding ``data/mnist.npz`` (``train`` and ``test`` synthetic digits) and
    ``recipe`` as the YAML file ``name``."""
    import yaml

    write_mnist_npz(root / "data", train=train, test=test)
    (root / name).write_text(yaml.safe_dump(recipe))
    return root


def synthetic_digits(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """28x28 uint8 images whose class (0-9) is the row of a bright bar on a noisy background,
    so a model can learn them in an epoch or two."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count).astype("uint8")
    images = rng.integers(0, 60, (count, 28, 28)).astype("uint8")
    for image, label in zip(images, labels):
        image[2 * label + 2: 2 * label + 8, 4:24] = 220
    return images, labels


def write_mnist_npz(folder: Path, train: int = 300, test: int = 100, seed: int = 0) -> Path:
    """A Keras-layout ``mnist.npz`` (x_train, y_train, x_test, y_test) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    x_train, y_train = synthetic_digits(train, seed)
    x_test, y_test = synthetic_digits(test, seed + 1)
    path = folder / "mnist.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


@pytest.fixture
def mnist_dir(tmp_path) -> Path:
    """A data folder holding a tiny mnist.npz (300 train, 100 test images)."""
    folder = tmp_path / "data"
    write_mnist_npz(folder)
    return folder


def write_image_folder(
    root: Path,
    classes: dict[str, int],
    size: tuple[int, int] = (12, 10),
    seed: int = 0,
    extension: str = ".png",
) -> Path:
    """``root/<class>/<i>.png`` RGB images, ``classes`` mapping class name to image count;
    each class has its own base colour."""
    rng = np.random.default_rng(seed)
    for index, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for number in range(count):
            pixels = rng.integers(0, 40, (*size, 3)).astype("uint8")
            pixels[..., index % 3] += np.uint8(120 + 10 * (index // 3))
            Image.fromarray(pixels).save(root / name / f"{number:04d}{extension}")
    return root


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the CLI ----------------------------------------------------------------------------------


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "KZOO_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3", **extra}
    env.pop("KZOO_DATA_DIR", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_cli(*args: str, cwd: Path, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    """``python -m kzoo ARGS`` in ``cwd``, offline; the CompletedProcess with text output."""
    return subprocess.run(
        [sys.executable, "-m", "kzoo", *map(str, args)],
        cwd=cwd, env=cli_env(**env), capture_output=True, text=True, timeout=timeout,
        check=False,
    )


def run_cli_many(
    commands: dict[str, tuple[list[str], Path]], workers: int = 3
) -> dict[str, subprocess.CompletedProcess]:
    """Run several independent CLI commands at once (each spends seconds importing
    TensorFlow); ``commands`` maps a key to (args, cwd)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {key: pool.submit(run_cli, *args, cwd=cwd) for key, (args, cwd) in commands.items()}
        return {key: future.result() for key, future in futures.items()}


@pytest.fixture
def cli(tmp_path):
    """``cli(*args)`` runs ``python -m kzoo`` in a subprocess with cwd=tmp_path."""

    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        return run_cli(*args, cwd=tmp_path, **env)

    return run


def assert_clean_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """A failed CLI run: non-zero exit, one ``kzoo: error:`` line naming ``fragments``, and no
    traceback. Returns the error line."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("kzoo: error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]
