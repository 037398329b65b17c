"""The checkpoints a training run resumes from.

After every epoch: the model's weights with its optimizer's state (``model.save_weights``), and
the states of its random generators (dropout's, which ``save_weights`` leaves out), each file
written beside and renamed, so a run killed at any moment, even while a checkpoint is being
written, finds the last complete one. The two newest are kept; the newest that reads back is
restored, and a damaged one is passed over with a message. With the input pipeline's epochs a
function of (seed, epoch) (:func:`kzoo.data.pipeline.epoch_batches`), a resumed run then trains
exactly as an uninterrupted one.

>>> checkpoints = EpochCheckpoints(run_dir / "backup")
>>> done = checkpoints.restore(model)            # epochs already trained, 0 for a new run
>>> model.fit(..., initial_epoch=done, callbacks=[checkpoints])
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

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
    one."""

    def __init__(self, folder: str | os.PathLike, keep: int = 2):
        super().__init__()
        self.folder, self.keep = Path(folder), keep

    def on_epoch_end(self, epoch, logs=None):
        self.save(self.model, epoch + 1)

    def save(self, model: keras.Model, epochs_done: int) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epochs_done:04d}.weights.h5"
        partial = self.folder / f".partial-{name}"
        with outside_distribution():  # process 0 saves alone
            model.save_weights(partial)
        os.replace(partial, self.folder / name)
        write_json(self.folder / f"epoch-{epochs_done:04d}.json", {
            "epoch": epochs_done, "weights": name,
            "random_states": [keras.ops.convert_to_numpy(v).tolist()
                              for v in random_states(model)],
        })
        for old in self.saved()[self.keep:]:
            (self.folder / f"epoch-{old:04d}.json").unlink(missing_ok=True)
            (self.folder / f"epoch-{old:04d}.weights.h5").unlink(missing_ok=True)

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
            except (OSError, ValueError, KeyError, TypeError) as error:
                print(f"kzoo: the checkpoint after epoch {epoch} cannot be read ({error}); "
                      "trying the one before")
                continue
            return epoch
        return 0

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
