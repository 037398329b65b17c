"""``trials.csv``: one row a trial (id, status, every hyperparameter, Hyperband's
bookkeeping, the best epoch and its score, the wall time, any error), rewritten atomically."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import keras_tuner as kt

from kzoo.files import write_atomically

TRIALS_TABLE = "trials.csv"
SETTINGS_HP = "kzoo/settings"  # a fixed hyperparameter: the digest of the search's settings
OBJECTIVE = kt.Objective("val_accuracy", direction="max")  # what every search maximises
RUNNING, COMPLETED = kt.engine.trial.TrialStatus.RUNNING, kt.engine.trial.TrialStatus.COMPLETED
# Hyperband's bookkeeping values, as trials.csv names them.
_HYPERBAND_COLUMNS = {"tuner/epochs": "epochs", "tuner/initial_epoch": "initial_epoch",
                      "tuner/trial_id": "continues_trial", "tuner/bracket": "bracket",
                      "tuner/round": "round"}


def last_line(message: str | None) -> str:
    """The error line of a trial's traceback (a failed trial's own message, bare)."""
    lines = [line.strip() for line in (message or "").strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return last.split("FailedTrialError: ", 1)[-1]


def _cell(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else value


def trials_table(oracle: kt.Oracle) -> list[dict[str, Any]]:
    """One row a trial: id, status, every hyperparameter, Hyperband's bookkeeping, the best
    epoch and its validation metric, the epochs trained, the wall time and any error."""
    names = [hp.name for hp in oracle.hyperparameters.space if hp.name != SETTINGS_HP]
    rows = []
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        values = trial.hyperparameters.values
        row = {"trial_id": trial_id, "status": trial.status}
        row.update({name: values.get(name) for name in names})
        row.update({column: values[key] for key, column in _HYPERBAND_COLUMNS.items()
                    if key in values})
        for metric in ("best_epoch", "epochs_trained"):
            if trial.metrics.exists(metric):
                row[metric] = int(trial.metrics.get_last_value(metric))
        row[OBJECTIVE.name] = trial.score
        row["wall_time_s"] = getattr(oracle, "wall_times", {}).get(trial_id)
        row["message"] = last_line(trial.message) if trial.status != COMPLETED else ""
        rows.append(row)
    return rows


def write_trials_table(oracle: kt.Oracle, path: Path) -> list[dict[str, Any]]:
    """Write :func:`trials_table` as CSV, numbers to 6 significant digits (to a temporary file,
    then renamed); return its rows."""
    rows = trials_table(oracle)
    order = ["trial_id", "status", *(hp.name for hp in oracle.hyperparameters.space
                                      if hp.name != SETTINGS_HP),
             *_HYPERBAND_COLUMNS.values(), "best_epoch", "epochs_trained", OBJECTIVE.name,
             "wall_time_s", "message"]
    columns = [column for column in order if any(column in row for row in rows)]

    def write(partial: Path) -> None:
        with partial.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows({key: _cell(value) for key, value in row.items()} for row in rows)

    write_atomically(path, write)
    return rows
