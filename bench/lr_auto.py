"""Does the learning-rate finder's suggestion train as well as a recipe's tuned rate? Each
recipe trains twice, seed for seed: at its own rate, and with ``--lr auto``.

    python bench/lr_auto.py --data-dir ../shared/data                       # about 10 minutes

Recipes: ``lenet5_mnist`` (Adam, cosine schedule, 20 epochs: the whole sweep takes 200 steps of
its 422 a epoch) and ``mobilenet_v2_100_ants_bees`` (the fine-tuning phase's rate, found after
the head phase). Reported per run: the rate used, the test accuracy (ants/bees: validation, its
only held-out split), and the wall time; the LeNet-5 sweep's plot is kept as
bench/results/lr_find_lenet5_mnist.png for the README.

Results: bench/results/lr_auto.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kzoo.recipes.zoo import load_recipe

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
RESULTS = ROOT / "bench" / "results"
RECIPES = ("lenet5_mnist", "mobilenet_v2_100_ants_bees")


def run(recipe: str, data_dir: str, run_dir: Path, *flags: str) -> dict:
    command = [sys.executable, "-m", "kzoo", "train", recipe, "--data-dir", data_dir,
               "--run-dir", str(run_dir), "--quiet", *flags]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rate = load_recipe(run_dir / "recipe.yaml").optimizer.learning_rate  # the rate it trained at
    accuracy = metrics.get("test_accuracy", metrics.get("val_accuracy"))
    return {"learning_rate": rate, "accuracy": accuracy,
            "accuracy_split": "test" if "test_accuracy" in metrics else "validation",
            "wall_s": round(seconds, 1),
            "finder": metrics.get("learning_rate_finder")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--recipes", default=",".join(RECIPES))
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())
    results = {}
    with tempfile.TemporaryDirectory(prefix="kzoo-lr-auto-") as scratch:
        for recipe in args.recipes.split(","):
            given = run(recipe, data_dir, Path(scratch) / f"{recipe}-recipe")
            auto = run(recipe, data_dir, Path(scratch) / f"{recipe}-auto", "--lr", "auto")
            results[recipe] = {"recipe_rate": given, "lr_auto": auto}
            print(recipe, json.dumps(results[recipe]), flush=True)
            plot = Path(scratch) / f"{recipe}-auto" / "lr_find.png"
            if recipe == "lenet5_mnist" and plot.is_file():
                shutil.copy(plot, RESULTS / "lr_find_lenet5_mnist.png")
    (RESULTS / "lr_auto.json").write_text(json.dumps({
        "command": "python bench/lr_auto.py " + " ".join(sys.argv[1:]),
        "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
