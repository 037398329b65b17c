"""KerasTuner's oracles and tuners, with what kzoo adds: the recipe's own values proposed
first, each trial's wall time kept, ``trials.csv`` rewritten after every trial, a trial cut off
by a killed process run again (or failed after two deaths), a clear message when failures stop
the search, and each trial's TensorFlow graphs freed.
"""

from __future__ import annotations

import functools
import os
import time
from copy import copy as shallow_copy
from pathlib import Path

import keras
import keras_tuner as kt

from kzoo._compat import custom_gradient_names, forget_custom_gradients, oracle_display
from kzoo.errors import KzooError
from kzoo.tuning.hypermodel import RecipeHyperModel
from kzoo.tuning.space import format_values
from kzoo.tuning.table import (
    OBJECTIVE,
    RUNNING,
    SETTINGS_HP,
    TRIALS_TABLE,
    last_line,
    write_trials_table,
)


class SearchStopped(KzooError):
    """Too many trials failed in a row, or the search could not write its files."""


def write_failure(directory: str | os.PathLike, error: OSError) -> str:
    """Why a search stopped when it could not write its files, in one line."""
    return (f"the search stopped: it could not write its files in {directory} ({error}); free "
            "space there or make it writable, then run the same command again to go on")


def _locked(method):
    """``method`` under KerasTuner's ``synchronized`` lock, which is released only when the
    method returns: an error inside would leave it held, and every other caller (a chief's
    workers) waiting forever. So nothing is raised inside: a failed write (``OSError``) stops
    the search (:meth:`_KzooOracle._write_failed`), and any other error is raised once the
    lock is released."""

    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs), None
        except OSError as error:
            return self._write_failed(error, method.__name__, *args), None
        except Exception as error:  # noqa: BLE001 - raised below, outside the lock
            return None, error

    synchronized = kt.synchronized(guarded)

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        result, error = synchronized(self, *args, **kwargs)
        if error is not None:
            raise error
        return result

    return call


class _KzooOracle:
    """What kzoo adds to a KerasTuner oracle: the recipe's values (the hyperparameters'
    defaults) as the first values proposed; each trial's wall time, kept in the saved state;
    ``trials.csv`` rewritten after every trial; a trial left running by a killed process
    re-run on resume, unless processes died running it twice already (out of memory, say):
    then it is marked failed; and a clear message when failures stop the search.

    With workers (a chief serving this oracle), a worker that goes silent for longer than
    :meth:`worker_timeout` (a worker reports at every epoch's end) loses its trial to the next
    worker that asks; while another worker's trial may still need a new home, workers that
    find the trial limit reached wait instead of leaving. Too many failures stop the search
    without raising inside KerasTuner's lock, which it would never release: every worker is
    then told to stop, and the search ends with :attr:`stop_reason`."""

    deaths_before_failing = 2
    idle_wait_s = 2.0  # how long a worker waits before asking again for a trial
    default_timeout_s = 600.0  # silence tolerated before any epoch was timed
    timeout_floor_s = 60.0

    def __init__(self, *args, worker_timeout: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        hide_settings(oracle_display(self))
        self.wall_times: dict[str, float] = {}
        self.launches: dict[str, int] = {}  # trial id: times handed to a tuner
        self.given_timeout = worker_timeout
        self.stop_reason: str | None = None
        self._started: dict[str, float] = {}
        self._last_seen: dict[str, float] = {}
        self._longest_silence = 0.0

    def _random_values(self):
        defaults = kt.HyperParameters()
        for hp in self.hyperparameters.space:
            defaults.merge([hp])
            if defaults.is_active(hp):
                defaults.values[hp.name] = hp.default
        if not self._duplicate(defaults.values):
            return defaults.values
        return super()._random_values()

    # --- who is alive -----------------------------------------------------------------------

    def worker_timeout(self) -> float:
        """Seconds of silence after which a worker counts as gone: ``--worker-timeout``, else
        three times the longest silence seen between a worker's reports so far (at least a
        minute), or ten minutes before any was seen."""
        if self.given_timeout:
            return self.given_timeout
        if not self._longest_silence:
            return self.default_timeout_s
        return max(self.timeout_floor_s, 3 * self._longest_silence)

    def _heard_from(self, tuner_id: str) -> None:
        now = time.time()
        if tuner_id in self._last_seen:
            self._longest_silence = max(self._longest_silence, now - self._last_seen[tuner_id])
        self._last_seen[tuner_id] = now

    def _owner(self, trial_id: str) -> str | None:
        return next((tuner for tuner, trial in self.ongoing_trials.items()
                     if trial.trial_id == trial_id), None)

    def _reclaim_from_silent_workers(self, asking: str) -> None:
        timeout, now = self.worker_timeout(), time.time()
        for tuner_id, trial in list(self.ongoing_trials.items()):
            silent = now - self._last_seen.get(tuner_id, now)
            if tuner_id == asking or silent <= timeout:
                continue
            del self.ongoing_trials[tuner_id]
            self.tuner_ids.discard(tuner_id)
            if trial.trial_id not in self._retry_queue:
                self._retry_queue.append(trial.trial_id)
            print(f"kzoo: {tuner_id} has been silent for {silent:.0f}s (more than {timeout:.0f}s;"
                  f" --worker-timeout); trial {trial.trial_id} goes to another worker", flush=True)

    # --- the oracle's calls ----------------------------------------------------------------------

    def create_trial(self, tuner_id):
        trial = self._create_trial(tuner_id)
        if trial.status == kt.engine.trial.TrialStatus.IDLE:
            time.sleep(self.idle_wait_s)  # outside the lock: others may report meanwhile
        return trial

    @_locked
    def _create_trial(self, tuner_id):
        self._heard_from(tuner_id)
        if self.stop_reason is not None:
            return self._stopped(tuner_id)
        self._reclaim_from_silent_workers(asking=tuner_id)
        trial = super().create_trial(tuner_id)
        if trial.status == RUNNING:
            self._started[trial.trial_id] = time.time()
            self.launches[trial.trial_id] = self.launches.get(trial.trial_id, 0) + 1
            self.save()
        elif trial.status == kt.engine.trial.TrialStatus.STOPPED and any(
                owner != tuner_id for owner in self.ongoing_trials):
            self.tuner_ids.add(tuner_id)  # not yet: another worker's trial may need a home
            trial = kt.engine.trial.Trial(self.get_space(),
                                          status=kt.engine.trial.TrialStatus.IDLE)
        return trial

    def _stopped(self, tuner_id):
        self.tuner_ids.discard(tuner_id)
        self.ongoing_trials.pop(tuner_id, None)
        return kt.engine.trial.Trial(self.get_space(), status=kt.engine.trial.TrialStatus.STOPPED)

    @_locked
    def update_trial(self, trial_id, metrics, step=0):
        owner = self._owner(trial_id)
        if owner is not None:
            self._heard_from(owner)
        return super().update_trial(trial_id, metrics, step=step)

    @_locked
    def end_trial(self, trial):
        owner = self._owner(trial.trial_id)
        if owner is not None:
            self._heard_from(owner)
        started = self._started.pop(trial.trial_id, None)
        if started is not None:
            self.wall_times[trial.trial_id] = round(time.time() - started, 2)
        try:
            super().end_trial(trial)
        finally:
            write_trials_table(self, Path(self._project_dir) / TRIALS_TABLE)

    def _write_failed(self, error: OSError, call: str, *args):
        """Stop the search after a failed write, with one line that says why; the first
        such reason is kept. What ``call`` returns then: no trial (``_create_trial``), a
        stopped one (``update_trial``) or nothing (``end_trial``)."""
        if self.stop_reason is None or "could not write" not in self.stop_reason:
            self.stop_reason = write_failure(self._project_dir, error)
            print(f"kzoo: {self.stop_reason}", flush=True)
        if call == "_create_trial":
            return self._stopped(args[0])
        if call == "update_trial":
            return kt.engine.trial.TrialStatus.STOPPED
        return None

    def _check_consecutive_failures(self):
        try:
            super()._check_consecutive_failures()
        except RuntimeError:
            last = self.trials[self.end_order[-1]]
            self.stop_reason = (
                f"the search stopped: {self.max_consecutive_failed_trials} trials in a row failed "
                f"(the limit; --max-failures), the last, trial {last.trial_id}, with: "
                f"{last_line(last.message)}. Each trial's status is in "
                f"{Path(self._project_dir) / TRIALS_TABLE}; fix the cause (e.g. narrow the "
                "learning-rate range) and run the same command again to go on, with a higher "
                "--max-failures if need be"
            )
            self.save()

    def reload(self):
        super().reload()
        # KerasTuner re-runs the trials its saved state lists as ongoing; a kill between saving
        # a new trial and saving that state leaves one only its trial.json knows of.
        for trial_id, trial in sorted(self.trials.items()):
            if trial.status == RUNNING and trial_id not in self._retry_queue:
                self._retry_queue.append(trial_id)
        for trial_id in list(self._retry_queue):
            trial = self.trials[trial_id]
            deaths = self.launches.get(trial_id, 0) - self._run_times[trial_id]
            if trial.status == RUNNING and deaths >= self.deaths_before_failing:
                self._retry_queue.remove(trial_id)
                trial.status = kt.engine.trial.TrialStatus.FAILED
                trial.message = (f"the process running trial {trial_id} died {deaths} times before "
                                 "it finished (killed for lack of memory?); not run again")
                print(f"kzoo: {trial.message}")
                self.end_order.append(trial_id)
                self._save_trial(trial)
        write_trials_table(self, Path(self._project_dir) / TRIALS_TABLE)

    def get_state(self):
        return {**super().get_state(), "kzoo_wall_times": self.wall_times,
                "kzoo_launches": self.launches, "kzoo_stop_reason": self.stop_reason}

    def set_state(self, state):
        super().set_state(state)
        self.wall_times = dict(state.get("kzoo_wall_times", {}))
        self.launches = dict(state.get("kzoo_launches", {}))
        self.stop_reason = None  # a resumed search may go on (with a higher --max-failures)


def shown(trial: kt.engine.trial.Trial) -> kt.engine.trial.Trial:
    """The trial as it is shown: a copy without the settings digest (``SETTINGS_HP``, the
    fixed hyperparameter through which workers check the chief's settings), which means
    nothing to a reader; the trial itself, its values and its identity are left alone."""
    if SETTINGS_HP not in trial.hyperparameters.values:
        return trial
    hyperparameters = trial.hyperparameters.copy()
    hyperparameters.values = {name: value for name, value in trial.hyperparameters.values.items()
                              if name != SETTINGS_HP}
    copy = shallow_copy(trial)
    copy.hyperparameters = hyperparameters
    return copy


def hide_settings(display) -> None:
    """Have KerasTuner's display of each new trial (its table of hyperparameters, printed
    with ``verbose`` >= 1: the oracle's ``_display``, checked on keras-tuner 1.4.8) show the
    trial without the settings digest. Where KerasTuner has no such display, nothing is done."""
    table = getattr(display, "show_hyperparameter_table", None)
    if table is not None:
        display.show_hyperparameter_table = lambda trial: table(shown(trial))


class RandomSearchOracle(_KzooOracle, kt.oracles.RandomSearchOracle):
    pass


class BayesianOptimizationOracle(_KzooOracle, kt.oracles.BayesianOptimizationOracle):
    pass


class HyperbandOracle(_KzooOracle, kt.oracles.HyperbandOracle):
    """Hyperband, with ``max_trials`` as an optional cap on its brackets' trials."""

    def __init__(self, *args, max_trials=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_trials = max_trials


def custom_gradients() -> set[str]:
    """TensorFlow's registered ``tf.custom_gradient`` names (none on another backend)."""
    if keras.backend.backend() != "tensorflow":
        return set()  # on JAX the train step is traced by JAX: no tf.custom_gradient, nothing leaks
    return custom_gradient_names()


class _KzooTuner:
    """What kzoo adds to a KerasTuner tuner: its oracle comes from :func:`make_tuner` (the
    algorithm's own ``__init__`` only builds one), its state is saved when the search starts (so
    a search killed in its first trial resumes too), it names each trial it runs, and it frees
    each trial's graphs.

    Graph-mode ``tf.custom_gradient`` registers a gradient function under a new name for every
    trace and never removes it; Keras's train step makes one per model (through
    ``tf.distribute``'s ``all_reduce``), and each keeps its whole graph alive: 5-10 MB a trial
    that ``clear_session`` cannot free. Those a trial registered are dropped when it ends.
    """

    def __init__(self, oracle, hypermodel, **kwargs):
        kt.Tuner.__init__(self, oracle=oracle, hypermodel=hypermodel, **kwargs)

    def on_search_begin(self):
        super().on_search_begin()
        self.save()

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        self._gradients_before_trial = set(custom_gradients())
        print(f"kzoo: {self.tuner_id} runs trial {trial.trial_id}: "
              f"{format_values(trial.hyperparameters.values)}", flush=True)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        forget_custom_gradients(custom_gradients() - self._gradients_before_trial)

    def results_summary(self, num_trials=10):
        """KerasTuner's summary of the best trials, each shown without the settings digest."""
        print("Results summary")
        print(f"Results in {self.project_dir}")
        print(f"Showing {num_trials} best trials")
        print(f"{self.oracle.objective}")
        for trial in self.oracle.get_best_trials(num_trials):
            print()
            shown(trial).summary()


class RandomSearch(_KzooTuner, kt.RandomSearch):
    pass


class BayesianOptimization(_KzooTuner, kt.BayesianOptimization):
    pass


class Hyperband(_KzooTuner, kt.Hyperband):
    pass


ALGORITHMS = {
    "random": (RandomSearchOracle, RandomSearch),
    "hyperband": (HyperbandOracle, Hyperband),
    "bayesian": (BayesianOptimizationOracle, BayesianOptimization),
}


def make_tuner(
    hypermodel: RecipeHyperModel,
    algorithm: str = "random",
    *,
    max_trials: int | None = None,
    epochs: int,
    directory: str | os.PathLike = "tuning",
    project_name: str,
    overwrite: bool = False,
    seed: int = 0,
    max_failures: int = 3,
    max_retries: int = 1,
    hyperband_factor: int = 3,
    worker_timeout: float | None = None,
) -> kt.Tuner:
    """A KerasTuner tuner for ``algorithm`` (``random``, ``hyperband`` or ``bayesian``) with
    kzoo's oracle. Hyperband trains for at most ``epochs`` a trial; ``max_trials`` caps it."""
    if algorithm not in ALGORITHMS:
        raise KzooError(f"unknown search algorithm {algorithm!r}; expected one of "
                        f"{', '.join(ALGORITHMS)}")
    if max_failures < 1 or (max_trials is not None and max_trials < 1):
        raise KzooError(f"max_trials={max_trials} and max_failures={max_failures}; expected >= 1")
    oracle_class, tuner_class = ALGORITHMS[algorithm]
    options = {
        "objective": OBJECTIVE,
        "seed": seed + 1,  # KerasTuner takes seed 0 for "pick one at random"
        "max_retries_per_trial": max_retries,
        "max_consecutive_failed_trials": max_failures,
        "max_trials": max_trials,
        "worker_timeout": worker_timeout,
    }
    if algorithm == "hyperband":
        options.update(max_epochs=epochs, factor=hyperband_factor)
    try:
        oracle = oracle_class(**options)
    except ImportError as error:
        raise KzooError(f"--algorithm {algorithm} needs scikit-learn and scipy ({error}); pip "
                        "install scikit-learn (or kzoo[bayesian]), or pick random or hyperband"
                        ) from error
    return tuner_class(oracle, hypermodel, directory=str(directory), project_name=project_name,
                       overwrite=overwrite)
