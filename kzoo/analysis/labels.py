"""Likely label errors in an image folder, by confident learning (Northcutt, Jiang and Chuang,
"Confident Learning: Estimating Uncertainty in Dataset Labels", JAIR 2021), on out-of-fold
predictions.

1. A pretrained backbone's pooled features of every labelled image, computed once
   (:mod:`kzoo.analysis.features`).
2. k-fold cross-validation, folds stratified by class: a linear softmax head trained on the
   features of k - 1 folds predicts the k-th, so every image gets probabilities from a model
   that never saw its label.
3. Each class j gets a threshold t_j, the mean predicted probability of j over the images
   labelled j (the model's self-confidence in that class). An image's confident class is the
   class whose probability reaches its threshold (the most probable, if several do). Counting
   the images by given label and confident class makes the confident joint, each row rescaled
   to its class's number of images: its off-diagonal count in row c estimates how many images
   labelled c are wrong.
4. A filter picks the likely errors (:data:`FILTERS`, as in cleanlab's ``filter.py``). By
   default, ``prune_by_class``: in each class c, the images with the lowest p(c), as many as
   row c's off-diagonal count. ``prune_by_noise_rate`` takes, per off-diagonal cell (c, j),
   the images labelled c with the largest p(j) - p(c); ``both`` the images both pick;
   ``confident_learning`` the images off the diagonal. An image whose most probable class is
   its label is never flagged; the suggested label is the most probable class.
5. The flagged images are ranked by self-confidence: the lowest p(given) first (the CSV's
   confidence is 1 - p(given)), or by ``rank_by="normalized_margin"``, p(suggested) - p(given).
   The defaults are the best of these on ``bench/label_audit.py``.

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
    confidence: float  # that the label is wrong: 1 - p(given), out of fold (by default)
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


FILTERS = ("prune_by_class", "prune_by_noise_rate", "both", "confident_learning")
RANKINGS = ("self_confidence", "normalized_margin")
DEFAULT_FILTER = "prune_by_class"
DEFAULT_RANKING = "self_confidence"


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise KzooError(f"{what} {value!r} is not one of {', '.join(choices)}; pick one of those")


def confident_thresholds(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each class's threshold: the mean probability of the class over the images labelled with
    it (1.0 for a class no image is labelled with)."""
    return np.array([probabilities[labels == j, j].mean() if np.any(labels == j) else 1.0
                     for j in range(probabilities.shape[1])])


def _round_rows(matrix: np.ndarray, totals: np.ndarray) -> np.ndarray:
    """``matrix`` rounded to integers, each row summing to its (integer) total: the
    remainders go to the largest fractional parts."""
    floors = np.floor(matrix).astype(np.int64)
    for row, total in enumerate(totals.astype(np.int64)):
        short = int(total - floors[row].sum())
        if short > 0:
            floors[row, np.argsort(floors[row] - matrix[row], kind="stable")[:short]] += 1
    return floors


def confident_joint(probabilities: np.ndarray, labels: np.ndarray,
                    thresholds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The calibrated confident joint (``[given, true]`` counts, each row summing to the
    number of images given that label) and the indices of the images off its diagonal.

    An image's confident class is the class whose probability reaches its threshold, or the
    most probable class when several do; images with none are left out, then each row is
    rescaled to its label's count."""
    num_classes = probabilities.shape[1]
    if thresholds is None:
        thresholds = confident_thresholds(probabilities, labels)
    reaching = probabilities >= thresholds[None, :] - 1e-6
    count = reaching.sum(axis=1)
    confident = np.where(count > 1, probabilities.argmax(axis=1), reaching.argmax(axis=1))
    counted = count > 0
    joint = np.zeros((num_classes, num_classes))
    np.add.at(joint, (labels[counted], confident[counted]), 1)
    np.fill_diagonal(joint, np.maximum(joint.diagonal(), 1))
    label_counts = np.bincount(labels, minlength=num_classes)
    calibrated = joint / joint.sum(axis=1, keepdims=True) * label_counts[:, None]
    off_diagonal = np.flatnonzero(counted & (confident != labels))
    return _round_rows(calibrated, label_counts), off_diagonal


def _prune_by_class(probabilities: np.ndarray, labels: np.ndarray,
                    joint: np.ndarray) -> np.ndarray:
    """For each given class c, its ``n_c`` images of lowest self-confidence p(c), ``n_c`` the
    off-diagonal count of row c of the confident joint."""
    mask = np.zeros(len(labels), dtype=bool)
    for label in range(joint.shape[0]):
        members = np.flatnonzero(labels == label)
        wrong = int(joint[label].sum() - joint[label, label])
        if len(members) > 1 and wrong > 0:
            lowest = np.argsort(probabilities[members, label], kind="stable")[:wrong]
            mask[members[lowest]] = True
    return mask


def _prune_by_noise_rate(probabilities: np.ndarray, labels: np.ndarray,
                         joint: np.ndarray) -> np.ndarray:
    """For each off-diagonal cell (given c, true j) of the confident joint, its count of the
    images labelled c with the largest margin p(j) - p(c)."""
    mask = np.zeros(len(labels), dtype=bool)
    for label in range(joint.shape[0]):
        members = np.flatnonzero(labels == label)
        if len(members) <= 1:
            continue
        for true in range(joint.shape[1]):
            count = int(joint[label, true])
            if true != label and count > 0:
                margin = probabilities[members, true] - probabilities[members, label]
                mask[members[np.argsort(-margin, kind="stable")[:count]]] = True
    return mask


def label_issue_mask(probabilities: np.ndarray, labels: np.ndarray,
                     filter_by: str = DEFAULT_FILTER) -> np.ndarray:
    """Which images are likely label errors, by one of confident learning's filters
    (:data:`FILTERS`). An image whose most probable class is its label is never one."""
    _check_choice("label filter", filter_by, FILTERS)
    joint, off_diagonal = confident_joint(probabilities, labels)
    if filter_by == "confident_learning":
        mask = np.zeros(len(labels), dtype=bool)
        mask[off_diagonal] = True
    elif filter_by == "prune_by_class":
        mask = _prune_by_class(probabilities, labels, joint)
    elif filter_by == "prune_by_noise_rate":
        mask = _prune_by_noise_rate(probabilities, labels, joint)
    else:
        mask = (_prune_by_class(probabilities, labels, joint)
                & _prune_by_noise_rate(probabilities, labels, joint))
    return mask & (probabilities.argmax(axis=1) != labels)


def issue_scores(indices: np.ndarray, probabilities: np.ndarray, labels: np.ndarray,
                 rank_by: str = DEFAULT_RANKING) -> np.ndarray:
    """How sure the model is that each of ``indices`` is mislabelled, by ``rank_by``:
    1 - p(label) (``self_confidence``), or the largest other probability - p(label)
    (``normalized_margin``)."""
    _check_choice("label ranking", rank_by, RANKINGS)
    given = probabilities[indices, labels[indices]]
    if rank_by == "self_confidence":
        return 1.0 - given
    others = probabilities[indices].copy()
    others[np.arange(len(indices)), labels[indices]] = -np.inf
    return others.max(axis=1) - given


def confident_learning(probabilities: np.ndarray, labels: np.ndarray,
                       filter_by: str = DEFAULT_FILTER, rank_by: str = DEFAULT_RANKING,
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The likely label errors (indices, likeliest first by ``rank_by``), their suggested
    labels (the most probable class), their :func:`issue_scores` and the per-class
    thresholds."""
    thresholds = confident_thresholds(probabilities, labels)
    flagged = np.flatnonzero(label_issue_mask(probabilities, labels, filter_by))
    scores = issue_scores(flagged, probabilities, labels, rank_by)
    ranked = np.argsort(-scores, kind="stable")
    order = flagged[ranked]
    return order, probabilities[order].argmax(axis=1), scores[ranked], thresholds


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
    filter_by: str = DEFAULT_FILTER,
    rank_by: str = DEFAULT_RANKING,
) -> LabelAudit:
    """Find likely label errors among every labelled image of ``folder`` (all its splits);
    writes ``label_issues.csv``, ``label_issues.html``, ``labels.json`` and the out-of-fold
    probabilities (``out_of_fold.npz``) into ``run_dir`` (default ``runs/labels-FOLDER-TIME``)
    and returns them as a :class:`LabelAudit`. ``filter_by`` is one of :data:`FILTERS`,
    ``rank_by`` one of :data:`RANKINGS`."""
    from kzoo.analysis.features import backbone_features, pooled_features_model
    from kzoo.data.datasets import data_dirs, find_image_folder
    from kzoo.data.locations import scratch_dir
    from kzoo.data.pipeline import Examples
    from kzoo.data.scan import scan_folder
    from kzoo.data.store import Framing
    from kzoo.files import write_atomically, write_json
    from kzoo.models.registry import build, get_spec
    from kzoo.models.weights import search_weights_in

    _check_choice("label filter", filter_by, FILTERS)
    _check_choice("label ranking", rank_by, RANKINGS)
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
    order, suggested, scores, thresholds = confident_learning(probabilities, labels,
                                                              filter_by, rank_by)
    examples_of = dict(parts)
    issues = []
    for index, better, score in zip(order, suggested, scores):
        split, position = where[index]
        issues.append(LabelIssue(
            examples_of[split].paths[position], split, names[labels[index]], names[better],
            round(float(score), 4), round(float(probabilities[index, labels[index]]), 4),
            round(float(probabilities[index, better]), 4)))
    accuracy = float(np.mean(probabilities.argmax(1) == labels))
    audit = LabelAudit(issues, len(labels), names, [round(float(t), 4) for t in thresholds],
                       round(accuracy, 4), run_dir,
                       {"backbone": backbone, "folds": folds, "seed": seed,
                        "image_size": image_size, "features_s": round(features_s, 1),
                        "filter_by": filter_by, "rank_by": rank_by,
                        "folder": str(root)})
    run_dir.mkdir(parents=True, exist_ok=True)
    write_issues_csv(issues, run_dir / "label_issues.csv")
    write_atomically(run_dir / "out_of_fold.npz", lambda partial: _save_probabilities(
        partial, [examples_of[split].paths[position] for split, position in where],
        labels, probabilities, names))
    write_issues_page(audit, examples_of, where, order, run_dir)
    write_json(run_dir / "labels.json", {
        "images": audit.images, "flagged": len(issues), "class_names": names,
        "thresholds": audit.thresholds,
        "cross_validated_accuracy": audit.cross_validated_accuracy, **audit.details})
    return audit


def _save_probabilities(path: Path, paths: list[str], labels: np.ndarray,
                        probabilities: np.ndarray, names: list[str]) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, paths=np.array(paths, dtype=str), labels=labels,
                 probabilities=probabilities.astype("float32"),
                 class_names=np.array(names, dtype=str))


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
