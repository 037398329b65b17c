"""A fine-tuning run's report: ``report.html`` and its pictures, for people to look at.

fastai's "interpretation" in one page: training curves, the confusion matrix, per-class
precision and recall, and the validation images with the highest loss, as pictures (what the
model saw, at its input size). The pictures are PNG files in ``report/`` next to the page, so
the run directory can be copied or served as it is. Plots use matplotlib's object API (no
pyplot, no global state), so writing a report never opens a window.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from kzoo.analysis.explain import grad_cam, overlay
from kzoo.data.images import Skipped
from kzoo.errors import KzooError

if TYPE_CHECKING:
    import keras

    from kzoo.data.pipeline import Examples

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.name, th.name { text-align: left; }
img.plot { max-width: 100%; height: auto; }
.losses { display: flex; flex-wrap: wrap; gap: 1em; }
.losses figure { margin: 0; width: 24.5em; font-size: 0.8em; overflow-wrap: anywhere; }
.losses img { width: 12em; height: 12em; object-fit: contain; background: #eee; }
.wrong { color: #b00; } .muted { color: #777; } code { font-size: 0.9em; }
"""


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def plot_history(history: Mapping[str, Sequence], path: Path) -> None:
    """Loss and accuracy per epoch, training and validation, with the phases marked."""
    figure = _figure(10, 3.8)
    epochs = list(history.get("epoch", []))
    phases = list(history.get("phase", []))
    for axis, key in zip(figure.subplots(1, 2), ("loss", "accuracy")):
        for name, style in ((key, "-o"), (f"val_{key}", "-s")):
            values = history.get(name, [])
            if len(values):
                label = "validation" if name.startswith("val_") else "training"
                axis.plot(epochs, values, style, markersize=3, label=label)
        for index in range(1, len(phases)):
            if phases[index] != phases[index - 1]:
                axis.axvline(epochs[index] - 0.5, color="gray", linestyle="--", linewidth=1)
                axis.text(epochs[index] - 0.4, 0.02, phases[index], transform=axis.get_xaxis_transform(),
                          color="gray", fontsize=8)
        axis.set_xlabel("epoch")
        axis.set_title(key)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.savefig(path)


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: Path) -> None:
    """The confusion matrix as a heat map, counts written in the cells where they fit."""
    matrix = np.asarray(matrix)
    count = len(class_names)
    side = min(max(3.5, 0.45 * count + 2), 16)
    figure = _figure(side + 1, side)
    axis = figure.subplots()
    shown = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(shown, ax=axis, shrink=0.8)
    ticks = np.arange(count)
    labels = [str(name) for name in class_names]
    axis.set_xticks(ticks, labels, rotation=45 if count > 4 else 0, ha="right" if count > 4 else "center")
    axis.set_yticks(ticks, labels)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    if count <= 25:
        threshold = matrix.max() / 2 if matrix.size else 0
        for (row, column), value in np.ndenumerate(matrix):
            axis.text(column, row, str(value), ha="center", va="center",
                      color="white" if value > threshold else "black")
    figure.savefig(path)


def plot_per_class(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Precision and recall of each class, side by side."""
    count = len(rows)
    figure = _figure(min(max(5, 0.5 * count + 2), 18), 3.5)
    axis = figure.subplots()
    positions = np.arange(count)
    axis.bar(positions - 0.2, [row["precision"] for row in rows], 0.4, label="precision")
    axis.bar(positions + 0.2, [row["recall"] for row in rows], 0.4, label="recall")
    axis.set_xticks(positions, [row["class"] for row in rows], rotation=45 if count > 6 else 0,
                    ha="right" if count > 6 else "center")
    axis.set_ylim(0, 1.05)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(loc="lower right")
    figure.savefig(path)


def top_losses(labels: np.ndarray, probabilities: np.ndarray, count: int) -> list[int]:
    """Indices of the ``count`` examples with the highest loss, highest first."""
    probabilities = np.asarray(probabilities)
    picked = probabilities[np.arange(len(labels)), np.asarray(labels)]
    losses = -np.log(np.clip(picked, 1e-12, 1.0))
    return [int(i) for i in np.argsort(-losses, kind="stable")[:count]]


def _table(header: Sequence[str] | None, rows: Sequence[Sequence[Any]], names: int = 1) -> str:
    def cell(tag: str, index: int, value: Any) -> str:
        kind = ' class="name"' if index < names else ""
        return f"<{tag}{kind}>{html.escape(str(value))}</{tag}>"

    head = "".join(cell("th", i, value) for i, value in enumerate(header or ()))
    body = "".join(
        "<tr>" + "".join(cell("td", i, value) for i, value in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


def _kept_model(metrics: Mapping[str, Any]) -> str:
    kept = metrics.get("kept_epoch")
    if not kept:
        return "the last epoch"
    if metrics.get("finetune", {}).get("keep_best", True):
        return f"epoch {kept['epoch']} ({kept['phase']}), the best validation epoch"
    return f"epoch {kept['epoch']} ({kept['phase']}), the last (--keep-last)"


def _heatmaps(model, validation: Examples, indices: Sequence[int]):
    """Grad-CAM heatmaps of the validation images at ``indices`` for the predicted class, and
    a sentence for the page; ``None`` and why not where there are none."""
    if model is None or not len(indices):
        return None, ""
    images = np.stack([validation.image(index) for index in indices]).astype("float32")
    try:
        heatmaps, _ = grad_cam(model, images)
    except KzooError as error:
        return None, f"No Grad-CAM heatmaps: {html.escape(str(error))}."
    return heatmaps, ("Beside each image, its Grad-CAM heatmap: where the model looked for the "
                      "class it predicted (red: most).")


def _picture(source: str, alt: str, css: str = "plot") -> str:
    return f'<img class="{css}" src="{html.escape(source)}" alt="{html.escape(alt)}">'


def write_report(
    run_dir: str | os.PathLike,
    *,
    validation: Examples,
    probabilities: np.ndarray,
    history: Mapping[str, Sequence],
    metrics: Mapping[str, Any],
    skipped: Sequence[Skipped] = (),
    title: str = "kzoo run",
    losses_shown: int = 12,
    model: keras.Model | None = None,
) -> Path:
    """Write ``report.html`` and its pictures (in ``report/``) into ``run_dir``; its path.

    ``metrics`` is a run's ``metrics.json`` content: ``class_names`` and, under
    ``validation``, the output of :func:`kzoo.analysis.evaluation.classification_metrics`. With
    ``model``, each top-loss image is shown with its Grad-CAM heatmap for the predicted class.
    """
    run_dir = Path(run_dir)
    pictures = run_dir / "report"
    pictures.mkdir(parents=True, exist_ok=True)
    class_names = list(metrics["class_names"])
    scores = metrics["validation"]
    matrix = np.asarray(scores["confusion_matrix"])

    plot_history(history, pictures / "curves.png")
    plot_confusion_matrix(matrix, class_names, pictures / "confusion_matrix.png")
    plot_per_class(scores["per_class"], pictures / "per_class.png")
    worst = top_losses(validation.labels, probabilities, losses_shown)
    heatmaps, heatmap_note = _heatmaps(model, validation, worst)
    tiles = []
    for rank, index in enumerate(worst, start=1):
        name = f"top_loss_{rank:02d}.png"
        image = validation.image(index)
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(pictures / name)
        heatmap = ""
        if heatmaps is not None:
            Image.fromarray(overlay(image, heatmaps[rank - 1])).save(
                pictures / f"top_loss_{rank:02d}_gradcam.png")
            heatmap = _picture(f"report/top_loss_{rank:02d}_gradcam.png",
                               f"Grad-CAM heatmap of validation image {rank}", "tile")
        truth = int(validation.labels[index])
        guess = int(np.argmax(probabilities[index]))
        loss = -math.log(max(float(probabilities[index][truth]), 1e-12))
        verdict = "wrong" if guess != truth else ""
        tiles.append(
            "<figure>" + _picture(f"report/{name}", f"validation image {rank}", "tile")
            + heatmap + f'<figcaption class="{verdict}">true <b>{html.escape(class_names[truth])}</b>, '
            f"predicted <b>{html.escape(class_names[guess])}</b> "
            f"({float(probabilities[index][guess]):.2f}), loss {loss:.2f}<br>"
            f'<span class="muted">{html.escape(Path(validation.paths[index]).name)}</span>'
            "</figcaption></figure>"
        )

    summary = [
        ("validation accuracy", f"{scores['accuracy']:.4f}"),
        ("validation loss", f"{scores['loss']:.4f}"),
        ("validation images", scores["examples"]),
    ]
    if metrics.get("test_split") == "test":
        summary.append(("test accuracy", f"{metrics['test_accuracy']:.4f}"))
    else:
        no_test = ("none: the folder has no test/ split, so the validation figures above are "
                   "the only held-out ones")
        summary.append(("test accuracy", no_test))
    summary.append(("model kept", _kept_model(metrics)))
    summary += [
        ("classes", ", ".join(class_names)),
        ("images per split", ", ".join(
            f"{k} {v}" for k, v in metrics.get("sizes", {}).items()
            if k != "test" or metrics.get("test_split") == "test"
        )),
        ("files skipped", len(skipped)),
        ("backbone", metrics.get("model", "")),
        ("seed", metrics.get("seed", "")),
        ("wall time", f"{metrics.get('wall_time_s', 0):.0f} s"),
    ]
    per_class = [
        (row["class"], f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}",
         row["support"])
        for row in scores["per_class"]
    ]
    confusion_rows = [(name, *row) for name, row in zip(class_names, matrix.tolist())]
    skipped_html = (
        _table(["file", "reason"], [(s.path, s.reason) for s in skipped], names=2)
        if skipped else "<p>None: every file decoded.</p>"
    )
    settings = metrics.get("finetune", {})
    corner = "true \\ predicted"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<h2 id="summary">Summary</h2>
{_table(None, summary, names=1)}
<h2 id="curves">Training curves</h2>
<p>Phase one trains the head on the frozen backbone; phase two fine-tunes its top layers.</p>
{_picture("report/curves.png", "loss and accuracy per epoch")}
<h2 id="confusion">Confusion matrix (validation)</h2>
{_picture("report/confusion_matrix.png", "confusion matrix")}
{_table([corner, *class_names], confusion_rows)}
<h2 id="per-class">Per-class precision and recall (validation)</h2>
{_picture("report/per_class.png", "precision and recall per class")}
{_table(["class", "precision", "recall", "F1", "images"], per_class)}
<h2 id="top-losses">Validation images with the highest loss</h2>
<p>As the model saw them (framed and resized to its input); captions in red are wrong predictions.
{heatmap_note}</p>
<div class="losses">{"".join(tiles)}</div>
<h2 id="skipped">Files skipped</h2>
{skipped_html}
<h2 id="settings">Settings</h2>
{_table(["setting", "value"], sorted((k, v) for k, v in settings.items()), names=1)}
<p class="muted">kzoo {html.escape(str(metrics.get("versions", {}).get("kzoo", "")))}</p>
</body></html>
"""
    path = run_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
