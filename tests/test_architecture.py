"""The shape of the package: arrows between modules go one way (no import cycles, counting the
imports inside functions too), no module imports another's private names, and every module
imports on its own."""

from __future__ import annotations

import ast
import importlib
import multiprocessing
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "kzoo"
SHARED_PRIVATE = {"kzoo._compat"}  # the one home of private third-party names, for all to use


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def kzoo_imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names imported from it) for every ``import kzoo...`` / ``from kzoo... import``
    in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kzoo"):
            names = [alias.name for alias in node.names]
            if names and all(f"{node.module}.{n}" in MODULES for n in names):
                found += [(f"{node.module}.{n}", []) for n in names]  # from kzoo import models
            else:
                found.append((node.module, names))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.startswith("kzoo")]
    return found


def graph() -> dict[str, set[str]]:
    edges = {}
    for name, path in MODULES.items():
        targets = {target for target, _ in kzoo_imports(path)}
        # importing a module imports its package first; "kzoo" itself imports nothing eagerly
        edges[name] = {t for t in targets if t in MODULES and t != name and t != "kzoo"}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_another_modules_private_names():
    crossing = [
        f"{importer} imports {name} from {module}"
        for importer, path in MODULES.items()
        for module, names in kzoo_imports(path)
        for name in names
        if name.startswith("_") and not name.startswith("__") and module != importer
        and module not in SHARED_PRIVATE
    ]
    assert not crossing, "\n".join(crossing)


def _import_alone(name: str) -> None:
    importlib.import_module(name)


def test_every_module_imports_on_its_own():
    """Each module in a fresh child whose parent has imported the third-party libraries but
    no kzoo module, so a module that works only after another was imported fails here."""
    import keras  # noqa: F401  (imported once here, so each child only imports kzoo)
    import keras_tuner  # noqa: F401

    context = multiprocessing.get_context("fork")
    failed = []
    for name in [m for m in MODULES if m != "kzoo.__main__"]:  # that one runs the command
        child = context.Process(target=_import_alone, args=(name,))
        child.start()
        child.join(120)
        if child.exitcode != 0:
            failed.append(name)
    assert not failed, f"these modules do not import on their own: {', '.join(failed)}"


@pytest.mark.parametrize("module", ["kzoo.cli", "kzoo.registry", "kzoo.catalog", "kzoo.folders",
                                    "kzoo.images", "kzoo.recipes", "kzoo.files",
                                    "kzoo.precision"])
def test_light_modules_need_no_tensorflow(module):
    import subprocess
    import sys

    code = f"import sys, {module}; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False", f"{module} imports TensorFlow or Keras"
