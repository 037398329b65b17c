"""The shape of the package: subpackages by job in layers whose imports go one way (down), no
import cycles (counting the imports inside functions too), no module imports another's private
names, no module is over 450 lines, and every module imports on its own."""

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


# Each subpackage's layer: a module may import from its own layer's package and from lower
# layers, never from a higher one, nor from a sibling package of the same layer.
LAYERS = [
    {"kzoo", "kzoo.errors", "kzoo.files", "kzoo._compat"},
    {"kzoo.recipes"},
    {"kzoo.models", "kzoo.data"},
    {"kzoo.analysis"},
    {"kzoo.training"},
    {"kzoo.tuning"},
    {"kzoo.cli", "kzoo.notebook"},  # the command, and the helpers the notebooks import
    {"kzoo.__main__"},
]


def layer_of(module: str) -> tuple[int, str]:
    """(layer number, package) of a module: the longest package prefix named in LAYERS."""
    for depth in range(module.count("."), -1, -1):
        package = ".".join(module.split(".")[: depth + 1])
        for number, packages in enumerate(LAYERS):
            if package in packages:
                return number, package
    raise AssertionError(f"{module} belongs to no layer: add its package to LAYERS")


def layering_violations(edges: dict[str, set[str]]) -> list[str]:
    found = []
    for importer, targets in edges.items():
        low, own = layer_of(importer)
        for target in sorted(targets):
            level, package = layer_of(target)
            if level > low or (level == low and package != own and level > 0):
                found.append(f"{importer} (layer {low}, {own}) imports {target} "
                             f"(layer {level}, {package})")
    return found


def test_layers_import_downwards_only():
    violations = layering_violations(graph())
    assert not violations, "\n".join(violations)


def test_the_layer_check_finds_an_upward_import():
    assert layering_violations({"kzoo.models.registry": {"kzoo.training.train"}})
    assert layering_violations({"kzoo.data.scan": {"kzoo.models.registry"}})  # siblings
    assert not layering_violations({"kzoo.training.train": {"kzoo.data.scan", "kzoo.errors"}})


def test_every_module_belongs_to_a_subpackage_by_job():
    top = sorted(name for name in MODULES if name.count(".") == 1
                 and name not in {"kzoo.__main__", "kzoo.errors", "kzoo.files", "kzoo._compat",
                                  "kzoo.notebook"}
                 and not (PACKAGE / name.split(".")[1]).is_dir())
    assert not top, f"modules outside the subpackages: {top}"
    for name in MODULES:
        layer_of(name)


def test_no_module_is_over_450_lines():
    long = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()
            if len(path.read_text().splitlines()) > 450}
    assert not long, f"modules over 450 lines (split them by job): {long}"


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


@pytest.mark.slow
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


@pytest.mark.parametrize("module", ["kzoo.cli.main", "kzoo.models.registry", "kzoo.models.catalog",
                                    "kzoo.data.scan", "kzoo.data.audit", "kzoo.data.images",
                                    "kzoo.recipes.zoo", "kzoo.files", "kzoo.training.precision"])
def test_light_modules_need_no_tensorflow(module):
    import subprocess
    import sys

    code = f"import sys, {module}; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False", f"{module} imports TensorFlow or Keras"
