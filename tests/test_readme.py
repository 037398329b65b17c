"""The README's generated tables match what they are generated from."""

import importlib.util
from pathlib import Path

import pytest

from kzoo.catalog import model_table

ROOT = Path(__file__).resolve().parents[1]


def _between(text: str, name: str) -> str:
    start, end = f"<!-- {name}:start -->\n", f"\n<!-- {name}:end -->"
    return text.split(start, 1)[1].split(end, 1)[0]


def _readme_tables():
    """bench/readme_tables.py, loaded as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "bench" / "readme_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATED = {  # README marker: how bench/readme_tables.py makes what lies between its markers
    "models": lambda tables: model_table(),
    "results": lambda tables: tables.table(tables.load_results()),
    "speed": lambda tables: tables.speed_table(),
    "folders": lambda tables: tables.folder_table(),
    "precision": lambda tables: tables.precision_table(),
    "distributed": lambda tables: tables.distributed_table(),
    "label_audit": lambda tables: tables.label_audit_table(),
    "lr_auto": lambda tables: tables.lr_auto_table(),
}


@pytest.mark.parametrize("marker", GENERATED)
def test_readme_table_is_generated_from_its_source(marker):
    readme = (ROOT / "README.md").read_text()
    assert _between(readme, marker) == GENERATED[marker](_readme_tables()), (
        f"README's {marker} table is stale: run python bench/readme_tables.py"
    )
