"""The learning-rate finder, or range test (Smith, "Cyclical Learning Rates for Training
Neural Networks", 2017; fastai's ``lr_find``): train for a few hundred steps while the
learning rate grows exponentially, record every step's loss, stop once the loss diverges, and
suggest a rate.

The rule: **a tenth of the rate at which the smoothed loss is lowest**. At that rate the loss
still falls, and ten times below it training is stable. The rate of steepest descent of the
smoothed loss is recorded as well. The loss is smoothed with an exponential moving average
(0.98, bias-corrected, as fastai does). The sweep stops once the smoothed loss exceeds four
times its lowest value, or is no longer finite.

>>> found = sweep(model, batches)          # model compiled with a constant-rate optimizer
>>> found.suggestion, found.rule
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

RULE = "a tenth of the rate at which the smoothed loss is lowest"
START, END, STEPS = 1e-7, 10.0, 200
DIVERGENCE = 4.0  # stop once the smoothed loss passes this multiple of its lowest value
SMOOTHING = 0.98


@dataclass
class LRFind:
    """A sweep: the rates tried, each step's loss and its smoothed value, and the suggestion."""

    rates: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    diverged: bool = False

    @property
    def minimum(self) -> float:
        """The rate at which the smoothed loss is lowest."""
        return self.rates[int(np.nanargmin(self.smoothed))]

    @property
    def suggestion(self) -> float:
        return self.minimum / 10

    @property
    def steepest(self) -> float:
        """The rate at which the smoothed loss falls fastest (per decade of rate), up to the
        minimum."""
        end = int(np.nanargmin(self.smoothed)) + 1
        if end < 3:
            return self.rates[0]
        slopes = np.gradient(np.asarray(self.smoothed[:end]), np.log10(self.rates[:end]))
        return self.rates[int(np.argmin(slopes))]

    def to_dict(self) -> dict:
        return {"suggestion": self.suggestion, "rule": RULE, "minimum": self.minimum,
                "steepest": self.steepest, "diverged": self.diverged, "steps": len(self.rates),
                "rates": self.rates, "losses": self.losses, "smoothed": self.smoothed}


def sweep(model: keras.Model, batches, start: float = START, end: float = END,
          steps: int = STEPS) -> LRFind:
    """Train ``model`` (compiled, its optimizer's rate a constant) on up to ``steps`` batches of
    ``batches`` (an iterable of ``(x, y)``) at rates growing from ``start`` to ``end``; the
    model's weights are changed."""
    found = LRFind()
    average = best = math.inf
    running = 0.0
    for step, (images, labels) in enumerate(batches):
        if step == steps:
            break
        rate = start * (end / start) ** (step / max(steps - 1, 1))
        model.optimizer.learning_rate = rate
        model.reset_metrics()  # the step's own loss, not a running mean
        loss = float(model.train_on_batch(images, labels, return_dict=True)["loss"])
        running = SMOOTHING * running + (1 - SMOOTHING) * loss
        average = running / (1 - SMOOTHING ** (step + 1))
        found.rates.append(rate)
        found.losses.append(loss)
        found.smoothed.append(average if math.isfinite(average) else math.nan)
        best = min(best, average) if math.isfinite(average) else best
        if not math.isfinite(average) or average > DIVERGENCE * best:
            found.diverged = True
            break
    if not found.smoothed or all(math.isnan(value) for value in found.smoothed):
        from kzoo.errors import KzooError

        raise KzooError("the learning-rate sweep has no finite loss to go by; check the data "
                        "and the model")
    return found


def plot(found: LRFind, path: Path, title: str = "") -> Path:
    """Loss against learning rate (log scale), the suggestion marked."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
    axis = figure.subplots()
    axis.plot(found.rates, found.losses, color="#bbbbbb", linewidth=0.8, label="loss per step")
    axis.plot(found.rates, found.smoothed, color="#1f77b4", label="smoothed")
    axis.axvline(found.suggestion, color="#d62728", linestyle="--",
                 label=f"suggested {found.suggestion:.2g} ({RULE})")
    axis.axvline(found.minimum, color="#999999", linestyle=":",
                 label=f"lowest loss at {found.minimum:.2g}")
    axis.set_xscale("log")
    finite = [value for value in found.smoothed if math.isfinite(value)]
    axis.set_ylim(min(finite) * 0.9, min(max(finite), 4 * min(finite)) * 1.1)
    axis.set_xlabel("learning rate")
    axis.set_ylabel("training loss")
    axis.set_title(title or "learning-rate finder", fontsize=10)
    axis.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def write_sweep(found: LRFind, folder: Path, title: str) -> None:
    """``lr_find.png`` (loss against rate) and ``lr_find.json`` (the sweep) into ``folder``."""
    from kzoo.files import write_json

    plot(found, folder / "lr_find.png", title=f"learning-rate finder: {title}")
    write_json(folder / "lr_find.json", found.to_dict())
