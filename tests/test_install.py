"""A wheel works away from the source tree: built, installed with ``pip install --user`` into an
empty user base, it lists and trains its recipes (``zoo_configs/*.yaml``, installed as data
files under ``share/kzoo/zoo_configs``) and reads its package data (the MNIST sample, the model
index).

A virtual environment turns the user site off, so pip refuses ``--user`` there: the wheel is
installed by the interpreter the venv was made from, and the venv's interpreter (which has
TensorFlow and the other dependencies) then runs kzoo with that user site-packages on
``PYTHONPATH``, from an unrelated folder so that the checkout is nowhere on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.util import find_spec
from pathlib import Path

import pytest
from conftest import REPO, cli_env

pytestmark = pytest.mark.slow

# ignored in the copy the wheel is built from: VCS data, environments, build and run outputs
_TOP_LEVEL_SKIPPED = {".git", ".venv", "build", "dist", "runs", "site", "tuning", "tests",
                      "bench", "notebooks"}

_PROBE = """
import json, kzoo
from kzoo.recipes.zoo import recipe_dirs
folders = recipe_dirs()
recipe = next(str(f / "lenet5_mnist_sample.yaml") for f in folders
              if (f / "lenet5_mnist_sample.yaml").is_file())
print(json.dumps({"kzoo": kzoo.__file__, "folders": [str(f) for f in folders], "recipe": recipe}))
"""


def _ignore(folder: str, names: list[str]) -> set[str]:
    skipped = {name for name in names
               if name == "__pycache__" or name.endswith((".egg-info", "_cache"))}
    if Path(folder) == REPO:
        skipped |= _TOP_LEVEL_SKIPPED & set(names)
    return skipped


def _run(command: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True,
                            timeout=300, check=False, **kwargs)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


def _build_wheel(tmp_path: Path) -> Path:
    """A wheel of this checkout, built from a copy (an in-tree build leaves build/ behind,
    whose stale files would end up in later wheels)."""
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=_ignore)
    isolation = [] if find_spec("setuptools") is None or find_spec("wheel") is None \
        else ["--no-build-isolation"]  # without them pip fetches the build requirements
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "--quiet",
          "--disable-pip-version-check", "-w", tmp_path / "wheels", source])
    (wheel,) = (tmp_path / "wheels").glob("kzoo-*.whl")
    return wheel


def test_user_install_of_the_wheel_finds_its_recipes_and_data(tmp_path):
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    if subprocess.run([base_python, "-m", "pip", "--version"], capture_output=True,
                      check=False).returncode != 0:
        pytest.skip(f"{base_python} (the interpreter the venv was made from) has no pip")

    wheel = _build_wheel(tmp_path)
    contents = set(zipfile.ZipFile(wheel).namelist())
    for packaged in ("kzoo/data/assets/mnist_sample.npz", "kzoo/models/index.json"):
        assert packaged in contents, f"{packaged} is missing from {wheel.name}"
    assert any(name.endswith("/data/share/kzoo/zoo_configs/lenet5_mnist_sample.yaml")
               for name in contents), sorted(contents)

    userbase = tmp_path / "userbase"
    install_env = {**os.environ, "PYTHONUSERBASE": str(userbase),
                   "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                   "PIP_BREAK_SYSTEM_PACKAGES": "1"}  # a distribution's "externally managed" python
    for variable in ("PYTHONNOUSERSITE", "PYTHONPATH", "PIP_REQUIRE_VIRTUALENV"):
        install_env.pop(variable, None)
    _run([base_python, "-m", "pip", "install", "--user", "--no-deps", "--no-index",
          "--no-warn-script-location", "--quiet", wheel], env=install_env, cwd=tmp_path)
    site_packages = Path(_run(
        [base_python, "-c", "import sysconfig; print(sysconfig.get_path('purelib', 'posix_user'))"],
        env=install_env).stdout.strip())
    assert site_packages.is_relative_to(userbase) and (site_packages / "kzoo").is_dir()
    assert (userbase / "bin" / "kzoo").is_file()  # the console script

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = cli_env()
    env["PYTHONPATH"] = str(site_packages)  # cli_env puts the checkout first: not here

    found = json.loads(_run([sys.executable, "-c", _PROBE], cwd=elsewhere, env=env)
                       .stdout.strip().splitlines()[-1])
    assert Path(found["kzoo"]).is_relative_to(site_packages), found
    assert not Path(found["kzoo"]).resolve().is_relative_to(REPO), found
    assert Path(found["recipe"]).parent == (userbase / "share" / "kzoo" / "zoo_configs").resolve(), \
        found
    assert not any(Path(folder).is_relative_to(REPO) for folder in found["folders"]), found

    listed = _run([sys.executable, "-m", "kzoo", "list", "--recipes"], cwd=elsewhere, env=env)
    assert "lenet5_mnist_sample" in listed.stdout, listed.stdout

    run_dir = tmp_path / "run"
    _run([sys.executable, "-m", "kzoo", "train", "lenet5_mnist_sample", "--epochs", "1",
          "--run-dir", run_dir], cwd=elsewhere, env=env)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["recipe"] == "lenet5_mnist_sample", metrics
