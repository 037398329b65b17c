"""How well ``kzoo audit FOLDER --labels`` finds label errors: flip the labels of a known 5 %
of a real folder's images, audit it, and score the flagged list against the flips.

    python bench/label_audit.py --data-dir ../shared/data                 # about 10 minutes

Folders (copied into a scratch folder, never modified in place):

- ``ants_bees``: the hymenoptera set, train/ and val/ (397 images, 2 classes);
- ``cifar10``: ``--cifar-per-class`` training images of each of the 10 classes of the CIFAR-10
  JPEGs (``cifar10_jpg.zip``), 2,000 by default.

A seeded 5 % of the images are moved into another class's folder (a random other class). The
audit uses MobileNetV2 1.0 with the ImageNet weights in ``DATA_DIR/weights/``
(``mobilenet_v2_1.0_224_dequantized_no_top.h5``) at 224 px, 5 folds. Reported: precision and
recall of the top N flagged images, N = the number flipped (the aim: precision >=
0.8 there), and of the whole flagged set, with the suggested label's accuracy on the flips:
for the audit's default filter and ranking (from ``label_issues.csv``), and under ``filters``
for every filter and ranking of :mod:`kzoo.analysis.labels`, each computed from the same
out-of-fold probabilities (the run's ``out_of_fold.npz``).

Results: bench/results/label_audit.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
RESULTS = ROOT / "bench" / "results" / "label_audit.json"
WEIGHTS = "mobilenet_v2_1.0_224_dequantized_no_top.h5"
FRACTION = 0.05


def copy_ants_bees(data_dir: Path, target: Path) -> Path:
    shutil.copytree(data_dir / "hymenoptera_data", target)
    return target


def copy_cifar(data_dir: Path, target: Path, per_class: int) -> Path:
    with zipfile.ZipFile(data_dir / "cifar10_jpg.zip") as archive:
        names = sorted(name for name in archive.namelist()
                       if name.startswith("train/") and name.endswith(".jpg"))
        taken: dict[str, int] = {}
        for name in names:
            label = name.split("/")[1]
            if taken.get(label, 0) < per_class:
                taken[label] = taken.get(label, 0) + 1
                out = target / "train" / label / Path(name).name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(archive.read(name))
    return target


def flip(folder: Path, fraction: float, seed: int) -> dict[str, tuple[str, str]]:
    """Move a seeded ``fraction`` of the images into another class's folder of the same
    split; ``{new path: (true class, given class)}``."""
    rng = np.random.default_rng(seed)
    images = sorted(path for path in folder.rglob("*") if path.suffix.lower() in
                    (".jpg", ".jpeg", ".png"))
    chosen = rng.choice(len(images), round(fraction * len(images)), replace=False)
    flips = {}
    for index in sorted(chosen):
        path = images[index]
        classes = sorted(p.name for p in path.parent.parent.iterdir() if p.is_dir())
        truth = path.parent.name
        given = rng.choice([name for name in classes if name != truth])
        target = path.parent.parent / given / f"flipped-{path.name}"
        path.rename(target)
        flips[str(target.resolve())] = (truth, str(given))
    return flips


def score(rows: list[dict], flips: dict[str, tuple[str, str]]) -> dict:
    flagged = [str(Path(row["file"]).resolve()) for row in rows]
    count = len(flips)
    top = flagged[:count]
    hits_top = sum(path in flips for path in top)
    hits_all = sum(path in flips for path in flagged)
    suggested = {str(Path(row["file"]).resolve()): row["suggested_label"] for row in rows}
    right = sum(suggested[path] == flips[path][0] for path in flips if path in suggested)
    return {
        "flipped": count, "flagged": len(flagged),
        "precision_at_n": round(hits_top / max(len(top), 1), 3),
        "recall_at_n": round(hits_top / count, 3),
        "precision_all": round(hits_all / max(len(flagged), 1), 3),
        "recall_all": round(hits_all / count, 3),
        "suggested_is_true_class": round(right / max(hits_all, 1), 3),
    }


def every_filter(run_dir: Path, flips: dict[str, tuple[str, str]]) -> dict:
    """The score of each filter and ranking on the audit's own out-of-fold probabilities."""
    from kzoo.analysis.labels import FILTERS, RANKINGS, confident_learning

    saved = np.load(run_dir / "out_of_fold.npz")
    names = saved["class_names"].tolist()
    paths = saved["paths"].tolist()
    scores = {}
    for filter_by in FILTERS:
        for rank_by in RANKINGS:
            order, suggested, _, _ = confident_learning(
                saved["probabilities"].astype("float64"), saved["labels"], filter_by, rank_by)
            rows = [{"file": paths[index], "suggested_label": names[better]}
                    for index, better in zip(order, suggested)]
            scores[f"{filter_by}, {rank_by}"] = score(rows, flips)
    return scores


def audit(folder: Path, data_dir: Path, run_dir: Path) -> tuple[list[dict], dict, float]:
    started = time.perf_counter()
    command = [sys.executable, "-m", "kzoo", "audit", str(folder), "--labels", "--backbone",
               "mobilenet_v2", "--weights", WEIGHTS, "--data-dir", str(data_dir),
               "--run-dir", str(run_dir), "--quiet"]
    subprocess.run(command, check=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    import csv

    with open(run_dir / "label_issues.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return rows, json.loads((run_dir / "labels.json").read_text()), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--folders", default="ants_bees,cifar10")
    parser.add_argument("--cifar-per-class", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data_dir = Path(args.data_dir).resolve()
    results = {}
    with tempfile.TemporaryDirectory(prefix="kzoo-labels-") as scratch:
        for name in args.folders.split(","):
            folder = Path(scratch) / name
            if name == "ants_bees":
                copy_ants_bees(data_dir, folder)
            else:
                copy_cifar(data_dir, folder, args.cifar_per_class)
            flips = flip(folder, FRACTION, args.seed)
            rows, summary, seconds = audit(folder, data_dir, Path(scratch) / f"{name}-run")
            results[name] = {**score(rows, flips), "images": summary["images"],
                             "cross_validated_accuracy": summary["cross_validated_accuracy"],
                             "seconds": round(seconds, 1),
                             "filters": every_filter(Path(scratch) / f"{name}-run", flips)}
            print(name, json.dumps(results[name], indent=1), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "command": "python bench/label_audit.py " + " ".join(sys.argv[1:]),
        "fraction_flipped": FRACTION, "seed": args.seed, "backbone": "mobilenet_v2 1.0",
        "weights": WEIGHTS, "folds": 5, "filter_by": summary["filter_by"],
        "rank_by": summary["rank_by"], "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
