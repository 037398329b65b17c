"""``kzoo predict``, ``kzoo evaluate``, ``kzoo export`` and ``kzoo explain``: using a trained
run."""

from __future__ import annotations

import argparse
import csv
import json
import sys

from kzoo.cli.flags import (
    add_fields,
    add_format,
    add_json,
    add_loudness,
    add_output,
    add_top_k,
    given,
    parameter_default,
)


def _print_predictions(results, output_format: str, top_k: int) -> None:
    if output_format == "json":
        print(json.dumps([r.to_dict() for r in results], indent=2))
        return
    if output_format == "csv":
        writer = csv.writer(sys.stdout)
        header = ["path"]
        for rank in range(1, top_k + 1):
            header += [f"class_{rank}", f"probability_{rank}"]
        writer.writerow(header + ["error"])
        for result in results:
            cells = [cell for name, p in result.top for cell in (name, f"{p:.6f}")]
            cells += [""] * (2 * top_k - len(cells))
            writer.writerow([result.path, *cells, result.error or ""])
        return
    width = max([len(r.path) for r in results] + [4])
    print(f"{'file':{width}}  predictions")
    for result in results:
        shown = ("unreadable: " + result.error if result.error
                 else "  ".join(f"{name} {p:.3f}" for name, p in result.top))
        print(f"{result.path:{width}}  {shown}")


def _tta_default() -> dict[str, str]:
    """``--tta``'s default: :func:`kzoo.analysis.inference.predict`'s (and ``evaluate``'s)."""
    from kzoo.analysis.inference import predict

    return {"tta": parameter_default(predict, "tta")}


def _predict(args: argparse.Namespace) -> None:
    from kzoo.analysis.inference import predict

    results = predict(args.run_dir, args.images, top_k=args.top_k, **given(args, ["tta"]))
    _check_some_read([(r.path, r.error) for r in results], args.images)
    _print_predictions(results, args.format, args.top_k)
    _report_failed(sum(1 for r in results if r.error), len(results))


def _check_some_read(outcomes: list[tuple[str, str | None]], inputs: list[str]) -> None:
    """An error (exit 2) where no image could be read: naming the first file and its reason."""
    from kzoo.errors import KzooError

    if not outcomes:
        raise KzooError(f"found no image files in {', '.join(map(repr, inputs))}; pass image "
                        "files or folders that hold images")
    if all(error for _, error in outcomes):
        path, error = outcomes[0]
        more = f" (and the {len(outcomes) - 1} other files given)" if len(outcomes) > 1 else ""
        raise KzooError(f"no image could be read: {path!r}: {error}{more}; pass image files "
                        "or folders that hold images")


def _report_failed(failed: int, total: int) -> None:
    if failed:
        print(f"kzoo: {failed} of {total} files could not be read (listed above)",
              file=sys.stderr)


def _evaluate(args: argparse.Namespace) -> None:
    import numpy as np

    from kzoo.analysis.evaluation import format_confusion_matrix, format_per_class
    from kzoo.analysis.inference import evaluate

    metrics = evaluate(args.run_dir, args.folder, **given(args, ["tta"]))
    if args.json:
        print(json.dumps(metrics, indent=2))
        return
    print(f"accuracy {metrics['accuracy']:.4f}  loss {metrics['loss']:.4f}  "
          f"on {metrics['examples']} images of {metrics['folder']}")
    print(format_confusion_matrix(np.asarray(metrics["confusion_matrix"]), metrics["class_names"]))
    print(format_per_class(metrics["per_class"]))
    if metrics["skipped"]:
        from kzoo.data.images import Skipped, describe_skipped

        print(describe_skipped([Skipped(**s) for s in metrics["skipped"]], root=args.folder))


def _export(args: argparse.Namespace) -> None:
    from kzoo.analysis.export import export

    print(export(args.run_dir, format=args.format, output=args.output))


def _explain(args: argparse.Namespace) -> None:
    from kzoo.analysis.explain import explain

    results = explain(args.run_dir, args.images, output=args.output, top_k=args.top_k,
                      class_name=args.class_name)
    _check_some_read([(image, error) for image, _, error in results], args.images)
    for image, png, error in results:
        print(f"{image}: {png}" if png else f"{image}: not explained ({error})")
    _report_failed(sum(1 for _, png, _ in results if png is None), len(results))


def _add_run(parser, images: bool = False) -> None:
    parser.add_argument("run_dir", help="a run directory (or a .keras file)")
    if images:
        parser.add_argument("images", nargs="+", help="image files or folders")


def add_commands(commands) -> None:
    predicting = commands.add_parser("predict", help="classify images with a trained run")
    _add_run(predicting, images=True)
    add_top_k(predicting)
    add_format(predicting, ("table", "json", "csv"), "table")
    add_fields(predicting, ["tta"], _tta_default)
    add_loudness(predicting)
    predicting.set_defaults(run=_predict)

    evaluating = commands.add_parser("evaluate", help="evaluate a trained run on a labelled folder")
    _add_run(evaluating)
    evaluating.add_argument("folder", help="a folder of class folders named as the model's classes")
    add_json(evaluating)
    add_fields(evaluating, ["tta"], _tta_default)
    add_loudness(evaluating)
    evaluating.set_defaults(run=_evaluate)

    exporting = commands.add_parser("export", help="export a trained run's model")
    _add_run(exporting)
    add_format(exporting, ("keras", "saved_model", "tflite", "onnx"), "keras")
    add_output(exporting, "RUN_DIR/export/")
    add_loudness(exporting)
    exporting.set_defaults(run=_export)

    explaining = commands.add_parser(
        "explain", help="Grad-CAM heatmaps: where the model looked in each image",
        description="One PNG per image (the image, the Grad-CAM heatmap over it, the top "
        "classes), written into RUN/explain/ (or --output).")
    _add_run(explaining, images=True)
    add_output(explaining, "RUN_DIR/explain/", metavar="FOLDER")
    add_top_k(explaining)
    explaining.add_argument("--class", dest="class_name", metavar="NAME",
                            help="explain this class (default: each image's most probable)")
    add_loudness(explaining)
    explaining.set_defaults(run=_explain)
