"""Threads or processes for the first scan of an image folder? Times decoding the same image
files (read, hash, decode, frame to 224x224 with the 0.875 centre crop: kzoo.data.images.decode_file)
with one thread, with a thread per core, and with a process per core (spawned workers, the
pixels sent back), interleaved and repeated; then a whole first scan (kzoo.data.scan.scan_folder,
which also writes the image store) with a thread per core. Writes
bench/results/decode_workers.json.

    python bench/synthetic_folder.py /tmp/kzoo-scale/folder-20000-seed0 --images 20000
    python bench/decode_workers.py /tmp/kzoo-scale/folder-20000-seed0 --files 3000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZE, CROP = (224, 224), 0.875


def decode(path: str):
    from kzoo.data.images import UnreadableImage, decode_file

    try:
        return decode_file(path, SIZE, 3, CROP).pixels
    except UnreadableImage:
        return None


def timed_map(pool_kind: str, workers: int, files: list[str]) -> float:
    """Images a second, pool start included."""
    started = time.perf_counter()
    if pool_kind == "thread":
        with ThreadPoolExecutor(workers) as pool:
            done = sum(1 for pixels in pool.map(decode, files) if pixels is not None)
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            done = sum(1 for pixels in pool.map(decode, files, chunksize=16) if pixels is not None)
    return done / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=str(HERE / "results" / "decode_workers.json"))
    args = parser.parse_args()

    from kzoo.data.images import list_image_files
    from kzoo.data.scan import scan_folder
    from kzoo.data.store import Framing

    files = sorted(str(p) for p in list_image_files(Path(args.folder) / "train")[0])
    files = files[::max(1, len(files) // args.files)][:args.files]
    cores = os.cpu_count() or 1
    variants = {"1 thread": ("thread", 1), f"{cores} threads": ("thread", cores),
                f"{cores} processes": ("process", cores)}
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        order = list(variants) if repeat % 2 == 0 else list(reversed(variants))
        for name in order:
            rates[name].append(timed_map(*variants[name], files))
            print(f"{name}: {rates[name][-1]:.0f} images/s", flush=True)
    os.environ["KZOO_CACHE_DIR"] = tempfile.mkdtemp(prefix="kzoo-decode-bench-")
    scan = scan_folder(args.folder, Framing(SIZE, 3, CROP), progress=False, splits=["train"])
    medians = {name: statistics.median(values) for name, values in rates.items()}
    record = {
        "benchmark": "decode_workers",
        "command": f"python bench/decode_workers.py {args.folder} --files {args.files} "
                   f"--repeats {args.repeats}",
        "files": len(files), "framing": {"size": SIZE, "center_crop": CROP},
        "images_per_s": rates, "median_images_per_s": medians,
        "ratios_to_1_thread": {name: round(value / medians["1 thread"], 2)
                               for name, value in medians.items()},
        "first_scan": scan.stats.to_dict(),
        "machine": {"platform": platform.platform(), "cpus": cores,
                    "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.output).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({"median_images_per_s": medians, "first_scan": record["first_scan"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
