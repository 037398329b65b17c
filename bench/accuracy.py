"""Train recipes on real data and record what they reach, one JSON file per recipe and seed.

    python bench/accuracy.py softmax_regression_mnist lenet5_mnist --data-dir ../shared/data
    python bench/accuracy.py lenet5_mnist --seeds 0 1 2 --data-dir ../shared/data

Each result lands in bench/results/RECIPE-seedN.json (recipe, seed, epochs, test and validation
accuracy, wall time, machine, versions); `python bench/readme_tables.py` turns them into the
README's results table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, object]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def run(recipe: str, seed: int, data_dir: str | None, epochs: int | None) -> dict[str, object]:
    import kzoo

    with tempfile.TemporaryDirectory() as scratch:
        result = kzoo.train(recipe, seed=seed, epochs=epochs, data_dir=data_dir,
                            run_dir=Path(scratch) / "run", verbose=2)
    metrics = result.metrics
    loaded = kzoo.load_recipe(recipe)
    return {
        "recipe": recipe,
        "model": metrics["model"],
        "dataset": metrics["dataset"],
        "seed": seed,
        "epochs": metrics["epochs_run"],
        "test_accuracy": metrics["test_accuracy"],
        "final_val_accuracy": metrics.get("final_val_accuracy"),
        "wall_time_s": metrics["wall_time_s"],
        "expected_accuracy": loaded.expected_accuracy,
        "reference": loaded.reference,
        "command": " ".join(["python", "bench/accuracy.py", recipe, "--seeds", str(seed),
                             *(["--data-dir", data_dir] if data_dir else []),
                             *(["--epochs", str(epochs)] if epochs else [])]),
        "machine": machine(),
        "versions": metrics["versions"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data-dir", default=os.environ.get("KZOO_DATA_DIR"))
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs")
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    for recipe in args.recipes:
        for seed in args.seeds:
            record = run(recipe, seed, args.data_dir, args.epochs)
            path = RESULTS / f"{recipe}-seed{seed}.json"
            path.write_text(json.dumps(record, indent=2) + "\n")
            print(f"bench: {recipe} seed {seed}: test accuracy {record['test_accuracy']:.4f} "
                  f"in {record['wall_time_s'] / 60:.1f} min -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
