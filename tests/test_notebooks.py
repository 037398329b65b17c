"""Every notebook in notebooks/ runs top to bottom with its small settings, offline, and reports
results that make sense; and every notebook is committed without outputs.

A notebook is run by an IPython kernel of the interpreter running the tests (see
bench/notebooks.py, whose functions these are), with ``KZOO_NOTEBOOK_SMALL=1`` and
``KZOO_OFFLINE=1``, in a temporary directory. Its last code cell prints a JSON object of what
it reached; the small-settings floors below check those figures, well above chance but below
what the small runs reach, so that a notebook that quietly stops learning fails.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 240  # one cell, small settings; the slowest takes about 30 s on two cores

# notebook: {figure: the least it may be in small mode}. A notebook not listed here still has
# to run without an error and print its results; every figure named *accuracy must be in [0, 1].
SMALL_MODE_FLOORS = {
    "01_torch_digits_convnet": {"test_accuracy": 0.6},
    "02_softmax_regression": {"test_accuracy": 0.7},
    "03_learning_rate_annealing": {"lr_0.01_val_accuracy": 0.5, "lr_annealed_val_accuracy": 0.6},
    "04_or_to_cifar10": {"or_accuracy": 1.0, "xor_hidden_layer_accuracy": 1.0,
                         "cifar_three_sets_test_accuracy": 0.3},
    "05_crash_course_cnn_transfer": {"lenet5_test_accuracy": 0.6, "overfit_50_train_accuracy": 1.0},
}
# And at most: one unit cannot learn XOR (three of the four rows, at best).
SMALL_MODE_CEILINGS = {"04_or_to_cifar10": {"xor_one_unit_accuracy": 0.75}}


def _runner():
    spec = importlib.util.spec_from_file_location("bench_notebooks", ROOT / "bench" / "notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = _runner()


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 5, f"expected the seed notebooks in {ROOT / 'notebooks'}"


@pytest.mark.notebook
def test_notebooks_run_on_this_python(tmp_path):
    """The kernel is this interpreter (this virtual environment), whatever Jupyter kernels the
    machine has installed elsewhere."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    path = tmp_path / "which.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("import sys; print(sys.executable)")]), path)
    notebook = runner.execute(path, cwd=tmp_path, cell_timeout=60)
    assert runner.stdout_of(notebook.cells[0]).strip() == sys.executable


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_committed_without_outputs(path):
    notebook = json.loads(path.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code, f"{path.name} has no code cell"
    dirty = [index for index, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} hold outputs or execution counts; clear them "
                       "(jupyter nbconvert --clear-output --inplace notebooks/*.ipynb)")
    assert notebook["metadata"].get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
@pytest.mark.notebook
@pytest.mark.slow
def test_notebook_runs_with_small_settings(path, tmp_path, monkeypatch):
    monkeypatch.setenv("KZOO_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("KZOO_OFFLINE", "1")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))  # no weights cached by hand
    monkeypatch.delenv("KZOO_DATA_DIR", raising=False)
    monkeypatch.delenv("KZOO_WEIGHTS_DIR", raising=False)

    notebook = runner.execute(path, cwd=tmp_path, cell_timeout=CELL_TIMEOUT_S)

    errors = [output for cell in notebook.cells for output in cell.get("outputs", [])
              if output.get("output_type") == "error"]
    assert not errors, errors
    results = runner.results_of(notebook)
    assert results.get("small") is True, f"{path.name} did not run its small settings: {results}"
    for name, value in results.items():
        if name.endswith("accuracy"):
            assert isinstance(value, float | int) and 0 <= value <= 1, (name, value)
    for name, floor in SMALL_MODE_FLOORS.get(path.stem, {}).items():
        assert results[name] >= floor, f"{path.name}: {name} = {results[name]} < {floor}; {results}"
    for name, ceiling in SMALL_MODE_CEILINGS.get(path.stem, {}).items():
        assert results[name] <= ceiling, f"{path.name}: {name} = {results[name]} > {ceiling}; {results}"
