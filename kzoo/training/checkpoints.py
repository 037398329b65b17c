"""The checkpoints a training run resumes from.

After every epoch: the model's weights with its optimizer's state (``model.save_weights``), the
states of its random generators (dropout's, which ``save_weights`` leaves out), and the states
of the callbacks that keep one of their own (``states``, such as
:class:`kzoo.training.callbacks.Lookahead`'s average of the weights), each file written beside
and renamed, so a run killed at any moment, even while a checkpoint is being written, finds the
last complete one. The two newest are kept; the newest that reads back is
restored, and a damaged one is passed over with a message. With the input pipeline's epochs a
function of (seed, epoch) (:func:`kzoo.data.pipeline.epoch_batches`), a resumed run then trains
exactly as an uninterrupted one.

>>> checkpoints = EpochCheckpoints(run_dir / "backup", states={"lookahead": lookahead})
>>> done = checkpoints.restore(model)            # epochs already trained, 0 for a new run
>>> model.fit(..., initial_epoch=done, callbacks=[checkpoints])
"""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kzoo.files import read_json, write_json
from kzoo.training.distributed import outside_distribution

_STATE = re.compile(r"epoch-(\d+)\.json$")


def random_states(model: keras.Model) -> list[keras.Variable]:
    """The model's random-generator states: its variables that are not weights."""
    weights = {id(variable) for variable in model.weights}
    return [variable for variable in model.variables if id(variable) not in weights]


class EpochCheckpoints(keras.callbacks.Callback):
    """Save a checkpoint after every epoch into ``folder``; :meth:`restore` the newest good
    one. ``states`` names the objects whose state is saved with it: each has ``get_state()``,
    a list of arrays or ``None`` (nothing to save yet), and ``set_state(model, arrays)``,
    which raises ``ValueError`` where they do not fit."""

    def __init__(self, folder: str | os.PathLike, keep: int = 2,
                 states: Mapping[str, Any] | None = None):
        super().__init__()
        self.folder, self.keep = Path(folder), keep
        self.states = dict(states or {})

    def on_epoch_end(self, epoch, logs=None):
        self.save(self.model, epoch + 1)

    def save(self, model: keras.Model, epochs_done: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epochs_done:04d}.weights.h5"
        partial = self.folder / f".partial-{name}"
        with outside_distribution():  # process 0 saves alone
            model.save_weights(partial)
        os.replace(partial, self.folder / name)
        kept = {key: keeper.get_state() for key, keeper in self.states.items()}
        kept = {key: values for key, values in kept.items() if values is not None}
        arrays = {f"{key}-{index}": value for key, values in kept.items()
                  for index, value in enumerate(values)}
        counts = {key: len(values) for key, values in kept.items()}
        states = f"epoch-{epochs_done:04d}.states.npz"
        if counts:
            with open(self.folder / f".partial-{states}", "wb") as handle:
                np.savez(handle, **arrays)
            os.replace(self.folder / f".partial-{states}", self.folder / states)
        write_json(self.folder / f"epoch-{epochs_done:04d}.json", {  # last: the checkpoint is whole
            "epoch": epochs_done, "weights": name,
            "random_states": [keras.ops.convert_to_numpy(v).tolist()
                              for v in random_states(model)],
            **({"states": states, "state_counts": counts} if counts else {}),
        })
        for old in self.saved()[self.keep:]:
            for suffix in (".json", ".weights.h5", ".states.npz"):
                (self.folder / f"epoch-{old:04d}{suffix}").unlink(missing_ok=True)

    def saved(self) -> list[int]:
        """The epochs with a checkpoint, newest first."""
        found = [int(m.group(1)) for p in self.folder.glob("epoch-*.json")
                 if (m := _STATE.match(p.name))]
        return sorted(found, reverse=True)

    def restore(self, model: keras.Model) -> int:
        """Load the newest checkpoint that reads back into ``model`` (compiled); the epochs it
        holds, or 0 where there is none."""
        for partial in self.folder.glob(".partial-*"):
            print("kzoo: a checkpoint was being written when the run stopped; it is ignored")
            partial.unlink(missing_ok=True)  # every process of a cluster restores
        for epoch in self.saved():
            state = read_json(self.folder / f"epoch-{epoch:04d}.json")
            try:
                if model.optimizer is not None and not model.optimizer.built:
                    model.optimizer.build(model.trainable_variables)
                model.load_weights(self.folder / state["weights"])
                variables = random_states(model)
                if len(variables) != len(state["random_states"]):
                    raise ValueError("the model's random generators differ from the checkpoint's")
                for variable, value in zip(variables, state["random_states"]):
                    variable.assign(np.asarray(value, dtype=variable.dtype))
                self._restore_states(model, state)
            except (OSError, ValueError, KeyError, TypeError, EOFError,
                    zipfile.BadZipFile) as error:
                print(f"kzoo: the checkpoint after epoch {epoch} cannot be read ({error}); "
                      "trying the one before")
                continue
            return epoch
        return 0

    def _restore_states(self, model: keras.Model, state: dict) -> None:
        if not self.states:
            return
        counts = state.get("state_counts", {})
        missing = sorted(set(self.states) - set(counts))
        if missing:
            raise ValueError(f"it holds no state of {', '.join(missing)}")
        with np.load(self.folder / state["states"]) as saved:
            for key, keeper in self.states.items():
                keeper.set_state(model, [saved[f"{key}-{index}"] for index in range(counts[key])])

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
