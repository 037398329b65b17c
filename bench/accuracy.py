"""Train recipes on real data and record what they reach, one JSON file per recipe and seed.

    python bench/accuracy.py softmax_regression_mnist lenet5_mnist --data-dir ../shared/data
    python bench/accuracy.py lenet5_mnist --seeds 0 1 2 --data-dir ../shared/data
    python bench/accuracy.py cifar_convnet_deep_cifar10 --learning-rate 0.01 --data-dir ../shared/data

Each result lands in bench/results/RECIPE-seedN.json (recipe, seed, epochs, test and validation
accuracy, the training's wall time and the whole run's (data, fitting, evaluation), precision,
training FLOPs, test-time augmentation, machine, versions); a run with overrides in RECIPE-lrX-bsY-seedN.json; `python bench/readme_tables.py` turns them into the
README's results table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, object]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def overrides_of(args: argparse.Namespace) -> dict[str, float | int]:
    """The recipe settings this run changes, by their kzoo.train names."""
    given = {"epochs": args.epochs, "learning_rate": args.learning_rate, "batch_size": args.batch_size}
    return {key: value for key, value in given.items() if value is not None}


def result_name(recipe: str, seed: int, overrides: dict[str, float | int]) -> str:
    short = {"learning_rate": "lr", "batch_size": "bs"}
    parts = [f"{short[key]}{value:g}" for key, value in overrides.items() if key in short]
    return "-".join([recipe, *parts, f"seed{seed}"])


def run(recipe: str, seed: int, data_dir: str | None, overrides: dict[str, float | int]) -> dict[str, object]:
    import kzoo

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        result = kzoo.train(recipe, seed=seed, data_dir=data_dir, run_dir=Path(scratch) / "run",
                            verbose=2, **overrides)
    total = time.perf_counter() - started  # data, fitting, training, evaluation: all of it
    metrics = result.metrics
    loaded = kzoo.load_recipe(recipe)
    return {
        "recipe": recipe,
        "model": metrics["model"],
        "dataset": metrics["dataset"],
        "seed": seed,
        "overrides": {key: value for key, value in overrides.items() if key != "epochs"},
        "epochs": metrics["epochs_run"],
        "test_accuracy": metrics["test_accuracy"],
        "final_val_accuracy": metrics.get("final_val_accuracy"),
        "wall_time_s": metrics["wall_time_s"],
        "total_time_s": round(total, 1),
        "precision": metrics["precision"],
        "steps_per_execution": metrics.get("steps_per_execution"),
        "training_flops": metrics.get("training_flops"),
        "tta": metrics.get("tta", "none"),
        "test_accuracy_without_tta": metrics.get("test_accuracy_without_tta"),
        "expected_accuracy": loaded.expected_accuracy,
        "reference": loaded.reference,
        "command": " ".join(["python", "bench/accuracy.py", recipe, "--seeds", str(seed),
                             *(["--data-dir", data_dir] if data_dir else []),
                             *[f"--{key.replace('_', '-')} {value:g}" for key, value in overrides.items()]]),
        "machine": machine(),
        "versions": metrics["versions"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data-dir", default=os.environ.get("KZOO_DATA_DIR"))
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    parser.add_argument("--learning-rate", type=float, help="override the recipe's learning rate")
    parser.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    for recipe in args.recipes:
        for seed in args.seeds:
            overrides = overrides_of(args)
            record = run(recipe, seed, args.data_dir, overrides)
            path = RESULTS / f"{result_name(recipe, seed, overrides)}.json"
            path.write_text(json.dumps(record, indent=2) + "\n")
            print(f"bench: {recipe} seed {seed}: test accuracy {record['test_accuracy']:.4f} "
                  f"in {record['wall_time_s'] / 60:.1f} min -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
