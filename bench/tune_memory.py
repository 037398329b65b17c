"""Memory over a long search: the process's resident memory after each of --trials trials.

    python bench/tune_memory.py --data-dir ../shared/data      # 24 trials, about 2 minutes

A random search over learning rate, batch size and dropout of the lenet5_mnist recipe, one epoch
a trial, on the first --train-images MNIST images. After every trial's fit a callback reads
VmRSS from /proc/self/status. The first third of the trials warms up: TensorFlow's kernels and
caches, and the allocator's high-water mark, set by the first trials with the largest batches.
Growth is measured after it: the mean of the last five trials against the mean of the five
after the warm-up, and the least-squares slope over all trials after the warm-up.

Writes bench/results/tuning/tune_memory.json and exits 1 if the last five trials use more than
--tolerance-mb (default 20) above the five after the warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import keras
from accuracy import machine
from tune_mnist import write_subset

OUTPUT = Path(__file__).resolve().parent / "results" / "tuning" / "tune_memory.json"
RSS_MB: list[float] = []  # one entry a trial (the callback is copied per trial; this list is not)


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (this benchmark needs Linux)")


class RecordMemory(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        RSS_MB.append(round(resident_mb(), 1))


def slope(values: list[float]) -> float:
    """Least-squares MB per trial."""
    xs = range(len(values))
    mean_x, mean_y = statistics.mean(xs), statistics.mean(values)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, values))
    return covariance / sum((x - mean_x) ** 2 for x in xs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("KZOO_DATA_DIR", "../shared/data"))
    parser.add_argument("--recipe", default="lenet5_mnist")
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--train-images", type=int, default=3000)
    parser.add_argument("--tolerance-mb", type=float, default=20.0)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    if args.trials < 20:
        parser.error("--trials must be at least 20")

    import kzoo
    import kzoo.training.run

    before = resident_mb()
    with tempfile.TemporaryDirectory() as scratch:
        write_subset(args.data_dir, Path(scratch), args.train_images)
        result = kzoo.tune(args.recipe, max_trials=args.trials, epochs=1, data_dir=scratch,
                           run_dir=Path(scratch) / "tuning", callbacks=[RecordMemory()],
                           verbose=0)
    completed = sum(row["status"] == "COMPLETED" for row in result.trials)
    warm_up = len(RSS_MB) // 3
    early, late = statistics.mean(RSS_MB[warm_up:warm_up + 5]), statistics.mean(RSS_MB[-5:])
    record = {
        "benchmark": "tune_memory",
        "tuned_recipe": args.recipe,
        "train_images": args.train_images,
        "trials": len(result.trials),
        "completed_trials": completed,
        "rss_mb_before_search": round(before, 1),
        "per_trial": [{"trial": row["trial_id"], "batch_size": row["batch_size"], "rss_mb": rss}
                      for row, rss in zip(result.trials, RSS_MB)],
        "warm_up_trials": warm_up,
        "rss_mb_first_5_after_warm_up": round(early, 1),
        "rss_mb_last_5": round(late, 1),
        "growth_mb": round(late - early, 1),
        "slope_mb_per_trial_after_warm_up": round(slope(RSS_MB[warm_up:]), 2),
        "rss_mb_max": max(RSS_MB),
        "tolerance_mb": args.tolerance_mb,
        "bounded": late - early <= args.tolerance_mb,
        "command": "python bench/tune_memory.py --data-dir ../shared/data",
        "machine": machine(),
        "versions": kzoo.training.run.versions(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"bench: RSS after the {warm_up} warm-up trials {early:.0f} MB, after the last five "
          f"{late:.0f} MB (growth {late - early:+.1f} MB, "
          f"{record['slope_mb_per_trial_after_warm_up']:+.2f} MB a trial) over {len(RSS_MB)} "
          f"trials -> {args.output}")
    return 0 if record["bounded"] else 1


if __name__ == "__main__":
    sys.exit(main())
