"""report.html: its pictures and tables, and the page as a real headless browser renders it."""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import kzoo
from kzoo.analysis.evaluation import classification_metrics
from kzoo.analysis.reports import top_losses, write_report
from kzoo.data.images import Skipped
from kzoo.data.pipeline import Examples

CLASSES = ["ants", "bees", "<wasps & co>"]  # a name that must be escaped in HTML


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 1], dtype="int32")
    images = rng.integers(0, 255, (len(labels), 40, 40, 3), dtype=np.uint8)
    probabilities = rng.dirichlet(np.ones(len(CLASSES)), len(labels))
    validation = Examples.from_arrays(images, labels)
    validation.paths = [f"/data/val/{i}.jpg" for i in range(len(labels))]
    history = {
        "epoch": [1, 2, 3, 4, 5],
        "phase": ["head", "head", "head", "fine-tune", "fine-tune"],
        "loss": [0.9, 0.6, 0.5, 0.4, 0.3], "accuracy": [0.5, 0.7, 0.8, 0.85, 0.9],
        "val_loss": [0.8, 0.7, 0.6, 0.55, 0.5], "val_accuracy": [0.6, 0.7, 0.75, 0.8, 0.82],
    }
    metrics = {"validation": classification_metrics(labels, probabilities, CLASSES),
               "class_names": CLASSES, "model": "mobilenet_v2", "seed": 0, "wall_time_s": 12.0,
               "sizes": {"train": 20, "validation": 8}, "test_split": "validation",
               "kept_epoch": {"epoch": 4, "phase": "fine-tune"},
               "finetune": {"unfreeze": 0.3}, "versions": {"kzoo": "test"}}
    skipped = [Skipped("/data/train/ants/notes.txt", "not an image (.txt file)")]
    model = kzoo.build("cifar_convnet", num_classes=len(CLASSES), input_shape=(40, 40, 3))
    path = write_report(run_dir, validation=validation, probabilities=probabilities,
                        history=history, metrics=metrics, skipped=skipped, title="ants & bees",
                        losses_shown=6, model=model)
    return path, labels, probabilities


def test_report_page_and_pictures(report):
    path, labels, probabilities = report
    page = path.read_text()
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    # curves, confusion matrix, per-class; six top losses, each with its Grad-CAM heatmap
    assert len(sources) == 3 + 6 * 2
    for rank in range(1, 7):
        plain = np.asarray(Image.open(path.parent / f"report/top_loss_{rank:02d}.png"), "float32")
        heat = np.asarray(Image.open(path.parent / f"report/top_loss_{rank:02d}_gradcam.png"),
                          "float32")
        assert heat.shape == plain.shape and np.abs(heat - plain).mean() > 5
    assert "Grad-CAM heatmap" in page
    for source in sources:
        with Image.open(path.parent / source) as picture:
            assert picture.width > 20 and picture.height > 20
    for section in ("Training curves", "Confusion matrix", "Per-class precision and recall",
                    "highest loss", "Files skipped"):
        assert section in page
    assert "&lt;wasps &amp; co&gt;" in page and "<wasps" not in page
    assert "notes.txt" in page and "ants &amp; bees" in page
    worst = top_losses(labels, probabilities, 6)
    first_loss = -np.log(probabilities[worst[0], labels[worst[0]]])
    assert f"loss {first_loss:.2f}" in page.split("highest loss")[1].split("</figure>")[0]


def _chromium() -> str | None:
    return next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)


@pytest.fixture
def served(report):
    """The run directory on http://127.0.0.1 (same origin, so a page can look into the report)."""
    folder = report[0].parent
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


_CHECK_PAGE = """<!DOCTYPE html><html><body><p id="result">pending</p>
<iframe id="report" src="report.html" width="1200" height="2400"></iframe>
<script>
document.getElementById("report").addEventListener("load", () => {
  const page = document.getElementById("report").contentDocument;
  const images = Array.from(page.images);
  const loaded = images.filter((image) => image.complete && image.naturalWidth > 0);
  document.getElementById("result").textContent =
    `images loaded ${loaded.length}/${images.length}; sections ${page.querySelectorAll("h2").length}`;
});
</script></body></html>
"""


def _browse(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=90,
                          check=False)


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed "
                    "(apt-get install -y chromium); the headless browser check needs it")
@pytest.mark.browser
def test_report_renders_in_a_headless_browser(served, tmp_path):
    folder, address = served
    (folder / "check.html").write_text(_CHECK_PAGE)
    browser = _chromium()
    done = _browse(browser, tmp_path / "profile", "--virtual-time-budget=15000", "--dump-dom",
                   f"{address}/check.html")
    assert "images loaded 15/15; sections 7" in done.stdout, done.stderr[-2000:]

    shot = tmp_path / "report.png"
    _browse(browser, tmp_path / "profile", "--window-size=1200,2400", f"--screenshot={shot}",
            f"{address}/report.html")
    with Image.open(shot) as picture:
        pixels = np.asarray(picture.convert("RGB"))
    assert pixels.shape[:2] == (2400, 1200)
    colours = np.unique(pixels.reshape(-1, 3)[::7], axis=0)
    assert len(colours) > 500  # plots and photos drawn, not a blank page
    blue = (pixels[..., 2] > 150) & (pixels[..., 0] < 80)
    assert blue.mean() > 0.005  # matplotlib's blue curves, bars and heat map
