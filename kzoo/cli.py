"""The ``kzoo`` command: ``kzoo list``, ``kzoo info NAME``, ``kzoo train RECIPE``.

Each subcommand is a small function taking the parsed arguments; bad input is reported as one
line on stderr with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys

from kzoo.errors import KzooError


def _list(args: argparse.Namespace) -> None:
    from kzoo.catalog import model_table
    from kzoo.recipes import list_recipes, load_recipe
    from kzoo.registry import get_spec, list_models

    if args.recipes:
        for name in list_recipes():
            recipe = load_recipe(name)
            if fnmatch.fnmatchcase(name, args.pattern):
                expected = f"{recipe.expected_accuracy:.1%}" if recipe.expected_accuracy else "-"
                print(f"{name:36} {recipe.model:22} {recipe.dataset:14} expected {expected}")
        return
    if args.format == "markdown":
        print(model_table())
        return
    names = list_models(args.pattern, tag=args.tag)
    if not names:
        raise KzooError(f"no model matches {args.pattern!r}" + (f" with tag {args.tag!r}" if args.tag else ""))
    for name in names:
        spec = get_spec(name)
        print(f"{name:22} {spec.summary:52} [{', '.join(spec.tags)}]")


def _info(args: argparse.Namespace) -> None:
    from kzoo.catalog import describe

    info = describe(args.name)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return
    print(f"{info['name']}: {info['description']}")
    print(f"  source:       {info['source']}")
    print(f"  input shape:  {info['input_shape']}   classes: {info['num_classes']}")
    print(f"  parameters:   {info['parameters']:,}")
    print(f"  tags:         {', '.join(info['tags'])}")
    print(f"  options:      {', '.join(f'{k}={v!r}' for k, v in info['options'].items())}")
    for recipe in info["recipes"]:
        expected = recipe["expected_accuracy"]
        shown = f"expected test accuracy {expected:.1%}" if expected else ""
        print(f"  recipe:       {recipe['recipe']} ({recipe['dataset']}) {shown}")


def _train(args: argparse.Namespace) -> None:
    from kzoo.training import train

    train(
        args.recipe, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        dropout=args.dropout, seed=args.seed, data_dir=args.data_dir, run_dir=args.run_dir,
        resume=args.resume,
    )


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kzoo", description="A Keras model zoo.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="list models (or recipes)")
    listing.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'lenet*'")
    listing.add_argument("--tag", help="only models with this tag, e.g. pretrained")
    listing.add_argument("--recipes", action="store_true", help="list recipes instead of models")
    listing.add_argument("--format", choices=("text", "markdown"), default="text")
    listing.set_defaults(run=_list)

    info = commands.add_parser("info", help="describe one model")
    info.add_argument("name")
    info.add_argument("--json", action="store_true", help="print the spec as JSON")
    info.set_defaults(run=_info)

    training = commands.add_parser("train", help="train a recipe (a name or a YAML path)")
    training.add_argument("recipe", help="a recipe name from `kzoo list --recipes`, or a YAML path")
    training.add_argument("--epochs", type=int)
    training.add_argument("--batch-size", type=int)
    training.add_argument("--lr", type=float, help="learning rate")
    training.add_argument("--dropout", type=float, help="the model's dropout rate")
    training.add_argument("--seed", type=int)
    training.add_argument("--data-dir", help="folder holding the data (mnist.npz, cifar10/...)")
    training.add_argument("--run-dir", help="where results go (default runs/RECIPE-TIME)")
    training.add_argument("--resume", action="store_true",
                          help="continue an interrupted run (the latest one, or --run-dir)")
    training.set_defaults(run=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        args.run(args)
    except KzooError as error:
        print(f"kzoo: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
