"""Hyperband against random search on real MNIST: the best validation accuracy each reaches for
the compute it spends, searching learning rate, batch size and dropout for LeNet-5.

    python bench/tune_mnist.py --data-dir ../shared/data     # about 10 minutes on 2 CPU cores

To fit a CPU budget the searches train on the first --train-images (default 16,000) of MNIST's
60,000 training images; 10% of those are the validation split the searches score on. Both search
the space of the lenet5_mnist recipe's search section (learning rate 1e-4 to 0.1 on a log scale,
batch size 32, 128 or 2000, dropout 0 to 0.6 in steps of 0.1), starting from its own values.
Hyperband trains a trial for at most --max-epochs (factor 3); random search trains each of its
trials that long, with as many trials as fit in Hyperband's epoch budget, the comparison of Li
et al. (2018). Compute is counted in epochs trained over the training subset and in seconds.

Writes bench/results/tuning/tune_mnist.json: for each algorithm the best validation accuracy, its
trial and hyperparameters, epochs and seconds spent, and the curve of the best accuracy so far
after each finished trial against the epochs and seconds spent until then.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from accuracy import machine

OUTPUT = Path(__file__).resolve().parent / "results" / "tuning" / "tune_mnist.json"


def write_subset(data_dir: str, folder: Path, train_images: int) -> None:
    """``mnist.npz`` with the first ``train_images`` training images and the whole test set."""
    source = Path(data_dir).expanduser() / "mnist.npz"
    with np.load(source) as data:
        np.savez(folder / "mnist.npz", x_train=data["x_train"][:train_images],
                 y_train=data["y_train"][:train_images], x_test=data["x_test"],
                 y_test=data["y_test"])


def hyperband_budget(max_epochs: int, factor: int) -> tuple[int, int]:
    """The trials and epochs one Hyperband iteration runs (KerasTuner's brackets)."""
    brackets = 1 + int(math.log(max_epochs, factor) + 1e-9)
    end_size = math.ceil(1 + math.log(max_epochs, factor))
    trials = epochs = 0
    for bracket in range(brackets):
        previous = 0
        for round_ in range(bracket + 1):
            size = math.ceil(end_size / (bracket + 1) * factor ** (bracket - round_))
            round_epochs = math.ceil(max_epochs / factor ** (bracket - round_))
            trials, epochs = trials + size, epochs + size * (round_epochs - previous)
            previous = round_epochs
    return trials, epochs


def summarize(result, started: float, finished: float) -> dict[str, object]:
    """Best accuracy, compute spent, and the best-so-far curve in the order trials finished."""
    rows = {row["trial_id"]: row for row in result.trials}
    epochs = seconds = 0.0
    best, curve = 0.0, []
    for trial_id in result.tuner.oracle.end_order:
        row = rows[trial_id]
        epochs += row.get("epochs_trained") or row.get("epochs", 0) - row.get("initial_epoch", 0)
        seconds += row["wall_time_s"] or 0.0
        if row["status"] == "COMPLETED":
            best = max(best, row["val_accuracy"])
        curve.append({"trial": trial_id, "epochs": epochs, "trial_seconds": round(seconds, 1),
                      "best_val_accuracy": round(best, 4)})
    return {
        "best_val_accuracy": result.best_score,
        "best_trial": next(trial for trial, row in rows.items()
                           if row["val_accuracy"] == result.best_score),
        "best_hyperparameters": result.best_hyperparameters,
        "best_epochs": result.best_recipe.epochs,
        "first_trial": {key: rows[min(rows)].get(key) for key in  # the recipe's own values
                        ("learning_rate", "batch_size", "dropout", "epochs_trained",
                         "val_accuracy")},
        "trials": len(rows),
        "failed_trials": sum(row["status"] != "COMPLETED" for row in rows.values()),
        "epochs_trained": epochs,
        "trial_seconds": round(seconds, 1),
        "search_seconds": round(finished - started, 1),
        "curve": curve,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("KZOO_DATA_DIR", "../shared/data"))
    parser.add_argument("--recipe", default="lenet5_mnist")
    parser.add_argument("--train-images", type=int, default=16000)
    parser.add_argument("--max-epochs", type=int, default=9)
    parser.add_argument("--factor", type=int, default=3)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)

    import kzoo
    import kzoo.training.run

    hyperband_trials, budget = hyperband_budget(args.max_epochs, args.factor)
    random_trials = round(budget / args.max_epochs)
    recipe = kzoo.load_recipe(args.recipe)
    record: dict[str, object] = {
        "benchmark": "tune_mnist",
        "tuned_recipe": args.recipe,
        "model": recipe.model,
        "train_images": args.train_images,
        "max_epochs": args.max_epochs,
        "hyperband_factor": args.factor,
        "search": recipe.to_dict().get("search", "kzoo's default space"),
        "searches": {},
    }
    with tempfile.TemporaryDirectory() as scratch:
        write_subset(args.data_dir, Path(scratch), args.train_images)
        for algorithm, max_trials in (("hyperband", None), ("random", random_trials)):
            print(f"bench: {algorithm} search ({max_trials or hyperband_trials} trials, about "
                  f"{budget} epochs) of {args.recipe} on {args.train_images} MNIST images",
                  flush=True)
            started = time.perf_counter()
            result = kzoo.tune(
                args.recipe, algorithm=algorithm, max_trials=max_trials, epochs=args.max_epochs,
                hyperband_factor=args.factor, data_dir=scratch,
                run_dir=Path(scratch) / "tuning", verbose=0,
            )
            summary = summarize(result, started, time.perf_counter())
            record["searches"][algorithm] = summary
            print(f"bench: {algorithm}: best val accuracy {summary['best_val_accuracy']:.4f} after "
                  f"{summary['epochs_trained']:.0f} epochs, {summary['search_seconds']:.0f} s",
                  flush=True)
    record.update(
        command="python bench/tune_mnist.py --data-dir ../shared/data"
        + (f" --train-images {args.train_images}" if args.train_images != 16000 else ""),
        machine=machine(), versions=kzoo.training.run.versions(),
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"bench: -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
