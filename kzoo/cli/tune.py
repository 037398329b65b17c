"""``kzoo tune``: a search of a recipe's hyperparameters with KerasTuner."""

from __future__ import annotations

import argparse
from typing import Any

from kzoo.cli.flags import (
    add,
    add_data_dir,
    add_fields,
    add_loudness,
    add_run_dir,
    count,
    given,
    keras_verbosity,
    parameter_default,
    rate,
)

TUNE_FIELDS = ("epochs", "precision", "seed")
ALGORITHMS = ("random", "hyperband", "bayesian")  # as kzoo.tuning.ALGORITHMS


def _tune(args: argparse.Namespace) -> None:
    from kzoo.recipes.search import parse_search_option
    from kzoo.recipes.zoo import load_recipe

    load_recipe(args.recipe)  # a missing or bad recipe, or --search, fails before TensorFlow
    search = dict(parse_search_option(text) for text in args.search or [])
    from kzoo.tuning import tune

    options = {name: value for name, value in given(
        args, ["algorithm", "max_trials", "max_failures", "run_dir", *TUNE_FIELDS]).items()
        if value is not None}
    roles = given(args, ["chief", "worker", "tuner_id", "worker_timeout"])
    tune(
        args.recipe, **options,
        search=search,
        project_name=args.project, overwrite=args.overwrite, retrain_best=args.retrain_best,
        data_dir=args.data_dir, distribution=roles, verbose=keras_verbosity(args),
    )


def _default(name: str) -> Any:
    """The default of :func:`kzoo.tuning.tune` (imported when the help is printed: it imports
    TensorFlow)."""
    from kzoo.tuning import tune

    return parameter_default(tune, name)


def _max_failures() -> int:
    from kzoo.tuning import DEFAULT_MAX_FAILURES

    return DEFAULT_MAX_FAILURES


def _max_trials() -> str:
    from kzoo.tuning import DEFAULT_MAX_TRIALS

    return f"{DEFAULT_MAX_TRIALS}; hyperband: no cap"


def add_commands(commands) -> None:
    searching = commands.add_parser(
        "tune", help="search a recipe's hyperparameters with KerasTuner",
        description="Search learning rate, batch size and dropout (by default) with KerasTuner, "
        "starting from the recipe's own values. Run the same command again to resume.",
    )
    searching.add_argument("recipe",
                           help="a recipe name from `kzoo list --recipes`, or a YAML path")
    add(searching, "--algorithm", choices=ALGORITHMS, default=argparse.SUPPRESS,
        shown=lambda: _default("algorithm"),
        help="how trials are chosen: at random, by Hyperband (successive halving: --epochs is "
        "the most a trial trains) or by Bayesian optimisation")
    add(searching, "--max-trials", type=count, metavar="N", default=argparse.SUPPRESS,
        shown=_max_trials, help="trials to run")
    add_fields(searching, TUNE_FIELDS, "the recipe's")
    searching.add_argument("--search", action="append", metavar="NAME=SPEC",
                           help="where to search NAME: MIN:MAX[:STEP][:log], V1,V2,... or off; "
                           "e.g. learning_rate=1e-4:1e-1:log (repeatable; overrides the recipe's "
                           "search section)")
    add_run_dir(searching, lambda: f"{_default('run_dir')}/, a folder per search in it, see "
                "--project", hidden=("--directory",))
    searching.add_argument("--project", help="the search's folder in --run-dir (default: "
                           "RECIPE-ALGORITHM)")
    searching.add_argument("--overwrite", action="store_true",
                           help="start afresh instead of resuming the search in its folder")
    searching.add_argument("--retrain-best", action="store_true",
                           help="then train the best settings on train+validation into a run dir")
    add(searching, "--max-failures", type=count, metavar="N", default=argparse.SUPPRESS,
        shown=_max_failures, help="stop after N failed trials in a row")
    add_loudness(searching)
    add_data_dir(searching)
    role = searching.add_mutually_exclusive_group()
    role.add_argument("--chief", metavar="HOST:PORT",
                      help="serve the search to workers, listening on HOST:PORT")
    role.add_argument("--worker", metavar="HOST:PORT",
                      help="run trials for the chief at HOST:PORT")
    searching.add_argument("--worker-timeout", type=rate, metavar="SECONDS",
                           help="give a silent worker's trial to another after SECONDS (default: "
                           "3x the longest silence seen between a worker's reports, at least 60)")
    searching.add_argument("--tuner-id", help="a worker's name (default: worker-HOST-PID); reuse "
                           "it when restarting a worker so it takes up its unfinished trial")
    searching.set_defaults(run=_tune)
