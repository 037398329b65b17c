"""The generated tables of README.md and docs/*.md match what they are generated from."""

import importlib.util
import re
from pathlib import Path

import pytest

from kzoo.models.catalog import model_table

ROOT = Path(__file__).resolve().parents[1]


def _marked_files() -> list[Path]:
    """The files that hold generated tables: README.md and the docs pages."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _between(text: str, name: str) -> str:
    start, end = f"<!-- {name}:start -->\n", f"\n<!-- {name}:end -->"
    return text.split(start, 1)[1].split(end, 1)[0]


def _readme_tables():
    """bench/readme_tables.py, loaded as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "bench" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATED = {  # marker: how bench/readme_tables.py makes what lies between its markers
    "models": lambda tables: model_table(),
    "results": lambda tables: tables.table(tables.load_results()),
    "speed": lambda tables: tables.speed_table(),
    "folders": lambda tables: tables.folder_table(),
    "precision": lambda tables: tables.precision_table(),
    "distributed": lambda tables: tables.distributed_table(),
    "label_audit": lambda tables: tables.label_audit_table(),
    "lr_auto": lambda tables: tables.lr_auto_table(),
}


@pytest.mark.parametrize("marker", [  # the model table builds every model
    pytest.param(name, marks=pytest.mark.slow) if name == "models" else name for name in GENERATED])
def test_generated_table_is_generated_from_its_source(marker):
    holders = [path for path in _marked_files() if f"<!-- {marker}:start -->" in path.read_text()]
    assert holders, (
        f"no file holds the {marker} table: put <!-- {marker}:start --> and <!-- {marker}:end --> "
        "in README.md or a docs/*.md page"
    )
    expected = GENERATED[marker](_readme_tables())
    for path in holders:
        assert _between(path.read_text(), marker) == expected, (
            f"{path.relative_to(ROOT)}'s {marker} table is stale: run python bench/readme_tables.py"
        )


def test_every_marker_names_a_generated_table():
    for path in _marked_files():
        for name in re.findall(r"<!-- (\w+):start -->", path.read_text()):
            assert name in GENERATED, (
                f"{path.relative_to(ROOT)} has markers for {name!r}, a table nothing generates"
            )
