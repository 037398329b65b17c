"""Images per second of the ``imagenet`` augmentation preset in ``tf.data``, before and after
flip, rotation and zoom became one warp (``kzoo.data.augment.RandomAffine``), in one process.

    python bench/augment_speed.py                       # 224 and 320 px, batch 32, 3 repeats
    python bench/augment_speed.py --sizes 320 --batches 20 --repeats 5

``old`` is the preset as it was, RandomFlip, RandomRotation(0.05), RandomZoom(0.15),
RandomContrast(0.2) (a flip layer and two bilinear warps); ``new`` is
``kzoo.augmentation("imagenet")``, RandomAffine(0.05, 0.15, horizontal_flip=True),
RandomContrast(0.2) (the flip folded into one warp); ``flip_layer`` is the step between,
RandomFlip, RandomAffine(0.05, 0.15), RandomContrast(0.2) (one warp, the flip a layer of its
own), to show what folding the flip in saves; ``cast_only`` is the same pipeline with no
augmentation, the ceiling. The pipeline is what kzoo's training builds: a pool
of random uint8 images, repeated, batched, cast to float32 after batching, augmented in a
``map`` with ``num_parallel_calls=AUTOTUNE``, prefetched. Each measurement starts a fresh
iterator, discards ``--warmup`` batches and times the next ``--batches``; the variants are
interleaved, their order reversed on every other repeat, so that a busy CPU hurts them alike.
Reported: the median images/s of each variant at each size, and the ratios new/old and
new/flip_layer of the medians.

Results: bench/results/augment_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

import kzoo.data.augment

RESULT = ROOT / "bench" / "results" / "augment_speed.json"
SEED = 0


def old_imagenet(seed):
    """The ``imagenet`` preset before RandomAffine (kzoo/augment.py at c7fe90c)."""
    return keras.layers.Pipeline([
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomRotation(0.05, seed=seed),
        keras.layers.RandomZoom(0.15, seed=seed),
        keras.layers.RandomContrast(0.2, seed=seed),
    ], name="augment_imagenet_old")


def flip_layer_imagenet(seed):
    """The ``imagenet`` preset with RandomAffine but the flip still a RandomFlip layer."""
    flip, affine, contrast = kzoo.data.augment._layer_seeds(seed, 3)
    return keras.layers.Pipeline([
        keras.layers.RandomFlip("horizontal", seed=flip),
        kzoo.data.augment.RandomAffine(0.05, 0.15, seed=affine),
        keras.layers.RandomContrast(0.2, seed=contrast),
    ], name="augment_imagenet_flip_layer")


VARIANTS = {
    "old": old_imagenet,
    "flip_layer": flip_layer_imagenet,
    "new": lambda seed: kzoo.data.augment.augmentation("imagenet", seed=seed),
    "cast_only": lambda seed: None,
}


def pipeline(augment, size: int, batch: int, pool: int) -> tf.data.Dataset:
    images = np.random.default_rng(SEED).integers(0, 256, (pool, size, size, 3), dtype="uint8")
    dataset = tf.data.Dataset.from_tensor_slices(images).repeat().batch(batch, drop_remainder=True)
    dataset = dataset.map(lambda x: tf.cast(x, "float32"))
    if augment is not None:
        dataset = dataset.map(lambda x: augment(x, training=True),
                              num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def images_per_second(dataset: tf.data.Dataset, warmup: int, batches: int, batch: int) -> float:
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 320])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per measurement")
    parser.add_argument("--warmup", type=int, default=4, help="discarded batches per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pool", type=int, default=64, help="distinct random images per size")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; expected some of {', '.join(VARIANTS)}")

    load_before = os.getloadavg()
    started = time.perf_counter()
    datasets = {(size, name): pipeline(VARIANTS[name](SEED), size, args.batch, args.pool)
                for size in args.sizes for name in variants}
    rates: dict[int, dict[str, list[float]]] = {size: {name: [] for name in variants}
                                                for size in args.sizes}
    for repeat in range(args.repeats):
        order = variants if repeat % 2 == 0 else variants[::-1]
        for size in args.sizes:
            for name in order:
                rate = images_per_second(datasets[size, name], args.warmup, args.batches,
                                         args.batch)
                rates[size][name].append(rate)
                print(f"repeat {repeat + 1}/{args.repeats}  {size:>4} px  {name:<9} "
                      f"{rate:8.1f} images/s", flush=True)

    results = {}
    for size in args.sizes:
        medians = {name: statistics.median(values) for name, values in rates[size].items()}
        row = {"images_per_second": rates[size], "median_images_per_second": medians}
        for base in ("old", "flip_layer"):
            if base in medians and "new" in medians:
                row[f"ratio_new_over_{base}"] = medians["new"] / medians[base]
        results[str(size)] = row

    record = {
        "command": shlex.join(["python", "bench/augment_speed.py", *(sys.argv[1:]
                                                                     if argv is None else argv)]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.perf_counter() - started, 1),
        "variants": {"old": "RandomFlip, RandomRotation(0.05), RandomZoom(0.15), "
                            "RandomContrast(0.2): the imagenet preset before RandomAffine",
                     "flip_layer": "RandomFlip, RandomAffine(0.05, 0.15), RandomContrast(0.2): "
                                   "one warp, the flip still a layer of its own",
                     "new": "kzoo.augmentation('imagenet'): RandomAffine(0.05, 0.15, "
                            "horizontal_flip=True), RandomContrast(0.2): the flip in the warp",
                     "cast_only": "the same pipeline without augmentation"},
        "settings": {"sizes": args.sizes, "batch": args.batch, "batches": args.batches,
                     "warmup": args.warmup, "repeats": args.repeats, "pool": args.pool},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                     "keras": keras.__version__, "backend": keras.backend.backend()},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    for size, row in results.items():
        medians = row["median_images_per_second"]
        line = "  ".join(f"{name} {value:.1f}/s" for name, value in medians.items())
        ratio = "".join(f"  new/{base} {row[f'ratio_new_over_{base}']:.2f}"
                        for base in ("old", "flip_layer") if f"ratio_new_over_{base}" in row)
        print(f"{size} px: {line}{ratio}")
    print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
