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
    FILTERS,
    RANKINGS,
    confident_learning,
    confident_thresholds,
    label_issue_mask,
    out_of_fold_probabilities,
    stratified_folds,
)
from kzoo.errors import KzooError


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
    flagged, suggested, margins, thresholds = confident_learning(
        probabilities, labels, "confident_learning", "normalized_margin")
    assert flagged.tolist() == [2, 7]
    assert suggested.tolist() == [1, 0]
    assert margins[0] == pytest.approx(0.75) and margins[1] == pytest.approx(0.3)
    assert thresholds[0] == pytest.approx((0.9 + 0.8 + 0.1) / 3)


@pytest.mark.parametrize("filter_by", FILTERS)
def test_an_image_whose_most_probable_class_is_its_label_is_never_flagged(filter_by):
    """Image 0 is labelled 0 and 0 is its most probable class, yet only class 1 reaches its
    threshold (thresholds .83 and .30)."""
    labels = np.array([0, 0, 0, 1, 1, 1])
    probabilities = np.array([[0.6, 0.4], [0.95, 0.05], [0.94, 0.06],
                              [0.7, 0.3], [0.75, 0.25], [0.65, 0.35]])
    assert confident_thresholds(probabilities, labels) == pytest.approx([0.83, 0.30])
    flagged, _, _, _ = confident_learning(probabilities, labels, filter_by)
    assert 0 not in flagged.tolist()
    # nor, on any matrix, any image whose label is the model's prediction
    rng = np.random.default_rng(0)
    for _ in range(20):
        probabilities = rng.dirichlet(np.full(4, 0.7), size=60)
        labels = rng.integers(0, 4, size=60)
        flagged = np.flatnonzero(label_issue_mask(probabilities, labels, filter_by))
        assert not np.any(probabilities[flagged].argmax(1) == labels[flagged])


def _partly_confident():
    """Class 0: four clean images, two confidently class 1 and four that lean to class 1
    without reaching its threshold (.90); class 1: five clean images."""
    p0 = [0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.35, 0.4, 0.42, 0.45] + [0.1] * 5
    probabilities = np.stack([p0, 1 - np.array(p0)], axis=1)
    return probabilities, np.repeat([0, 1], [10, 5])


def test_prune_by_class_flags_each_class_lowest_self_confidence_by_its_off_diagonal_count():
    probabilities, labels = _partly_confident()
    # the confident joint's row 0 is [4, 2] over the 6 images with a confident class,
    # rescaled to the class's 10 images: [7, 3], so the 3 lowest p(0) of class 0 are flagged
    flagged, suggested, scores, _ = confident_learning(probabilities, labels, "prune_by_class")
    assert flagged.tolist() == [4, 5, 6]  # lowest self-confidence first
    assert suggested.tolist() == [1, 1, 1]
    assert scores == pytest.approx([0.9, 0.9, 0.65])  # 1 - p(given)
    # the plain filter flags only the two that reach class 1's threshold
    plain, _, _, _ = confident_learning(probabilities, labels, "confident_learning")
    assert sorted(plain.tolist()) == [4, 5]
    # by noise rate: the 3 of class 0 with the largest p(1) - p(0)
    by_rate, _, _, _ = confident_learning(probabilities, labels, "prune_by_noise_rate",
                                          "normalized_margin")
    assert by_rate.tolist() == [4, 5, 6]


def test_an_unknown_filter_or_ranking_is_a_clear_error():
    probabilities, labels = _partly_confident()
    with pytest.raises(KzooError, match="label filter 'best' is not one of prune_by_class"):
        confident_learning(probabilities, labels, "best")
    with pytest.raises(KzooError, match="label ranking 'margin' is not one of"):
        confident_learning(probabilities, labels, rank_by="margin")
    assert "self_confidence" in RANKINGS


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
    assert summary["filter_by"] == "prune_by_class"
    saved = np.load(root / "audit" / "out_of_fold.npz")  # every image's probabilities
    assert saved["probabilities"].shape == (72, 3) and len(saved["paths"]) == 72
    assert saved["class_names"].tolist() == summary["class_names"]
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
