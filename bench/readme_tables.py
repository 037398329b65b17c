"""Regenerate the README's generated tables: models (from the registry) and results (from
bench/results/*.json).

    python bench/readme_tables.py          # rewrite both tables in README.md
    python bench/readme_tables.py --check  # exit 1 if README.md is out of date

Result rows group runs by recipe: mean test accuracy over the seeds run (and the spread when
there are several), the expected figure and its source, and the command that reproduces it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"


def load_results(folder: Path = HERE / "results") -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        if "recipe" in record and "test_accuracy" in record:
            grouped[record["recipe"]].append(record)
    return grouped


def table(grouped: dict[str, list[dict]]) -> str:
    """One row per recipe; the expected figure and its source come from the recipe itself."""
    from kzoo.recipes import load_recipe

    lines = [
        "| recipe | test accuracy | seeds | epochs | minutes (each) | expected | source | command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for recipe, records in sorted(grouped.items()):
        accuracies = [r["test_accuracy"] for r in records]
        shown = f"{statistics.mean(accuracies):.2%}"
        if len(accuracies) > 1:
            shown += f" ± {statistics.stdev(accuracies):.2%}"
        minutes = statistics.mean(r["wall_time_s"] for r in records) / 60
        recipe_file = load_recipe(recipe)
        expected = recipe_file.expected_accuracy
        seeds = " ".join(str(r["seed"]) for r in sorted(records, key=lambda r: r["seed"]))
        command = f"`python bench/accuracy.py {recipe} --seeds {seeds} --data-dir ../shared/data`"
        lines.append(
            f"| `{recipe}` | {shown} | {len(records)} | {records[0]['epochs']} | {minutes:.1f} | "
            f"{f'{expected:.1%}' if expected else '-'} | {recipe_file.reference} | "
            f"{command} |"
        )
    return "\n".join(lines)


def replace_between_markers(text: str, name: str, body: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def updated_readme(text: str) -> str:
    from kzoo.catalog import model_table

    text = replace_between_markers(text, "models", model_table())
    return replace_between_markers(text, "results", table(load_results()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = README.read_text()
    updated = updated_readme(text)
    if args.check:
        if updated != text:
            print("README.md's tables are out of date: run python bench/readme_tables.py")
            return 1
        return 0
    README.write_text(updated)
    print(f"updated the model and results tables in {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
