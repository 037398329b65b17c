"""Training across processes and devices (:mod:`kzoo.training.distributed`), as a user runs it: real
``kzoo train`` processes joined on the loopback interface (JAX backend, gloo collectives), a
worker killed mid-run and the run resumed, and TensorFlow's MirroredStrategy over two logical
CPU devices.

The reference for two processes is one process training the same global batches: one process
over two devices (``--devices 2``), whose batches are padded and split exactly as the two
processes' are. The weights must agree to 1e-5: not bit for bit, because the two ways sum the
halves of each gradient in different orders (measured: 3e-7 after 142 LeNet-5 steps).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import (
    TINY_LENET_RECIPE,
    assert_clean_error,
    cli_env,
    free_port,
    recipe_workspace,
    run_cli,
)
from messy_images import make_split_folder, write_mobilenet_weights

from kzoo.errors import KzooError
from kzoo.models.registry import load_model
from kzoo.training.distributed import Cluster, process_part

TOLERANCE = 1e-5
RECIPE = {**TINY_LENET_RECIPE, "epochs": 3}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The recipe as lenet.yaml and 310 training digits: the last batch has an odd size."""
    return recipe_workspace(tmp_path_factory.mktemp("distributed"), RECIPE, train=310, test=64,
                            name="lenet.yaml")


TRAIN = ("train", "lenet.yaml", "--data-dir", "data")


def launch(workspace: Path, run_dir: str, *flags: str, backend: str = "jax",
           command: tuple[str, ...] = TRAIN, cache: str = "cache") -> subprocess.Popen:
    """``kzoo COMMAND --run-dir RUN_DIR --quiet FLAGS`` in ``workspace``, with its own folder
    cache (as on a machine of its own)."""
    return subprocess.Popen(
        [sys.executable, "-m", "kzoo", *command, "--run-dir", run_dir, "--quiet", *flags],
        cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=cli_env(KERAS_BACKEND=backend, KZOO_CACHE_DIR=str(workspace / cache)))


def pair(workspace: Path, run_dir: str, *flags: str, command: tuple[str, ...] = TRAIN,
         ) -> list[subprocess.Popen]:
    """Processes 0 and 1 of one run, joined through a fresh loopback port."""
    cluster = ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2"]
    return [launch(workspace, run_dir, *cluster, "--process-id", str(index), *flags,
                   command=command, cache=f"cache-{index}") for index in (0, 1)]


def finish(process: subprocess.Popen, timeout: float = 240) -> str:
    try:
        output = process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 0, output
    return output


def weights(run_dir: Path) -> list[np.ndarray]:
    return load_model(str(run_dir / "model.keras")).get_weights()


def largest_difference(first: Path, second: Path) -> float:
    return max(float(np.abs(a - b).max()) for a, b in zip(weights(first), weights(second),
                                                           strict=True))


# --- the pieces -------------------------------------------------------------------------------


def test_process_part_pads_a_batch_to_the_devices_and_splits_it_in_order():
    images = tf.reshape(tf.range(7 * 2), (7, 2))  # one batch of 7 examples
    labels = tf.range(7)
    batches = tf.data.Dataset.from_tensors((images, labels))
    parts = [next(iter(process_part(batches, replicas=4, processes=2, index=index)))
             for index in (0, 1)]
    # padded to 8 (a multiple of the 4 devices) with the batch's first example, then halved
    assert [part[1].numpy().tolist() for part in parts] == [[0, 1, 2, 3], [4, 5, 6, 0]]
    joined = np.concatenate([part[0].numpy() for part in parts])
    np.testing.assert_array_equal(joined, np.concatenate([images.numpy(), images.numpy()[:1]]))
    whole = next(iter(process_part(batches.map(lambda x, y: (x[:6], y[:6])), 2, 2, 1)))
    assert whole[1].numpy().tolist() == [3, 4, 5]  # no padding where the batch divides


def test_cluster_comes_from_flags_or_from_keras_environment_variables():
    environ = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1:8476,10.0.0.2:8476",
               "KERAS_DISTRIBUTION_PROCESS_ID": "1"}
    cluster = Cluster.from_settings(environ=environ)
    assert (cluster.coordinator, cluster.num_processes, cluster.process_id) == (
        "10.0.0.1:8476", 2, 1)
    assert not cluster.is_chief
    flags = Cluster.from_settings("127.0.0.1:9", 3, 0, devices="2", environ=environ)
    assert (flags.coordinator, flags.num_processes, flags.process_id, flags.devices) == (
        "127.0.0.1:9", 3, 0, 2)
    assert Cluster.from_settings(environ={}) == Cluster()
    for settings, fragment in [
        ({"num_processes": 2}, "--coordinator HOST:PORT"),
        ({"coordinator": "h:1", "num_processes": 2, "process_id": 2}, "--process-id 2"),
        ({"coordinator": "no-port", "num_processes": 2}, "HOST:PORT"),
        ({"devices": "0"}, "--devices '0'"),
    ]:
        with pytest.raises(KzooError, match=fragment.replace("(", r"\(")):
            Cluster.from_settings(**settings, environ={})


@pytest.mark.slow
def test_bad_cluster_flags_are_one_line_errors(workspace):
    def train(*flags, **env):
        return run_cli("train", "lenet.yaml", "--data-dir", "data", *flags, cwd=workspace,
                       timeout=120, **env)

    results = {
        "no coordinator": train("--num-processes", "2", "--process-id", "0"),
        "no run dir": train("--coordinator", "127.0.0.1:1", "--num-processes", "2",
                            "--process-id", "0"),
        "tensorflow": train("--coordinator", "127.0.0.1:1", "--num-processes", "2",
                            "--process-id", "0", "--run-dir", "x", KERAS_BACKEND="tensorflow"),
        "devices": train("--devices", "some", "--run-dir", "y"),
    }
    assert_clean_error(results["no coordinator"], "--coordinator HOST:PORT")
    assert_clean_error(results["no run dir"], "--run-dir DIR", "shared")
    assert_clean_error(results["tensorflow"], "JAX backend", "keras-team/keras#20585")
    assert_clean_error(results["devices"], "--devices 'some'", "all")
    assert not (workspace / "x").exists() and not (workspace / "y").exists()


# --- real processes ---------------------------------------------------------------------------

# ``kzoo`` on a process whose models are built with other initial weights, as on a machine
# whose random numbers or library versions differ from process 0's.
PERTURBED = """
import sys

import keras

import kzoo.training.train as train

built = train.build_for


def perturbed(recipe, splits):
    model = built(recipe, splits)
    if keras.distribution.distribution() is None:  # not the replica, whose values are copied
        for variable in model.trainable_variables:
            variable.assign(variable.numpy() + 0.05)
    return model


train.build_for = perturbed
from kzoo.cli.main import main

sys.exit(main())
"""


def perturbed_pair(workspace: Path, run_dir: str, *flags: str) -> list[subprocess.Popen]:
    """Processes 0 and 1 of one run, process 1 building other initial weights."""
    (workspace / "perturbed.py").write_text(PERTURBED)
    cluster = ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2"]
    chief = launch(workspace, run_dir, *cluster, "--process-id", "0", *flags, cache="cache-0")
    worker = subprocess.Popen(
        [sys.executable, "perturbed.py", *TRAIN, "--run-dir", run_dir, "--quiet", *cluster,
         "--process-id", "1", *flags],
        cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=cli_env(KERAS_BACKEND="jax", KZOO_CACHE_DIR=str(workspace / "cache-1")))
    return [chief, worker]


@pytest.mark.multiprocess
@pytest.mark.slow
def test_process_zero_decides_the_initial_weights_and_the_found_rate(workspace):
    """Process 1 builds other initial weights, so its sweep finds another rate too: the run
    still trains process 0's model at process 0's rate, as one process over two devices
    does."""
    single = launch(workspace, "single-auto", "--devices", "2", "--lr", "auto")
    both = perturbed_pair(workspace, "pair-auto", "--lr", "auto")
    outputs = [process.communicate(timeout=400)[0] for process in (single, *both)]
    assert [process.returncode for process in (single, *both)] == [0, 0, 0], outputs
    assert "process 1 done" in outputs[2], outputs[2]
    rate = json.loads((workspace / "single-auto" / "metrics.json").read_text())[
        "learning_rate_finder"]["suggestion"]
    assert f"learning-rate finder suggests {rate:.3g}" in outputs[2], outputs[2]
    assert json.loads((workspace / "pair-auto" / "metrics.json").read_text())[
        "learning_rate_finder"]["suggestion"] == rate
    assert largest_difference(workspace / "single-auto", workspace / "pair-auto") < TOLERANCE


@pytest.mark.multiprocess
@pytest.mark.slow
def test_processes_started_with_other_settings_refuse_in_one_line(workspace):
    cluster = ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", "2"]
    processes = [launch(workspace, "mixed", *cluster, "--process-id", "0", cache="cache-0"),
                 launch(workspace, "mixed", *cluster, "--process-id", "1", "--seed", "1",
                        cache="cache-1")]
    for process in processes:
        output = process.communicate(timeout=240)[0]
        assert process.returncode == 2, output
        assert "Traceback" not in output, output
        errors = [line for line in output.splitlines() if line.startswith("kzoo: error:")]
        assert len(errors) == 1 and "differ in their settings" in errors[0], output
        assert "same recipe and the same flags" in errors[0]
    assert not (workspace / "mixed" / "model.keras").exists()


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_processes_train_what_one_does_and_resume_after_a_worker_is_killed(workspace):
    single = launch(workspace, "single", "--devices", "2")
    both = pair(workspace, "pair")
    outputs = [finish(process) for process in (single, *both)]
    assert "2 processes, 2 devices in all" in outputs[1], outputs[1]
    assert "process 1 done" in outputs[2], outputs[2]
    metrics = json.loads((workspace / "pair" / "metrics.json").read_text())
    assert metrics["distribution"] == {"processes": 2, "devices": 2}
    assert metrics["sizes"]["train"] % RECIPE["batch_size"] % 2 == 1  # a last batch is padded
    assert len((workspace / "pair" / "history.csv").read_text().splitlines()) == 1 + 3
    assert not (workspace / "runs").exists()  # the worker made no run directory of its own
    assert largest_difference(workspace / "single", workspace / "pair") < TOLERANCE
    assert metrics["test_accuracy"] == pytest.approx(
        json.loads((workspace / "single" / "metrics.json").read_text())["test_accuracy"])

    # Kill the worker once the first epoch is saved: the chief stops with a clear error, soon.
    chief, worker = pair(workspace, "killed")
    checkpoint = workspace / "killed" / "backup" / "epoch-0001.json"
    deadline = time.monotonic() + 180
    while not checkpoint.exists() and time.monotonic() < deadline and chief.poll() is None:
        time.sleep(0.2)
    assert checkpoint.exists(), chief.communicate()[0]
    worker.kill()
    killed = time.monotonic()
    output = chief.communicate(timeout=90)[0]
    assert time.monotonic() - killed < 60, output
    assert chief.returncode == 2, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("kzoo: error:")]
    assert len(errors) == 1 and "another process of the run stopped" in errors[0], output
    assert "--resume" in errors[0]
    worker.wait()

    # Both processes resume from the shared checkpoint and end where the uninterrupted run did.
    resumed = [finish(process) for process in pair(workspace, "killed", "--resume")]
    assert "resuming killed after epoch" in resumed[0], resumed[0]
    assert largest_difference(workspace / "single", workspace / "killed") < TOLERANCE


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_tensorflow_devices_train_what_one_does(tmp_path):
    """MirroredStrategy runs the model once per device, so each replica draws its own dropout
    masks and a padded batch is not the single device's batch: the comparison is on a model
    without dropout and on whole batches of an even size (288 training images)."""
    recipe_workspace(tmp_path, {**RECIPE, "model_options": {}}, train=320, test=64,
                     name="lenet.yaml")
    runs = {"tf-one": launch(tmp_path, "tf-one", backend="tensorflow"),
            "tf-two": launch(tmp_path, "tf-two", "--devices", "2", backend="tensorflow")}
    outputs = {name: finish(process) for name, process in runs.items()}
    assert "on 2 devices in all" in outputs["tf-two"], outputs["tf-two"]
    metrics = json.loads((tmp_path / "tf-two" / "metrics.json").read_text())
    assert metrics["distribution"] == {"processes": 1, "devices": 2}
    assert metrics["sizes"]["train"] % RECIPE["batch_size"] == 0
    assert largest_difference(tmp_path / "tf-one", tmp_path / "tf-two") < TOLERANCE


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_processes_fine_tune_what_one_does(tmp_path):
    """The head phase runs whole on each process; the fine-tuning phase is shared."""
    make_split_folder(tmp_path / "photos", train=10, val=3)
    weights_file = write_mobilenet_weights(tmp_path / "mobilenet.weights.h5")
    command = ("finetune", "photos", "--backbone", "mobilenet_v2", "--option", "alpha=0.35",
               "--image-size", "64", "--weights", str(weights_file), "--batch-size", "6",
               "--head-epochs", "1", "--epochs", "2", "--keep-last")
    single = launch(tmp_path, "single", "--devices", "2", command=command)
    both = pair(tmp_path, "pair", command=command)
    outputs = [finish(process) for process in (single, *both)]
    assert "process 1 done" in outputs[2], outputs[2]
    metrics = json.loads((tmp_path / "pair" / "metrics.json").read_text())
    assert metrics["distribution"] == {"processes": 2, "devices": 2}
    assert (tmp_path / "pair" / "report.html").is_file()
    assert largest_difference(tmp_path / "single", tmp_path / "pair") < TOLERANCE
