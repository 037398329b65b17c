"""``kzoo audit FOLDER --labels``: confident learning on out-of-fold predictions finds images
put in the wrong class folder, and writes them as CSV and as a page of thumbnails."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from conftest import assert_clean_error, run_cli, write_image_folder
from messy_images import write_informative_mobilenet_weights
from PIL import Image
from test_report import _browse, _chromium

from kzoo.analysis.labels import (
    confident_learning,
    out_of_fold_probabilities,
    stratified_folds,
)


def test_confident_learning_flags_confident_disagreements_most_confident_first():
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    probabilities = np.array([
        [0.9, 0.05, 0.05],
        [0.8, 0.1, 0.1],
        [0.1, 0.85, 0.05],  # labelled 0, confidently 1
        [0.1, 0.8, 0.1],
        [0.2, 0.7, 0.1],
        [0.45, 0.5, 0.05],  # labelled 1, 0 reaches its threshold but 1 is likelier
        [0.05, 0.05, 0.9],
        [0.6, 0.1, 0.3],    # labelled 2, confidently 0 (less than image 2)
    ])
    flagged, suggested, margins, thresholds = confident_learning(probabilities, labels)
    assert flagged.tolist() == [2, 7]
    assert suggested.tolist() == [1, 0]
    assert margins[0] == pytest.approx(0.75) and margins[1] == pytest.approx(0.3)
    assert thresholds[0] == pytest.approx((0.9 + 0.8 + 0.1) / 3)


def test_stratified_folds_spread_every_class_evenly():
    labels = np.repeat([0, 1, 2], [10, 7, 3])
    folds = stratified_folds(labels, 5, seed=0)
    for label in (0, 1):
        counts = np.bincount(folds[labels == label], minlength=5)
        assert counts.max() - counts.min() <= 1
    assert len(set(folds[labels == 2].tolist())) == 3  # three images, three folds


@pytest.mark.slow
def test_cross_validated_confident_learning_finds_flipped_labels_first():
    """Features as a good backbone gives them (three clusters); 6 of 120 labels flipped."""
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1, 2], 40)
    centres = rng.normal(size=(3, 16)) * 3
    features = (centres[truth] + rng.normal(size=(120, 16))).astype("float32")
    labels = truth.copy()
    flipped = rng.choice(120, 6, replace=False)
    labels[flipped] = (truth[flipped] + 1) % 3
    probabilities = out_of_fold_probabilities(features, labels, 3, folds=5, seed=0)
    assert np.mean(probabilities.argmax(1) == truth) > 0.95
    found, suggested, _, _ = confident_learning(probabilities, labels)
    # every flagged image was flipped, with its true class suggested; at most one flip missed
    assert set(found.tolist()) <= set(flipped.tolist()) and len(found) >= 5
    assert suggested.tolist() == truth[found].tolist()


@pytest.fixture(scope="module")
def mislabelled(tmp_path_factory):
    """Three colour classes of 24 images; one image of each class moved into another class's
    folder."""
    root = tmp_path_factory.mktemp("labels")
    folder = write_image_folder(root / "photos", {"red": 24, "green": 24, "blue": 24},
                                size=(48, 48))
    moved = {("red", "0003.png"): "green", ("green", "0005.png"): "blue",
             ("blue", "0007.png"): "red"}
    for (source, name), target in moved.items():
        shutil.move(folder / source / name, folder / target / f"moved-{name}")
    sample = np.stack([np.asarray(Image.open(path).convert("RGB").resize((64, 64)))
                       for path in sorted(folder.rglob("*.png"))[::3]])
    weights = write_informative_mobilenet_weights(root / "mobilenet.weights.h5", sample)
    return root, folder, weights, moved


@pytest.mark.slow
def test_audit_labels_writes_its_csv_and_a_page_of_thumbnails(mislabelled):
    """The command end to end on a folder with three images in the wrong class folder. The
    backbone here is random (no ImageNet weights offline), so its features tell the colours
    apart only roughly: what is checked is what the command writes; how well it finds label
    errors with real weights is measured by bench/label_audit.py."""
    root, folder, weights, _ = mislabelled
    result = run_cli("audit", str(folder), "--labels", "--backbone", "mobilenet_v2",
                     "--option", "alpha=0.35", "--image-size", "64", "--weights", str(weights),
                     "--run-dir", "audit", "--quiet", cwd=root)
    assert result.returncode == 0, result.stderr
    with open(root / "audit" / "label_issues.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and list(rows[0]) == ["file", "split", "given_label", "suggested_label",
                                      "confidence", "given_probability", "suggested_probability"]
    confidences = [float(row["confidence"]) for row in rows]
    assert confidences == sorted(confidences, reverse=True)
    for row in rows:
        assert row["given_label"] != row["suggested_label"]
        assert row["given_label"] == row["file"].split("/")[-2]  # the folder it lies in
    summary = json.loads((root / "audit" / "labels.json").read_text())
    assert summary["images"] == 72 and summary["flagged"] == len(rows)
    assert f"{len(rows)} of 72 images look mislabelled" in result.stdout
    page = (root / "audit" / "label_issues.html").read_text()
    assert page.count("<img ") == len(rows)
    assert rows[0]["file"].rsplit("/", 1)[-1] in page

    if _chromium() is None:
        pytest.skip("chromium is not installed; the page's browser check needs it")
    shot = root / "page.png"
    _browse(_chromium(), root / "profile", "--window-size=1000,800", f"--screenshot={shot}",
            (root / "audit" / "label_issues.html").as_uri())
    with Image.open(shot) as picture:
        pixels = np.asarray(picture.convert("RGB"))
    # the thumbnails are drawn: the moved images' saturated class colours are on the page
    saturated = (pixels.max(axis=-1).astype(int) - pixels.min(axis=-1)) > 80
    assert saturated.mean() > 0.01


@pytest.mark.slow
def test_audit_labels_errors_are_one_line(mislabelled, tmp_path):
    folder = mislabelled[1]
    refused = run_cli("audit", str(folder), "--labels", "--backbone", "lenet5", cwd=tmp_path)
    assert_clean_error(refused, "--backbone 'lenet5'", "pretrained")
