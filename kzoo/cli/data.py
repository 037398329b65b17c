"""``kzoo audit`` and ``kzoo cache``: image folders before training, and kzoo's cache of them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from kzoo.cli.flags import (
    add,
    add_data_dir,
    add_fields,
    add_image_size,
    add_json,
    add_loudness,
    add_model,
    add_output,
    add_run_dir,
    count,
    given,
    parameter_default,
)

LABEL_OPTIONS = ("backbone", "weights", "image_size", "center_crop", "folds", "seed")
LABELS_BACKBONE = "mobilenet_v2"  # find_label_issues's default (tests/cli checks they agree)


def _audit(args: argparse.Namespace) -> None:
    if args.labels:
        _audit_labels(args)
        return
    from kzoo.data.audit import audit, format_audit
    from kzoo.files import write_json

    report = audit(args.folder, **given(args, ["image_size", "center_crop"]),
                   progress=not args.quiet)
    output = audit_output(args.folder, args.output)
    write_json(output, report)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(format_audit(report))
    for entry in report["duplicates"]["across_splits"][:10]:
        print(f"  duplicate across splits: {'  =  '.join(entry['files'])}")
    print(f"kzoo: audit written to {output}")


def audit_output(folder: str, output: str | None) -> Path:
    """Where ``kzoo audit`` writes audit.json: ``--output`` (a file, or a folder to put it in),
    else the folder's entry in kzoo's cache, beside its scan."""
    if output is None:
        from kzoo.data.manifest import folder_state

        return folder_state(Path(folder).expanduser()) / "audit.json"
    path = Path(output).expanduser()
    return path / "audit.json" if path.is_dir() else path


def _audit_labels(args: argparse.Namespace) -> None:
    from kzoo.cli.training import check_image_folder, check_model

    check_model(args, default=LABELS_BACKBONE)  # before TensorFlow loads
    check_image_folder(args.folder, args.data_dir)
    from kzoo.analysis.labels import find_label_issues

    found = find_label_issues(
        args.folder, **given(args, LABEL_OPTIONS),
        model_options=dict(args.model_options or []) or None, data_dir=args.data_dir,
        run_dir=args.run_dir, progress=not args.quiet)
    print(f"kzoo: {len(found.issues)} of {found.images} images look mislabelled "
          f"(cross-validated accuracy {found.cross_validated_accuracy:.1%}); most confident first:")
    for issue in found.issues[:20]:
        print(f"  {issue.confidence:5.2f}  {issue.given} -> {issue.suggested}  {issue.path}")
    print(f"kzoo: all in {found.run_dir / 'label_issues.csv'}; thumbnails in "
          f"{found.run_dir / 'label_issues.html'}")


def _cache(args: argparse.Namespace) -> None:
    from kzoo.data.cache import cache_entries, cache_size, clear_cache
    from kzoo.data.locations import cache_dir

    if args.action == "clear":
        freed = clear_cache(args.folder)
        print(f"kzoo: freed {freed / 1e6:.1f} MB from {cache_dir()}")
        return
    for entry in cache_entries():
        print(entry["folder"])
        for store in entry["stores"]:
            print(f"  {store['split_framing']:40} {store['bytes'] / 1e6:10.1f} MB  {store['key']}")
    print(f"{cache_dir()}: {cache_size() / 1e6:.1f} MB in all")


def _audit_default(name: str) -> Any:
    """The default of :func:`kzoo.data.audit.audit`, which ``--labels`` shares."""
    from kzoo.data.audit import audit

    return parameter_default(audit, name)


def _labels_default(name: str) -> Any:
    """The default of :func:`kzoo.analysis.labels.find_label_issues` (imported when the help
    is printed: it imports TensorFlow)."""
    from kzoo.analysis.labels import find_label_issues

    return parameter_default(find_label_issues, name)


def add_commands(commands) -> None:
    auditing = commands.add_parser(
        "audit", help="check an image folder before training: counts, skips, duplicates",
        description="Scan FOLDER (decoding every image once, into the cache that training "
        "then reuses) and report images per class and split, the imbalance ratio, skipped "
        "files, byte-identical files within and across splits (leakage), sizes and modes.",
    )
    auditing.add_argument("folder", help="train/ val/ test/ folders of class folders, or class folders")
    add_image_size(auditing, lambda: _audit_default("image_size"))
    add_fields(auditing, ["center_crop"], lambda: {"center_crop": _audit_default("center_crop")})
    add_output(auditing, "audit.json in the folder's entry of kzoo's cache, "
               "$KZOO_CACHE_DIR/folders/ID/ (~/.cache/kzoo unless set); the path is printed",
               metavar="PATH|DIR")
    add_json(auditing)
    labels = auditing.add_argument_group(
        "likely label errors (--labels)", "k-fold cross-validation of a linear head on a "
        "pretrained backbone's features, ranked by confident learning")
    labels.add_argument("--labels", action="store_true",
                        help="find likely label errors: writes label_issues.csv and "
                        "label_issues.html into --run-dir")
    add_model(labels, lambda: _labels_default("backbone"), lambda: _labels_default("weights"))
    add(labels, "--folds", type=count, metavar="K", default=argparse.SUPPRESS,
        shown=lambda: _labels_default("folds"), help="cross-validation folds")
    add_fields(labels, ["seed"], lambda: {"seed": _labels_default("seed")})
    add_data_dir(labels)
    add_run_dir(labels, "runs/labels-FOLDER-TIME")
    add_loudness(auditing)
    auditing.set_defaults(run=_audit)

    caching = commands.add_parser("cache", help="show or free kzoo's cache of decoded images")
    caching.add_argument("action", choices=("list", "clear"),
                         help="list: the cached folders and their sizes; clear: free them")
    caching.add_argument("folder", nargs="?", help="with clear: only this image folder's cache")
    caching.set_defaults(run=_cache)
