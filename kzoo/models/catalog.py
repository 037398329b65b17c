"""What the zoo offers, for people: ``describe(name)`` and the markdown model table."""

from __future__ import annotations

import json
import sys
from typing import Any

from kzoo.models.registry import (
    INDEX,
    count_parameters,
    get_spec,
    list_models,
    loaded_specs,
    parameter_count,
)
from kzoo.recipes.zoo import list_recipes, load_recipe


def recipes_using(model: str) -> list[dict[str, Any]]:
    """The recipes in ``zoo_configs/`` that train ``model``, with the accuracy each expects."""
    found = []
    for name in list_recipes():
        recipe = load_recipe(name)
        if recipe.model == model:
            found.append({"recipe": name, "dataset": recipe.dataset,
                          "expected_accuracy": recipe.expected_accuracy})
    return found


def describe(name: str) -> dict[str, Any]:
    """A model's spec: description, source, defaults, parameter count, recipes, known accuracy.

    >>> describe("lenet5")["parameters"]
    61706
    """
    spec = get_spec(name)
    recipes = recipes_using(name)
    known = [r for r in recipes if r["expected_accuracy"] is not None]
    return {
        "name": spec.name,
        "description": spec.description,
        "source": spec.source,
        "input_shape": spec.input_shape,
        "num_classes": spec.num_classes,
        "parameters": parameter_count(name),
        "tags": list(spec.tags),
        "options": spec.options,
        "recipes": recipes,
        "known_accuracy": {r["recipe"]: r["expected_accuracy"] for r in known},
    }


def model_table() -> str:
    """The markdown table of every registered model, as the README shows it."""
    lines = [
        "| name | input | classes | parameters | recipes (expected test accuracy) | what |",
        "|---|---|---|---|---|---|",
    ]
    for name in list_models():
        info = describe(name)
        recipes = ", ".join(
            f"`{r['recipe']}`" + (f" ({r['expected_accuracy']:.1%})" if r["expected_accuracy"] else "")
            for r in info["recipes"]
        ) or "-"
        shape = "x".join(str(d) for d in info["input_shape"] or ())
        lines.append(
            f"| `{name}` | {shape} | {info['num_classes'] or '-'} | {info['parameters']:,} | "
            f"{recipes} | {get_spec(name).summary} |"
        )
    return "\n".join(lines)


def model_index() -> dict[str, Any]:
    """``models/index.json`` as the builders say it should be (every model built once)."""
    entries = {}
    for name, spec in sorted(loaded_specs().items()):
        entry = spec.to_index()
        entry["parameters"] = count_parameters(name)
        entries[name] = json.loads(json.dumps(entry))  # tuples as lists, as read back
    return entries


def write_model_index() -> None:
    INDEX.write_text(json.dumps(model_index(), indent=1) + "\n")


if __name__ == "__main__":  # python -m kzoo.models.catalog: rewrite models/index.json
    write_model_index()
    print(f"wrote {INDEX}", file=sys.stderr)
