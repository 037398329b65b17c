"""The README's generated tables match what they are generated from."""

import importlib.util
from pathlib import Path

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


def test_model_table_is_generated_from_the_registry():
    readme = (ROOT / "README.md").read_text()
    assert _between(readme, "models") == model_table(), (
        "README's model table is stale: run python bench/readme_tables.py"
    )


def test_readme_tables_is_generated_from_the_bench_results():
    readme_tables = _readme_tables()
    readme = (ROOT / "README.md").read_text()
    assert _between(readme, "results") == readme_tables.table(readme_tables.load_results()), (
        "README's results table is stale: run python bench/readme_tables.py"
    )


def test_speed_table_is_generated_from_the_speed_results():
    readme_tables = _readme_tables()
    readme = (ROOT / "README.md").read_text()
    assert _between(readme, "speed") == readme_tables.speed_table(), (
        "README's speed table is stale: run python bench/readme_tables.py"
    )


def test_folder_table_is_generated_from_the_folder_benchmark():
    readme_tables = _readme_tables()
    readme = (ROOT / "README.md").read_text()
    assert _between(readme, "folders") == readme_tables.folder_table(), (
        "README's image-folder table is stale: run python bench/readme_tables.py"
    )


def test_precision_table_is_generated_from_the_precision_results():
    readme_tables = _readme_tables()
    readme = (ROOT / "README.md").read_text()
    assert _between(readme, "precision") == readme_tables.precision_table(), (
        "README's precision table is stale: run python bench/readme_tables.py"
    )
