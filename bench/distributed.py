"""Training across processes and devices against one process, on this machine, in one run:
images/s of the CIFAR three-set net (``cifar_convnet_deep_cifar10``) and the peak memory of the
whole process tree.

    python bench/distributed.py --data-dir ../shared/data                # about 20 minutes

Variants, each ``kzoo train RECIPE --epochs 2 --quiet`` in a process tree of its own, one after
another (interleaved over ``--repeats``, the order reversed on every other repeat):

- ``jax_1``: one process on the JAX backend, the baseline of the multi-process path;
- ``jax_2``: two processes on loopback (``--num-processes 2``, gloo collectives), each feeding
  half of every batch of the recipe's global batch;
- ``tf_1``: one process on TensorFlow, kzoo's default backend;
- ``tf_2dev``: TensorFlow's MirroredStrategy over the CPU split in two (``--devices 2``).

On one machine with two cores, two processes cannot be faster than one: the figure is the cost
of the communication and of splitting the work, not a speed-up. Images/s is the batch size over
Keras's time per step in the second epoch (its own ``verbose=2`` line; the first epoch pays for
compilation). Memory is the summed RSS of the process tree (``folder_scale.run_measured``), so
two processes count each their own copy of TensorFlow and JAX.

Results: bench/results/distributed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import socket
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

from folder_scale import run_measured

ROOT = HERE.parents[1]
RESULTS = ROOT / "bench" / "results" / "distributed.json"
VARIANTS = ("jax_1", "jax_2", "tf_1", "tf_2dev")
EPOCH_LINE = re.compile(r"^\s*(\d+)/\1 - (\d+)s - (\d+)(ms|s)/step", re.MULTILINE)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command_for(variant: str, recipe: str, epochs: int, data_dir: str, work: Path) -> str:
    """The shell line that runs ``variant``; every process writes its own log in ``work``."""
    kzoo = shlex.join([sys.executable, "-m", "kzoo", "train", recipe, "--epochs", str(epochs),
                       "--data-dir", data_dir, "--quiet"])
    backend = "jax" if variant.startswith("jax") else "tensorflow"
    env = f"KERAS_BACKEND={backend}"
    if variant == "jax_2":
        cluster = f"--coordinator 127.0.0.1:{free_port()} --num-processes 2"
        return " & ".join(
            f"{env} {kzoo} --run-dir {work / 'run'} {cluster} --process-id {index} "
            f"> {work / f'process-{index}.log'} 2>&1" for index in (0, 1)) + " & wait"
    devices = " --devices 2" if variant == "tf_2dev" else ""
    return f"{env} {kzoo} --run-dir {work / 'run'}{devices} > {work / 'process-0.log'} 2>&1"


def step_seconds(log: str) -> list[float]:
    """Keras's time per step of each epoch, from its ``verbose=2`` lines."""
    return [int(value) / (1000 if unit == "ms" else 1)
            for _, _, value, unit in EPOCH_LINE.findall(log)]


def measure(variant: str, args, batch_size: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"kzoo-{variant}-") as folder:
        work = Path(folder)
        line = command_for(variant, args.recipe, args.epochs, str(Path(args.data_dir).resolve()),
                           work)
        measured = run_measured(["bash", "-c", line], cwd=ROOT, env={**os.environ},
                                timeout=args.timeout)
        log = (work / "process-0.log").read_text(errors="replace")
        steps = step_seconds(log)
        metrics_file = work / "run" / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    if measured["exit_code"] != 0 or len(steps) < 2:
        raise SystemExit(f"{variant} failed (exit {measured['exit_code']}):\n{log[-3000:]}")
    return {
        "step_s": steps, "images_per_s": round(batch_size / statistics.median(steps[1:]), 1),
        "wall_s": measured["wall_s"], "peak_rss_mb": measured["peak_rss_mb"],
        "max_processes": measured["max_processes"], "cpu_s": measured["cpu_s"],
        "test_accuracy": metrics.get("test_accuracy"), "command": line,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="cifar_convnet_deep_cifar10")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from kzoo.recipes.zoo import load_recipe

    batch_size = load_recipe(args.recipe).batch_size
    variants = args.variants.split(",")
    runs: dict[str, list[dict]] = {variant: [] for variant in variants}
    for repeat in range(args.repeats):
        for variant in variants if repeat % 2 == 0 else variants[::-1]:
            result = measure(variant, args, batch_size)
            print(f"{variant}: {result['images_per_s']:,.0f} images/s, peak "
                  f"{result['peak_rss_mb']:,.0f} MB, {result['wall_s']:.0f} s", flush=True)
            runs[variant].append(result)
    summary = {variant: statistics.median(run["images_per_s"] for run in results)
               for variant, results in runs.items()}
    ratios = {}
    if {"jax_1", "jax_2"} <= summary.keys():
        ratios["jax_2 / jax_1"] = round(summary["jax_2"] / summary["jax_1"], 3)
    if {"tf_1", "tf_2dev"} <= summary.keys():
        ratios["tf_2dev / tf_1"] = round(summary["tf_2dev"] / summary["tf_1"], 3)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "recipe": args.recipe, "epochs": args.epochs, "batch_size": batch_size,
        "command": "python bench/distributed.py " + shlex.join(sys.argv[1:]),
        "cpus": os.cpu_count(), "images_per_s": summary, "ratios": ratios, "runs": runs,
    }, indent=2) + "\n")
    print(json.dumps({"images_per_s": summary, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
