"""The audit of a scanned folder: counts, sizes, duplicates, leaks, skipped files."""

from __future__ import annotations

import os
import statistics
from collections import Counter, defaultdict
from typing import Any

from kzoo.data.carve import SMALL_CLASS, carve_validation
from kzoo.data.manifest import FileRecord
from kzoo.data.scan import FolderScan, scan_folder
from kzoo.data.store import Framing

# --- the audit ----------------------------------------------------------------------------------


def audit(folder: str | os.PathLike, *, image_size: int = 224,
          center_crop: float | None = 0.875, progress: bool = False,
          validation_split: float | None = None, seed: int = 0) -> dict[str, Any]:
    """Audit a folder of images (one folder per class, optionally under ``train/``, ``val/``,
    ``test/``): counts per class and split, the imbalance ratio, skipped files with reasons,
    exact duplicates (within a split, and across splits: leakage), image sizes and modes. The
    folder is scanned once (and cached) at ``image_size`` and ``center_crop``, as
    ``kzoo audit`` and fine-tuning scan it. With ``validation_split`` (and ``seed``), a folder
    without ``val/`` is audited with the validation split that training carves from it.

    >>> report = kzoo.audit("photos/")
    >>> report["duplicates"]["across_splits"]
    """
    side = int(image_size)
    scan = scan_folder(folder, Framing((side, side), 3, center_crop), progress=progress)
    if validation_split is not None and "validation" not in scan.parts:
        scan = carve_validation(scan, validation_split, seed)
    return audit_scan(scan)


def audit_scan(scan: FolderScan) -> dict[str, Any]:
    """The audit of a folder already scanned (:func:`audit`): counts per class and split, the imbalance ratio, skipped files with reasons, exact
    duplicates (within a split, and across splits: leakage), image sizes and modes."""
    ok = [r for r in scan.records if r.status == "ok"]
    counts = {split: dict.fromkeys(scan.class_names, 0) for split in scan.parts}
    for record in ok:
        counts.setdefault(record.split, dict.fromkeys(scan.class_names, 0))[record.label] += 1
    train = [v for v in counts.get("train", {}).values()]
    imbalance = (max(train) / min(train)) if train and min(train) > 0 else None
    by_hash: dict[str, list[FileRecord]] = defaultdict(list)
    for record in ok:
        by_hash[record.sha256].append(record)
    within, across = [], []
    for group in by_hash.values():
        if len(group) < 2:
            continue
        entry = {"sha256": group[0].sha256, "files": [f"{r.path}" for r in group],
                 "splits": sorted({r.split for r in group})}
        (across if len(entry["splits"]) > 1 else within).append(entry)
    leaked = Counter()
    for group in by_hash.values():
        if len({r.split for r in group}) > 1 and any(r.split == "train" for r in group):
            leaked.update(r.split for r in group if r.split != "train")

    def spread(values: list[int]) -> dict[str, float] | None:
        return ({"min": min(values), "median": statistics.median(values), "max": max(values)}
                if values else None)

    return {
        "folder": str(scan.folder),
        "class_names": scan.class_names,
        "splits": {split: {"images": sum(c.values()), "per_class": c} for split, c in counts.items()},
        "test_split": "test" in scan.parts,
        "validation_carved": scan.carved,
        "small_classes": {split: {name: n for name, n in c.items() if n < SMALL_CLASS}
                          for split, c in counts.items()
                          if any(n < SMALL_CLASS for n in c.values())},
        "imbalance_ratio": round(imbalance, 3) if imbalance else None,
        "skipped": [{"path": r.path, "reason": r.reason} for r in scan.records if r.status != "ok"],
        "duplicates": {"within_split": within, "across_splits": across,
                       "leaked_images": dict(leaked)},
        "width": spread([r.width for r in ok]),
        "height": spread([r.height for r in ok]),
        "modes": dict(Counter(r.mode for r in ok)),
        "scan": scan.stats.to_dict(),
    }


def audit_warnings(report: dict[str, Any]) -> list[str]:
    """The audit's findings worth a warning, each with its numbers."""
    warnings = []
    for split, count in sorted(report["duplicates"]["leaked_images"].items()):
        carved = split == "validation" and report.get("validation_carved")
        where = ("the validation split carved from the training images" if carved
                 else {"validation": "val/", "test": "test/"}.get(split, split))
        warnings.append(f"{count} image{'s' if count != 1 else ''} of {where} "
                        f"{'are' if count != 1 else 'is'} byte-identical to "
                        f"{'other training images' if carved else 'images of train/'} "
                        "(listed in audit.json)")
    small = report.get("small_classes") or {}
    if small:
        listed = "; ".join(f"{split}: " + ", ".join(f"{name} {n}" for name, n in c.items())
                           for split, c in small.items())
        warnings.append(f"classes with fewer than {SMALL_CLASS} images in a split, whose "
                        f"figures there mean little ({listed}); add images")
    within = report["duplicates"]["within_split"]
    if within:
        extra = sum(len(entry["files"]) - 1 for entry in within)
        warnings.append(f"{extra} duplicate file{'s' if extra != 1 else ''} within a split "
                        f"({len(within)} groups, listed in audit.json)")
    ratio = report["imbalance_ratio"]
    if ratio and ratio >= 3:
        warnings.append(f"classes are imbalanced: the largest training class has {ratio:.1f}x "
                        "the images of the smallest (consider --class-weight balanced)")
    if not report["test_split"]:
        warnings.append("no test/ folder: there is no test split, and the validation figures "
                        "are the only held-out ones")
    return warnings


def format_audit(report: dict[str, Any], limit: int = 12) -> str:
    """The audit as a short table and its warnings."""
    names = report["class_names"]
    splits = list(report["splits"])
    width = max([len(n) for n in names] + [5])
    lines = [f"{'class':{width}}  " + "  ".join(f"{s:>10}" for s in splits)]
    for name in names[:limit]:
        lines.append(f"{name:{width}}  " + "  ".join(
            f"{report['splits'][s]['per_class'][name]:>10}" for s in splits))
    if len(names) > limit:
        lines.append(f"... and {len(names) - limit} more classes")
    lines.append(f"{'total':{width}}  " + "  ".join(f"{report['splits'][s]['images']:>10}"
                                                    for s in splits))
    if report["imbalance_ratio"]:
        lines.append(f"imbalance ratio (train, largest/smallest class): "
                     f"{report['imbalance_ratio']:.2f}")
    if report["width"]:
        w, h = report["width"], report["height"]
        lines.append(f"image sizes: width {w['min']}/{w['median']:g}/{w['max']}, height "
                     f"{h['min']}/{h['median']:g}/{h['max']} (min/median/max); modes "
                     + ", ".join(f"{m} {c}" for m, c in sorted(report["modes"].items())))
    lines.append(f"files skipped: {len(report['skipped'])}")
    lines += [f"warning: {text}" for text in audit_warnings(report)]
    return "\n".join(lines)



