"""Run the notebooks in notebooks/ on real data and record the figures they report.

    python bench/notebooks.py 02_softmax_regression 05_crash_course_cnn_transfer --data-dir ../shared/data

Each notebook runs top to bottom with its full settings (``KZOO_DATA_DIR`` set to
``--data-dir``, ``KZOO_NOTEBOOK_SMALL=0``) in a scratch directory, by a Python kernel of this
interpreter. The JSON object its last cell prints goes to
``bench/results/notebooks/NAME.json``, with the command, wall time, machine and versions.
``--small`` runs the small settings instead, as the tests do. The executed notebook, with its
outputs, is written only where ``--executed DIR`` says (the committed notebooks have none).

tests/test_notebooks.py runs every notebook in small mode with :func:`execute` and
:func:`results_of`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
RESULTS = Path(__file__).resolve().parent / "results" / "notebooks"


def kernel_manager():
    """A manager for an IPython kernel run by this very interpreter (``sys.executable``), never
    a ``python3`` kernel spec that some Jupyter folder of the user's points elsewhere."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    # No kernel folders: "python3" resolves to ipykernel's built-in spec, which runs
    # sys.executable -m ipykernel_launcher.
    return KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))


def execute(path: str | os.PathLike, cwd: str | os.PathLike, cell_timeout: int | None = None):
    """Run the notebook at ``path`` top to bottom in ``cwd`` (the kernel inherits this
    process's environment); return the executed notebook. A cell that raises raises
    ``nbclient.exceptions.CellExecutionError`` with the cell's traceback."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(str(path), as_version=4)
    manager = kernel_manager()
    client = NotebookClient(notebook, km=manager, timeout=cell_timeout,
                            resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute()
    finally:  # nbclient leaves a kernel it did not start itself running
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)
    return notebook


def stdout_of(cell) -> str:
    return "".join(output.get("text", "") for output in cell.get("outputs", [])
                   if output.get("output_type") == "stream" and output.get("name") == "stdout")


def results_of(notebook) -> dict[str, Any]:
    """The JSON object the notebook's last code cell prints: the figures it reports."""
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    text = stdout_of(cells[-1]) if cells else ""
    try:
        results = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"the last code cell printed no JSON object ({error}): {text[-500:]!r}") from None
    if not isinstance(results, dict):
        raise TypeError(f"the last code cell printed {type(results).__name__}, not a JSON object")
    return results


def machine() -> dict[str, object]:
    names = []
    if Path("/proc/cpuinfo").is_file():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
    return {"platform": platform.platform(), "cpu": names[0] if names else platform.processor(),
            "cpus": os.cpu_count(), "python": platform.python_version()}


def find(name: str) -> Path:
    path = Path(name)
    if path.suffix == ".ipynb" and path.is_file():
        return path
    matches = sorted(NOTEBOOKS.glob(f"{path.stem}*.ipynb"))
    if len(matches) != 1:
        known = ", ".join(p.stem for p in sorted(NOTEBOOKS.glob("*.ipynb")))
        raise SystemExit(f"notebook {name!r} matches {len(matches)} notebooks; expected one of {known}")
    return matches[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", help="names (or a unique prefix: 02) of notebooks")
    parser.add_argument("--data-dir", default=os.environ.get("KZOO_DATA_DIR"),
                        help="the real data (default $KZOO_DATA_DIR)")
    parser.add_argument("--small", action="store_true", help="small settings, as the tests run")
    parser.add_argument("--executed", help="also write each executed notebook into this folder")
    parser.add_argument("--output", default=str(RESULTS), help=f"default {RESULTS}")
    args = parser.parse_args(argv)
    if not args.small and not args.data_dir:
        parser.error("full settings need real data: pass --data-dir DIR (or set KZOO_DATA_DIR)")
    os.environ["KZOO_NOTEBOOK_SMALL"] = "1" if args.small else "0"
    if args.data_dir:
        os.environ["KZOO_DATA_DIR"] = str(Path(args.data_dir).expanduser().resolve())

    import nbformat

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    for name in args.notebooks:
        path = find(name)
        with tempfile.TemporaryDirectory(prefix=f"kzoo-{path.stem}-") as scratch:
            started = time.perf_counter()
            notebook = execute(path, cwd=scratch)
            wall = time.perf_counter() - started
        results = results_of(notebook)
        if args.executed:
            Path(args.executed).mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, Path(args.executed) / path.name)
        record = {
            "notebook": path.name,
            "settings": "small" if args.small else "full",
            "results": results,
            "wall_time_s": round(wall, 1),
            "command": " ".join(["python", "bench/notebooks.py", path.stem,
                                 *(["--small"] if args.small else []),
                                 *(["--data-dir", args.data_dir] if args.data_dir else [])]),
            "machine": machine(),
            "versions": {package: version(package) for package in ("kzoo", "keras", "tensorflow")},
            "date": time.strftime("%Y-%m-%d"),
        }
        target = output / f"{path.stem}.json"
        target.write_text(json.dumps(record, indent=2) + "\n")
        print(f"bench: {path.name} ({record['settings']} settings) in {wall / 60:.1f} min: "
              f"{json.dumps(results)} -> {target}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
