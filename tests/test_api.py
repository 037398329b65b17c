"""The public API as a user meets it: ``dir(kzoo)`` is the documented list, importing kzoo
changes and prints nothing, signatures are short with readable defaults, and every verb takes
what a user has (a folder, a recipe name)."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

from messy_images import make_split_folder

import kzoo

DOCUMENTED = [  # the README and docs list these; anything else is internal
    "KzooError", "Recipe", "audit", "augmentation", "build", "describe", "evaluate", "explain",
    "export", "find_label_issues", "fine_tune", "grad_cam", "list_models", "list_recipes",
    "load_dataset", "load_model", "load_recipe", "lr_find", "predict", "register_model",
    "train", "tune",
]


def test_dir_lists_only_the_documented_api():
    code = "import kzoo; print([n for n in dir(kzoo) if not n.startswith('_')])"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout
    assert eval(shown) == DOCUMENTED
    assert sorted(kzoo.__all__) == sorted([*DOCUMENTED, "__version__"])


def test_importing_kzoo_changes_no_environment_and_prints_nothing():
    code = ("import json, os; before = dict(os.environ); import kzoo; "
            "print(json.dumps(sorted(set(os.environ.items()) ^ set(before.items()))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert json.loads(result.stdout) == [] and result.stderr == ""


def test_public_calls_are_short_and_their_defaults_readable():
    for name in ("fine_tune", "train", "lr_find", "audit", "predict", "evaluate", "export"):
        function = getattr(kzoo, name)
        signature = inspect.signature(function)
        assert len(signature.parameters) <= 12, f"kzoo.{name} takes {len(signature.parameters)}"
        assert "object at 0x" not in str(signature), f"kzoo.{name}: {signature}"
        assert function.__doc__ and function.__doc__.strip(), f"kzoo.{name} has no docstring"


def test_fine_tune_groups_its_settings():
    parameters = inspect.signature(kzoo.fine_tune).parameters
    assert list(parameters)[:2] == ["folder", "recipe"]  # the data, then the settings
    for group in ("model_options", "finetune", "distribution"):
        assert parameters[group].default is None
    assert parameters["overrides"].kind is inspect.Parameter.VAR_KEYWORD


def test_audit_takes_a_folder_like_every_other_verb(tmp_path, monkeypatch):
    monkeypatch.setenv("KZOO_CACHE_DIR", str(tmp_path / "cache"))
    folder = make_split_folder(tmp_path / "photos", train=4, val=2)
    report = kzoo.audit(folder, image_size=32)
    assert report["class_names"] == ["ants", "bees"]
    assert report["splits"]["train"]["per_class"] == {"ants": 4, "bees": 4}
    assert report["splits"]["validation"]["per_class"] == {"ants": 2, "bees": 2}
