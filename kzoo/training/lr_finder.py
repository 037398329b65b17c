"""The learning-rate finder, or range test (Smith, "Cyclical Learning Rates for Training
Neural Networks", 2017; fastai's ``lr_find``): train for a few hundred steps while the
learning rate grows exponentially, record every step's loss, stop once the loss diverges, and
suggest a rate.

The rule: **a tenth of the rate at which the smoothed loss is lowest**. At that rate the loss
still falls, and ten times below it training is stable. As fastai's ``lr_find`` does, the
minimum is taken without the first tenth of the steps and the last five (the first rates are
too small to change anything, the last ones are where the loss blows up). Where the minimum
still falls on the first step kept, the loss never fell: the suggestion is then no better than
the smallest rate tried, and the sweep says so (a printed line, and ``warning`` in its
summary). The rate of steepest descent of the
smoothed loss is recorded as well. The curve the rule reads is smoothed by a centred moving
average over 11 steps, after the sweep: an exponential average, as fastai uses, lags behind a
loss that turns, and put LeNet-5's minimum a decade too high. While the sweep runs, a
bias-corrected exponential average (0.9) watches for divergence: the sweep stops once it
exceeds four times its lowest value, or is no longer finite.

>>> found = sweep(model, batches)   # model compiled with a constant-rate optimizer; weights restored
>>> model.fit(batches, steps_per_epoch=200, callbacks=[LRFinder(200)])   # the same, as a callback
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
DIVERGENCE = 4.0  # stop once the running loss passes this multiple of its lowest value
RUNNING = 0.9  # the exponential average that watches for divergence during the sweep
WINDOW = 11  # steps of the centred moving average the suggestion reads
SKIP_END = 5  # steps left out at the end of the curve (the first tenth is left out at its start)


@dataclass
class LRFind:
    """A sweep: the rates tried, each step's loss and its smoothed value, and the suggestion."""

    rates: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    diverged: bool = False

    @property
    def smoothed(self) -> list[float]:
        """Each step's loss averaged over the ``WINDOW`` steps centred on it (fewer at the
        ends); not-finite losses left out."""
        values = np.asarray(self.losses, dtype="float64")
        finite = np.isfinite(values)
        half = WINDOW // 2
        out = []
        for index in range(len(values)):
            window = slice(max(0, index - half), index + half + 1)
            kept = values[window][finite[window]]
            out.append(float(kept.mean()) if len(kept) else math.nan)
        return out

    @property
    def kept(self) -> slice:
        """The steps the suggestion reads: all but the first tenth and the last
        :data:`SKIP_END` (all of them where that would leave fewer than three)."""
        count = len(self.rates)
        kept = slice(count // 10, count - SKIP_END)
        return kept if kept.stop - kept.start >= 3 else slice(0, count)

    @property
    def lowest(self) -> int:
        """The step at which the smoothed loss is lowest, among the steps :attr:`kept`."""
        kept, smoothed = self.kept, np.asarray(self.smoothed, dtype="float64")
        window = smoothed[kept]
        if not np.isfinite(window).any():  # nothing finite in the middle: the whole curve
            return int(np.nanargmin(smoothed))
        return kept.start + int(np.nanargmin(window))

    @property
    def minimum(self) -> float:
        """The rate at which the smoothed loss is lowest (:attr:`lowest`)."""
        return self.rates[self.lowest]

    @property
    def warning(self) -> str | None:
        """Why the suggestion is not to be trusted, or ``None``: the loss never fell (its
        minimum is the first step kept), so the suggestion is the smallest rate tried."""
        if self.lowest > self.kept.start:
            return None
        return (f"the loss never fell during the sweep (lowest at the first rate kept, "
                f"{self.minimum:.2g}), so the suggestion {self.suggestion:.2g} is no better "
                "than the smallest rate tried; pick a rate by hand, or sweep from a smaller "
                "start")

    @property
    def suggestion(self) -> float:
        return self.minimum / 10

    @property
    def steepest(self) -> float:
        """The rate at which the smoothed loss falls fastest (per decade of rate), up to the
        minimum."""
        start, end = self.kept.start, self.lowest + 1
        if end - start < 3:
            return self.rates[start]
        slopes = np.gradient(np.asarray(self.smoothed[start:end]),
                             np.log10(self.rates[start:end]))
        return self.rates[start + int(np.nanargmin(slopes))]

    def summary(self) -> dict:
        """What a run records of its sweep: the suggestion, its rule, the minimum, the steepest
        descent, and the :attr:`warning` (``None`` where there is none)."""
        return {"suggestion": self.suggestion, "rule": RULE, "minimum": self.minimum,
                "steepest": self.steepest, "warning": self.warning}

    def to_dict(self) -> dict:
        return {**self.summary(), "diverged": self.diverged, "steps": len(self.rates),
                "rates": self.rates, "losses": self.losses, "smoothed": self.smoothed}


class LRFinder(keras.callbacks.Callback):
    """The range test as a Keras callback, as fastai's ``LRFinder`` is: before each of up to
    ``steps`` batches it sets the optimizer's rate (growing from ``start`` to ``end``), records
    that batch's loss in ``found``, stops training once the loss diverges, and puts the model's
    weights back when training ends."""

    def __init__(self, steps: int = STEPS, start: float = START, end: float = END):
        super().__init__()
        self.steps, self.start, self.end = steps, start, end
        self.found = LRFind()

    def on_train_begin(self, logs=None):
        self.found = LRFind()
        self.saved = self.model.get_weights()
        self.best, self.running = math.inf, 0.0

    def on_train_batch_begin(self, batch, logs=None):
        rate = self.start * (self.end / self.start) ** (batch / max(self.steps - 1, 1))
        self.model.optimizer.learning_rate = rate
        self.model.reset_metrics()  # the batch's own loss, not a running mean
        self.found.rates.append(rate)

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {})["loss"])
        self.found.losses.append(loss)
        self.running = RUNNING * self.running + (1 - RUNNING) * loss
        average = self.running / (1 - RUNNING ** (batch + 1))
        self.best = min(self.best, average) if math.isfinite(average) else self.best
        if not math.isfinite(average) or average > DIVERGENCE * self.best:
            self.found.diverged = True
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.model.set_weights(self.saved)
        self.saved = None


def sweep(model: keras.Model, batches, start: float = START, end: float = END,
          steps: int = STEPS) -> LRFind:
    """Run :class:`LRFinder` over up to ``steps`` batches of ``batches`` (a ``tf.data``
    dataset of ``(x, y)``, repeated as needed, or any iterable of them) on ``model`` (compiled, its optimizer's rate a
    constant); the model's weights are put back afterwards."""
    finder = LRFinder(steps, start, end)
    if not hasattr(batches, "element_spec"):  # a list or other iterable: a generator to Keras
        batches = (batch for batch in batches)
    model.fit(batches, steps_per_epoch=steps, epochs=1, callbacks=[finder], verbose=0,
              shuffle=False)
    found = from_process_zero_sweep(finder.found, steps)
    if not any(math.isfinite(value) for value in found.losses):
        from kzoo.errors import KzooError

        raise KzooError("the learning-rate sweep has no finite loss to go by; check the data "
                        "and the model")
    if found.warning:
        print(f"kzoo: warning: {found.warning}", flush=True)
    return found


def from_process_zero_sweep(found: LRFind, steps: int) -> LRFind:
    """Process 0's sweep, on every process of a cluster (each sweeps on its own, and a rate
    that differed between them would make their models drift apart); ``found`` itself on a
    lone process."""
    from kzoo.training.distributed import from_process_zero, joined

    if not joined():
        return found
    count = len(found.rates)
    packed = np.full(2 + 2 * steps, math.nan)
    packed[:2] = count, found.diverged
    packed[2:2 + count], packed[2 + steps:2 + steps + count] = found.rates, found.losses
    packed = from_process_zero([packed])[0]
    count = int(packed[0])
    return LRFind(rates=packed[2:2 + count].tolist(),
                  losses=packed[2 + steps:2 + steps + count].tolist(), diverged=bool(packed[1]))


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
