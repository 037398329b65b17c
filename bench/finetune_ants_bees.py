"""Fine-tune a MobileNetV2 ants/bees recipe once per seed, and record validation accuracy (with
and without the recipe's test-time augmentation) and wall time in
bench/results/finetune_RECIPE.json.

    python bench/finetune_ants_bees.py --data-dir ../shared/data --seeds 0 1 2
    python bench/finetune_ants_bees.py --recipe mobilenet_v2_100_ants_bees --data-dir ../shared/data

The recipes: ``mobilenet_v2_ants_bees`` (alpha 0.35, Keras's ImageNet weights) and
``mobilenet_v2_100_ants_bees`` (alpha 1.0, ImageNet weights dequantized from TensorFlow's uint8
MobileNetV2). It runs a recipe exactly as

    kzoo finetune --recipe RECIPE --data-dir ../shared/data --seed N

does: the folder ``hymenoptera_data`` and the weights file (in ``weights/``) are both found in
the data directory. Runs go to bench/results/tmp/ (not kept in
git); each run directory holds its report.html.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_RECIPE = "mobilenet_v2_ants_bees"
REFERENCE = {
    "model": "ResNet-18 (torchvision, ImageNet weights), fine-tuned end to end",
    "val_accuracy": 0.95,
    "source": "PyTorch transfer-learning tutorial (Chilamkurthy), same train/val folders",
}


def machine() -> dict[str, object]:
    model = ""
    if Path("/proc/cpuinfo").is_file():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else ""
    return {"platform": platform.platform(), "cpu": model or platform.processor(),
            "cpus": os.cpu_count(), "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data",
                        help="holds hymenoptera_data/ and weights/ (default ../shared/data)")
    parser.add_argument("--recipe", default=DEFAULT_RECIPE)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", help="default bench/results/finetune_RECIPE.json")
    args = parser.parse_args(argv)
    recipe_name = args.recipe
    output = Path(args.output or HERE / "results" / f"finetune_{recipe_name}.json")

    import kzoo

    runs = []
    for seed in args.seeds:
        run_dir = (HERE / "results" / "tmp"
                   / f"{recipe_name}-seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}")
        started = time.perf_counter()
        result = kzoo.fine_tune(recipe=recipe_name, data_dir=args.data_dir, seed=seed,
                                run_dir=run_dir, verbose=2)
        wall = time.perf_counter() - started
        metrics = result.metrics
        runs.append({
            "seed": seed,
            "val_accuracy": metrics["val_accuracy"],
            "val_loss": metrics["val_loss"],
            "val_accuracy_without_tta": metrics.get("val_accuracy_without_tta"),
            "head_val_accuracy": [acc for acc, phase in zip(result.history["val_accuracy"],
                                                             result.history["phase"])
                                  if phase == "head"][-1],
            "errors": round((1 - metrics["val_accuracy"]) * metrics["validation"]["examples"]),
            "wall_time_s": round(wall, 1),
            "timings_s": metrics["timings_s"],
            "run_dir": str(run_dir.relative_to(HERE.parent)),
        })
        print(f"seed {seed}: validation accuracy {metrics['val_accuracy']:.4f}, {wall:.0f}s",
              flush=True)

    accuracies = [run["val_accuracy"] for run in runs]
    recipe = kzoo.load_recipe(recipe_name)
    record = {
        "benchmark": "finetune_ants_bees",  # no top-level "recipe": not a bench/accuracy.py record
        "command": "python bench/finetune_ants_bees.py "
                   + (f"--recipe {recipe_name} " if recipe_name != DEFAULT_RECIPE else "")
                   + f"--data-dir {args.data_dir} --seeds {' '.join(map(str, args.seeds))}",
        "cli_equivalent": f"kzoo finetune --recipe {recipe_name} --data-dir {args.data_dir} "
                          "--seed N",
        "settings": {"recipe": recipe_name, **recipe.to_dict()},
        "precision": metrics["precision"],
        "validation_images": metrics["validation"]["examples"],
        "training_images": metrics["sizes"]["train"],
        "runs": runs,
        "mean_val_accuracy": statistics.mean(accuracies),
        "stdev_val_accuracy": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "mean_wall_time_s": round(statistics.mean(run["wall_time_s"] for run in runs), 1),
        "reference": REFERENCE,
        "machine": machine(),
        "versions": metrics["versions"],
        "date": time.strftime("%Y-%m-%d"),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"mean validation accuracy {record['mean_val_accuracy']:.4f} "
          f"(± {record['stdev_val_accuracy']:.4f}) over seeds {args.seeds}; "
          f"mean wall time {record['mean_wall_time_s']:.0f}s; written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
