"""Make a large class-per-folder image tree out of real photos, for the memory and scale
benchmarks of ``kzoo finetune`` (bench/folder_scale.py builds its folders with it).

    python bench/synthetic_folder.py /tmp/kzoo-scale/folder-20000-seed0 --images 20000 \\
        --data-dir ../shared/data
    python bench/synthetic_folder.py OUT_DIR --images 100000 --data-dir ../shared/data \\
        --seed 0 --val-fraction 0.2

OUT_DIR gets ``train/<class>/*.jpg`` and ``val/<class>/*.jpg``: 12 classes, the ten of CIFAR-10
(read straight from ``cifar10_jpg.zip``) and ants and bees (``hymenoptera_data/``), --images
files in all, the classes as even as the count allows, --val-fraction of each class in ``val/``.
Training files are made from the sources' training images (CIFAR-10 ``train/``, hymenoptera
``train/``), validation files from their held-out ones (``test/``, ``val/``), so no validation
file is a variant of a training file's source.

Each file is one source image, cropped at random (50-100% of each side), flipped left-right half
the time, resized so that its longer side is 160-400 px (the 32x32 CIFAR-10 images are
upsampled), its brightness, contrast and saturation changed by up to 10%, a few pixels set to
random colours, and saved as a JPEG of quality 80-95. A class's sources are used in turn, in a
seeded order, so each is used about equally often (a hymenoptera photo about 50 times for
100,000 files). Two uses of one source, flipped alike, get crops that overlap by less than
--max-overlap (intersection over union, 0.8); the crop is drawn again otherwise. Every file's
bytes are hashed (sha1) as it is written; a file whose hash was seen before is made again with
other random pixels, so no two files have the same bytes.

The same arguments give the same files (with one version of Pillow's JPEG encoder). Two spawned
worker processes (they import only numpy and Pillow) make the files, about 400 a second on two
cores; 100,000 files take about 1 GB and 5 minutes.

The tree is written as OUT_DIR.partial and renamed to OUT_DIR once complete, with
``OUT_DIR/.complete.json`` (the arguments, the counts and a digest of every file's hash) and
``OUT_DIR/.manifest.csv`` (each file's source, size and sha1). Run again with the same arguments:
it says the folder is complete and exits. With other arguments, or on a folder it did not make,
it stops with an error. A killed run leaves OUT_DIR.partial, which the next run removes.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

GENERATOR = 1  # bump when the recipe for a file changes: old folders are then not "complete"
MARKER = ".complete.json"
PARTIAL_MARKER = ".partial.json"
MANIFEST = ".manifest.csv"
CIFAR_ZIP = "cifar10_jpg.zip"
HYMENOPTERA = "hymenoptera_data"
SPLITS = {"train": ("train", "train"), "val": ("test", "val")}  # out split: (CIFAR, hymenoptera)
CROP = (0.5, 1.0)  # fraction of each side kept
LONG_SIDE = (160, 400)
JITTER = 0.1  # brightness, contrast, saturation factors in [1 - JITTER, 1 + JITTER]
QUALITY = (80, 95)
STAMPED_PIXELS = (3, 8)
MAX_DRAWS = 100  # crops drawn for one file before the least overlapping one is taken


# --- sources ---------------------------------------------------------------------------------


def list_sources(data_dir: Path) -> dict[str, dict[str, list[tuple[str, str]]]]:
    """{out split: {class: [(kind, name), ...]}}, kind "zip" (a member of the CIFAR-10 zip) or
    "file" (a path under hymenoptera_data/); names sorted."""
    archive, hymenoptera = data_dir / CIFAR_ZIP, data_dir / HYMENOPTERA
    for path in (archive, hymenoptera):
        if not path.exists():
            raise SystemExit(f"synthetic_folder: {path} not found (--data-dir holds {CIFAR_ZIP} "
                             f"and {HYMENOPTERA}/)")
    sources: dict[str, dict[str, list[tuple[str, str]]]] = {split: {} for split in SPLITS}
    with zipfile.ZipFile(archive) as handle:
        members = sorted(name for name in handle.namelist() if name.lower().endswith(".jpg"))
    for split, (cifar_split, hymenoptera_split) in SPLITS.items():
        for name in members:
            parts = name.split("/")
            if len(parts) == 3 and parts[0] == cifar_split:
                sources[split].setdefault(parts[1], []).append(("zip", name))
        for label in ("ants", "bees"):
            folder = hymenoptera / hymenoptera_split / label
            files = sorted(p for p in folder.iterdir() if not p.name.startswith(".")
                           and p.suffix.lower() in (".jpg", ".jpeg"))
            sources[split][label] = [("file", str(p.relative_to(hymenoptera))) for p in files]
    classes = sorted(sources["train"])
    for split in SPLITS:
        if sorted(sources[split]) != classes or len(classes) != 12:
            raise SystemExit(f"synthetic_folder: expected the same 12 classes in every split of "
                             f"{data_dir}, found {sorted(sources[split])}")
        empty = [label for label, files in sources[split].items() if not files]
        if empty:
            raise SystemExit(f"synthetic_folder: no {split} source images for {empty}")
    return sources


# --- planning: every random choice but the stamped pixels, made here, in one seeded order -------


def class_counts(images: int, classes: list[str], val_fraction: float) -> dict[str, dict[str, int]]:
    """{split: {class: files}}: classes as even as ``images`` allows, ``val_fraction`` of each
    (at least one file) in val."""
    counts: dict[str, dict[str, int]] = {"train": {}, "val": {}}
    for index, label in enumerate(classes):
        total = images // len(classes) + (index < images % len(classes))
        val = min(total - 1, max(1, round(total * val_fraction)))
        counts["train"][label], counts["val"][label] = total - val, val
    return counts


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of box (left, top, width, height) with each of boxes."""
    width = np.clip(np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
                    - np.maximum(box[0], boxes[:, 0]), 0, None)
    height = np.clip(np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
                     - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = width * height
    return inter / (box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter)


def plan(sources, counts, seed: int, max_overlap: float) -> tuple[list[dict], int]:
    """One job (a dict) per output file, and how many crops were drawn again for overlap."""
    rng = np.random.default_rng(seed)
    jobs: list[dict] = []
    redrawn = 0
    for split in SPLITS:
        for label in sorted(counts[split]):
            pool = sources[split][label]
            used: dict[tuple[int, bool], list[np.ndarray]] = {}  # (source, flip): its crop boxes
            order: list[int] = []
            for number in range(counts[split][label]):
                if not order:  # a fresh seeded order of the sources each time round
                    order = list(rng.permutation(len(pool)))
                source = int(order.pop())
                flip = bool(rng.random() < 0.5)
                previous = np.array(used.get((source, flip), np.empty((0, 4))))
                best, best_overlap = None, 2.0
                for _ in range(MAX_DRAWS):
                    width, height = rng.uniform(*CROP, size=2)
                    box = np.array([rng.uniform(0, 1 - width), rng.uniform(0, 1 - height),
                                    width, height])
                    overlap = float(_iou(box, previous).max()) if len(previous) else 0.0
                    if overlap < best_overlap:
                        best, best_overlap = box, overlap
                    if overlap < max_overlap:
                        break
                    redrawn += 1
                used.setdefault((source, flip), []).append(best)
                kind, name = pool[source]
                jobs.append({
                    "path": f"{split}/{label}/{label}-{number:06d}.jpg",
                    "kind": kind, "source": name, "box": [float(v) for v in best], "flip": flip,
                    "long_side": int(rng.integers(LONG_SIDE[0], LONG_SIDE[1] + 1)),
                    "jitter": [float(v) for v in rng.uniform(1 - JITTER, 1 + JITTER, size=3)],
                    "quality": int(rng.integers(QUALITY[0], QUALITY[1] + 1)),
                    "stamp_seed": int(rng.integers(2**62)), "attempt": 0,
                })
    return jobs, redrawn


# --- rendering (in the worker processes) ---------------------------------------------------------

_STATE: dict[str, object] = {}


def _init_worker(data_dir: str, out_dir: str) -> None:
    _STATE.clear()
    _STATE.update(data_dir=Path(data_dir), out_dir=Path(out_dir))


def _open_source(kind: str, name: str) -> Image.Image:
    data_dir = _STATE["data_dir"]
    if kind == "zip":
        if "zip" not in _STATE:
            _STATE["zip"] = zipfile.ZipFile(data_dir / CIFAR_ZIP)
        image = Image.open(io.BytesIO(_STATE["zip"].read(name)))
    else:
        image = Image.open(data_dir / HYMENOPTERA / name)
    image = ImageOps.exif_transpose(image)
    return image.convert("RGB")


def render(job: dict) -> bytes:
    """The JPEG bytes of one planned file."""
    image = _open_source(job["kind"], job["source"])
    width, height = image.size
    left, top, crop_w, crop_h = job["box"]
    x0, y0 = int(left * width), int(top * height)
    x1 = min(width, max(x0 + 1, round((left + crop_w) * width)))
    y1 = min(height, max(y0 + 1, round((top + crop_h) * height)))
    image = image.crop((x0, y0, x1, y1))
    if job["flip"]:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    scale = job["long_side"] / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    for enhancer, factor in zip((ImageEnhance.Brightness, ImageEnhance.Contrast,
                                 ImageEnhance.Color), job["jitter"], strict=True):
        image = enhancer(image).enhance(factor)
    pixels = np.array(image)
    rng = np.random.default_rng([job["stamp_seed"], job["attempt"]])
    count = int(rng.integers(STAMPED_PIXELS[0], STAMPED_PIXELS[1] + 1))
    ys = rng.integers(0, pixels.shape[0], size=count)
    xs = rng.integers(0, pixels.shape[1], size=count)
    pixels[ys, xs] = rng.integers(0, 256, size=(count, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=job["quality"])
    return buffer.getvalue()


def _write(item: tuple[int, dict]) -> tuple[int, str, int, int, int]:
    """Render and write one file: (index, sha1, bytes, width, height)."""
    index, job = item
    data = render(job)
    path = _STATE["out_dir"] / job["path"]
    path.write_bytes(data)
    with Image.open(io.BytesIO(data)) as written:
        width, height = written.size
    return index, hashlib.sha1(data).hexdigest(), len(data), width, height


# --- the folder ----------------------------------------------------------------------------------


def _settings(images: int, seed: int, val_fraction: float, max_overlap: float) -> dict:
    return {"images": images, "seed": seed, "val_fraction": val_fraction,
            "max_overlap": max_overlap, "generator": GENERATOR}


def make_folder(
    out_dir: str | os.PathLike, images: int, data_dir: str | os.PathLike, seed: int = 0,
    val_fraction: float = 0.2, max_overlap: float = 0.8, workers: int = 2,
    progress_every: int = 2000,
) -> dict:
    """Make (or find complete) the synthetic folder ``out_dir``; return its ``.complete.json``
    record plus ``"reused"`` (True when it was already complete)."""
    out_dir, data_dir = Path(out_dir).absolute(), Path(data_dir).absolute()
    if images < 24:
        raise SystemExit("synthetic_folder: --images must be at least 24 (2 a class)")
    if not 0 < val_fraction < 1:
        raise SystemExit("synthetic_folder: --val-fraction must be in (0, 1)")
    settings = _settings(images, seed, val_fraction, max_overlap)
    marker = out_dir / MARKER
    if out_dir.exists():
        if not marker.is_file():
            raise SystemExit(f"synthetic_folder: {out_dir} exists but is not a complete synthetic "
                             f"folder (no {MARKER}); remove it or choose another OUT_DIR")
        record = json.loads(marker.read_text())
        if {key: record.get(key) for key in settings} != settings:
            raise SystemExit(f"synthetic_folder: {out_dir} was made with "
                             f"{ {key: record.get(key) for key in settings} }, not {settings}; "
                             "remove it or choose another OUT_DIR")
        print(f"synthetic_folder: {out_dir} is complete ({record['files']} files, "
              f"{record['bytes'] / 1e6:.0f} MB, made {record['created']}); nothing to do",
              flush=True)
        return {**record, "reused": True}

    partial = out_dir.with_name(out_dir.name + ".partial")
    if partial.exists():
        if not (partial / PARTIAL_MARKER).is_file():
            raise SystemExit(f"synthetic_folder: {partial} exists and is not a partial synthetic "
                             "folder; remove it")
        print(f"synthetic_folder: removing {partial}, left by an interrupted run", flush=True)
        shutil.rmtree(partial)
    started = time.perf_counter()
    sources = list_sources(data_dir)
    classes = sorted(sources["train"])
    counts = class_counts(images, classes, val_fraction)
    jobs, redrawn = plan(sources, counts, seed, max_overlap)
    partial.mkdir(parents=True)
    (partial / PARTIAL_MARKER).write_text(json.dumps(settings) + "\n")
    for split in SPLITS:
        for label in classes:
            (partial / split / label).mkdir(parents=True)
    print(f"synthetic_folder: writing {len(jobs)} files of {len(classes)} classes to {partial} "
          f"with {workers} workers", flush=True)

    rows: list[list] = [None] * len(jobs)  # type: ignore[list-item]
    seen: dict[str, int] = {}
    regenerated = total_bytes = done = 0
    initargs = (str(data_dir), str(partial))
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=initargs) as pool:
        results = pool.imap(_write, enumerate(jobs), chunksize=16)  # in order: deterministic
        for index, digest, size, width, height in results:
            while digest in seen:  # the same bytes as an earlier file: new random pixels
                job = jobs[index]
                job["attempt"] += 1
                regenerated += 1
                if _STATE.get("out_dir") != partial:
                    _init_worker(*initargs)
                index, digest, size, width, height = _write((index, job))
            seen[digest] = index
            rows[index] = [jobs[index]["path"], jobs[index]["source"], digest, size, width, height]
            total_bytes += size
            done += 1
            if done % progress_every == 0 or done == len(jobs):
                elapsed = time.perf_counter() - started
                rate = done / elapsed
                print(f"synthetic_folder: {done}/{len(jobs)} files ({total_bytes / 1e6:.0f} MB), "
                      f"{rate:.0f} files/s, {(len(jobs) - done) / rate / 60:.1f} min left",
                      flush=True)
    if len(seen) != len(jobs):
        raise RuntimeError("synthetic_folder: files are not all distinct")  # cannot happen

    with open(partial / MANIFEST, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "source", "sha1", "bytes", "width", "height"])
        writer.writerows(rows)
    digest = hashlib.sha1("".join(f"{row[0]} {row[2]}\n" for row in rows).encode()).hexdigest()
    record = {
        **settings,
        "files": len(jobs), "bytes": total_bytes, "classes": classes,
        "counts": counts, "sizes": {split: sum(counts[split].values()) for split in SPLITS},
        "sources": {split: {label: len(files) for label, files in sources[split].items()}
                    for split in SPLITS},
        "crops_redrawn_for_overlap": redrawn, "files_regenerated_for_hash": regenerated,
        "content_sha1": digest, "data_dir": str(data_dir),
        "seconds": round(time.perf_counter() - started, 1),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (partial / MARKER).write_text(json.dumps(record, indent=2) + "\n")
    (partial / PARTIAL_MARKER).unlink()
    os.replace(partial, out_dir)
    print(f"synthetic_folder: {out_dir} complete: {len(jobs)} files, {total_bytes / 1e6:.0f} MB, "
          f"all distinct (sha1), in {record['seconds']:.0f}s", flush=True)
    return {**record, "reused": False}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="the folder to make (OUT_DIR.partial while it is made)")
    parser.add_argument("--images", type=int, required=True, help="files in all (train + val)")
    parser.add_argument("--data-dir", default="../shared/data",
                        help=f"holds {CIFAR_ZIP} and {HYMENOPTERA}/ (default ../shared/data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--max-overlap", type=float, default=0.8,
                        help="largest IoU of two crops of one source flipped alike (default 0.8)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    make_folder(args.out_dir, args.images, args.data_dir, seed=args.seed,
                val_fraction=args.val_fraction, max_overlap=args.max_overlap,
                workers=args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
