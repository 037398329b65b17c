"""``kzoo list`` and ``kzoo info``: the models and recipes of the zoo."""

from __future__ import annotations

import argparse
import fnmatch
import json

from kzoo.cli.flags import add_format, add_json
from kzoo.errors import KzooError


def _list(args: argparse.Namespace) -> None:
    from kzoo.models.catalog import model_table
    from kzoo.models.registry import get_spec, list_models
    from kzoo.recipes.zoo import list_recipes, load_recipe

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
    from kzoo.models.catalog import describe

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


def add_commands(commands) -> None:
    listing = commands.add_parser("list", help="list models (or recipes)")
    listing.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'lenet*'")
    listing.add_argument("--tag", help="only models with this tag, e.g. pretrained")
    listing.add_argument("--recipes", action="store_true", help="list recipes instead of models")
    add_format(listing, ("text", "markdown"), "text")
    listing.set_defaults(run=_list)

    info = commands.add_parser("info", help="describe one model")
    info.add_argument("name", help="a model name from `kzoo list`")
    add_json(info)
    info.set_defaults(run=_info)
