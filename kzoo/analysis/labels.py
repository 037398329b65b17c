"""Likely label errors in an image folder, by confident learning (Northcutt, Jiang and Chuang,
"Confident Learning: Estimating Uncertainty in Dataset Labels", JAIR 2021), on out-of-fold
predictions.

1. A pretrained backbone's pooled features of every labelled image, computed once
   (:mod:`kzoo.analysis.features`).
2. k-fold cross-validation, folds stratified by class: a linear softmax head trained on the
   features of k - 1 folds predicts the k-th, so every image gets probabilities from a model
   that never saw its label.
3. Each class j gets a threshold t_j, the mean predicted probability of j over the images
   labelled j (the model's self-confidence in that class). Of the classes k whose
   probability reaches t_k, the most probable is the image's confident class. An image whose
   confident class is not its label lies off the diagonal of the confident joint: a likely
   label error, with the confident class as the suggested label.
4. The flagged images are ranked by the normalized margin p(suggested) - p(given): how
   confidently the out-of-fold model disagrees with the label.

>>> audit = find_label_issues("photos/", backbone="mobilenet_v2", weights="imagenet")
>>> audit.issues[0]          # the most confident disagreement
"""

from __future__ import annotations

import html
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kzoo.errors import KzooError

FOLDS = 5


@dataclass
class LabelIssue:
    """An image whose label the out-of-fold model confidently disagrees with."""

    path: str
    split: str
    given: str
    suggested: str
    confidence: float  # p(suggested) - p(given), out of fold
    given_probability: float
    suggested_probability: float


@dataclass
class LabelAudit:
    """What :func:`find_label_issues` found, and where it wrote it."""

    issues: list[LabelIssue]
    images: int
    class_names: list[str]
    thresholds: list[float]
    cross_validated_accuracy: float
    run_dir: Path | None = None
    details: dict[str, Any] = field(default_factory=dict)


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number (0 to ``folds - 1``) per example, each class spread evenly over the
    folds in a seeded random order."""
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        assignment[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)  # classes smaller than k do not all start in fold 0
    return assignment


def linear_head_probabilities(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                              num_classes: int, seed: int, epochs: int = 40,
                              min_steps: int = 500, batch_size: int = 64) -> np.ndarray:
    """A linear softmax head (standardized features, light L2) trained on ``train_x`` for
    ``epochs``, or at least ``min_steps`` steps on a small folder, in one pass over a shuffled,
    repeated dataset: its probabilities of ``test_x``."""
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    normalize = keras.layers.Normalization()
    normalize.adapt(train_x)
    head = keras.Sequential([
        keras.Input(train_x.shape[1:]), normalize,
        keras.layers.Dense(num_classes, activation="softmax",
                           kernel_regularizer=keras.regularizers.L2(1e-3)),
    ])
    head.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    steps = max(epochs * math.ceil(len(train_x) / batch_size), min_steps)
    batches = (tf.data.Dataset.from_tensor_slices((train_x, train_y))
               .shuffle(len(train_x), seed=seed).repeat().batch(batch_size))
    head.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    return np.asarray(head.predict(test_x, batch_size=1024, verbose=0), dtype="float64")


def out_of_fold_probabilities(features: np.ndarray, labels: np.ndarray, num_classes: int,
                              folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Each example's class probabilities from the linear head trained without its fold."""
    if len(labels) < folds:
        raise KzooError(f"{len(labels)} labelled images are too few for {folds}-fold "
                        f"cross-validation; label at least {folds}")
    assignment = stratified_folds(labels, folds, seed)
    probabilities = np.zeros((len(labels), num_classes))
    for fold in range(folds):
        held = assignment == fold
        probabilities[held] = linear_head_probabilities(
            features[~held], labels[~held], features[held], num_classes, seed + fold)
    return probabilities


def confident_learning(probabilities: np.ndarray, labels: np.ndarray,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The likely label errors (indices, most confident first), their suggested labels and
    margins, and the per-class thresholds; see the module doc."""
    num_classes = probabilities.shape[1]
    thresholds = np.array([probabilities[labels == j, j].mean() if np.any(labels == j) else 1.0
                           for j in range(num_classes)])
    reaching = probabilities >= thresholds[None, :] - 1e-12
    masked = np.where(reaching, probabilities, -1.0)
    confident = masked.argmax(axis=1)
    has_confident = reaching.any(axis=1)
    flagged = np.flatnonzero(has_confident & (confident != labels))
    rows = np.arange(len(labels))
    margins = probabilities[rows, confident] - probabilities[rows, labels]
    order = flagged[np.argsort(-margins[flagged], kind="stable")]
    return order, confident[order], margins[order], thresholds


def find_label_issues(
    folder: str | os.PathLike,
    *,
    backbone: str = "mobilenet_v2",
    weights: Any = "imagenet",
    image_size: int = 224,
    center_crop: float | None = 0.875,
    model_options: dict[str, Any] | None = None,
    folds: int = FOLDS,
    seed: int = 0,
    batch_size: int = 32,
    data_dir: str | os.PathLike | None = None,
    run_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> LabelAudit:
    """Find likely label errors among every labelled image of ``folder`` (all its splits);
    writes ``label_issues.csv``, ``label_issues.html`` and ``labels.json`` into ``run_dir``
    (default ``runs/labels-FOLDER-TIME``) and returns them as a :class:`LabelAudit`."""
    from kzoo.analysis.features import backbone_features, pooled_features_model
    from kzoo.data.datasets import data_dirs, find_image_folder
    from kzoo.data.locations import scratch_dir
    from kzoo.data.pipeline import Examples
    from kzoo.data.scan import scan_folder
    from kzoo.data.store import Framing
    from kzoo.files import write_json
    from kzoo.models.registry import build, get_spec
    from kzoo.models.weights import search_weights_in

    folders = data_dirs(data_dir)
    root = find_image_folder(str(folder), folders)
    if not root.is_dir():
        raise KzooError(f"image folder {str(folder)!r} does not exist; pass a folder of class "
                        "folders (or train/ val/ folders of them)")
    if "pretrained" not in get_spec(backbone).tags:
        raise KzooError(f"--backbone {backbone!r} is not a pretrained backbone; pick one from "
                        "`kzoo list --tag pretrained`")
    run_dir = Path(run_dir) if run_dir else Path("runs") / (
        f"labels-{root.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise KzooError(f"run directory {str(run_dir)!r} already exists and is not empty; "
                        "choose another --run-dir")
    keras.utils.set_random_seed(seed)
    scan = scan_folder(root, Framing((image_size, image_size), 3, center_crop), progress=progress)
    names = list(scan.class_names)
    with search_weights_in(data_dir, *folders):
        model = build(backbone, num_classes=len(names), weights=weights,
                      input_shape=(image_size, image_size, 3), **(model_options or {}))
    extractor = pooled_features_model(model)
    parts, feature_rows, started = [], [], time.perf_counter()
    scratch = scratch_dir()
    try:
        for split, part in scan.parts.items():
            examples = Examples.from_scan(part)
            if len(examples):
                rows = backbone_features(extractor, examples, batch_size, None,
                                         scratch / f"{split}.f16")
                feature_rows.append(rows.read_all().astype("float32"))
                parts.append((split, examples))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    features = np.concatenate(feature_rows)
    labels = np.concatenate([examples.labels for _, examples in parts]).astype("int64")
    where = [(split, index) for split, examples in parts for index in range(len(examples))]
    features_s = time.perf_counter() - started
    if progress:
        print(f"kzoo: backbone features of {len(labels)} images in {features_s:.0f}s; "
              f"{folds}-fold cross-validation of a linear head")
    probabilities = out_of_fold_probabilities(features, labels, len(names), folds, seed)
    order, suggested, margins, thresholds = confident_learning(probabilities, labels)
    examples_of = dict(parts)
    issues = []
    for index, better, margin in zip(order, suggested, margins):
        split, position = where[index]
        issues.append(LabelIssue(
            examples_of[split].paths[position], split, names[labels[index]], names[better],
            round(float(margin), 4), round(float(probabilities[index, labels[index]]), 4),
            round(float(probabilities[index, better]), 4)))
    accuracy = float(np.mean(probabilities.argmax(1) == labels))
    audit = LabelAudit(issues, len(labels), names, [round(float(t), 4) for t in thresholds],
                       round(accuracy, 4), run_dir,
                       {"backbone": backbone, "folds": folds, "seed": seed,
                        "image_size": image_size, "features_s": round(features_s, 1),
                        "folder": str(root)})
    run_dir.mkdir(parents=True, exist_ok=True)
    write_issues_csv(issues, run_dir / "label_issues.csv")
    write_issues_page(audit, examples_of, where, order, run_dir)
    write_json(run_dir / "labels.json", {
        "images": audit.images, "flagged": len(issues), "class_names": names,
        "thresholds": audit.thresholds,
        "cross_validated_accuracy": audit.cross_validated_accuracy, **audit.details})
    return audit


def write_issues_csv(issues: list[LabelIssue], path: Path) -> None:
    from kzoo.files import write_csv

    write_csv(path, ["file", "split", "given_label", "suggested_label", "confidence",
                     "given_probability", "suggested_probability"],
              ([issue.path, issue.split, issue.given, issue.suggested, issue.confidence,
                issue.given_probability, issue.suggested_probability] for issue in issues))


def write_issues_page(audit: LabelAudit, examples_of, where, order, run_dir: Path,
                      shown: int = 200) -> Path:
    """``label_issues.html``: a thumbnail of each flagged image (the first ``shown``), its
    given and suggested labels and the confidence; thumbnails in ``label_issues/``."""
    from PIL import Image

    pictures = run_dir / "label_issues"
    pictures.mkdir(exist_ok=True)
    tiles = []
    for rank, (issue, index) in enumerate(zip(audit.issues[:shown], order[:shown]), start=1):
        split, position = where[index]
        image = examples_of[split].image(position)
        thumbnail = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        thumbnail.thumbnail((160, 160))
        name = f"{rank:04d}.png"
        thumbnail.save(pictures / name)
        tiles.append(
            f'<figure><img src="label_issues/{name}" alt="{html.escape(issue.path)}">'
            f"<figcaption>labelled <b>{html.escape(issue.given)}</b>, looks like "
            f"<b>{html.escape(issue.suggested)}</b> ({issue.confidence:.2f})<br>"
            f'<span class="muted">{html.escape(issue.path)}</span></figcaption></figure>')
    more = (f"<p>The first {shown} of {len(audit.issues)}; all are in label_issues.csv.</p>"
            if len(audit.issues) > shown else "")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Likely label errors</title><style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; }}
.issues {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; width: 11em; font-size: 0.8em; overflow-wrap: anywhere; }}
img {{ width: 10em; height: 10em; object-fit: contain; background: #eee; }}
.muted {{ color: #777; }}
</style></head><body>
<h1>Likely label errors in {html.escape(audit.details.get("folder", ""))}</h1>
<p id="summary">{len(audit.issues)} of {audit.images} images flagged: the out-of-fold model
({audit.details.get("folds")}-fold, a linear head on {html.escape(str(audit.details.get("backbone")))}
features, {audit.cross_validated_accuracy:.1%} cross-validated accuracy) confidently gives them
another class. Most confident first.</p>
{more}<div class="issues">{"".join(tiles)}</div>
</body></html>
"""
    path = run_dir / "label_issues.html"
    path.write_text(page, encoding="utf-8")
    return path
