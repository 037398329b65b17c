"""Finding, listing, loading and saving recipe files."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import yaml

from kzoo.errors import KzooError
from kzoo.recipes.recipe import FineTune, Optimizer, Recipe, recipe_from_dict

DEFAULT_BACKBONE = "resnet50"  # what `kzoo finetune FOLDER` fine-tunes when no recipe is given


def recipe_dirs() -> list[Path]:
    """Where named recipes live: the source tree's ``zoo_configs/`` (a clone or an editable
    install), then the installed copy wherever pip put it (a venv, ``--user``, a wheel), found
    through the package's own record of its installed files."""
    source = Path(__file__).resolve().parents[2] / "zoo_configs"
    folders = [source] if source.is_dir() else []
    for folder in _installed_recipe_dirs():
        if folder not in folders:
            folders.append(folder)
    return folders


def _installed_recipe_dirs() -> list[Path]:
    from importlib import metadata

    try:
        distribution = metadata.distribution("kzoo")
    except metadata.PackageNotFoundError:
        return []
    found = []
    for entry in distribution.files or ():
        if entry.suffix == ".yaml" and entry.parent.name == "zoo_configs":
            folder = Path(distribution.locate_file(entry)).resolve().parent
            if folder not in found and folder.is_dir():
                found.append(folder)
    return found


def list_recipes() -> list[str]:
    names = {path.stem for folder in recipe_dirs() if folder.is_dir() for path in folder.glob("*.yaml")}
    return sorted(names)


def load_recipe(name_or_path: str | Path | Recipe) -> Recipe:
    """A recipe by name (``zoo_configs/NAME.yaml``) or by path to a YAML file."""
    if isinstance(name_or_path, Recipe):
        return name_or_path
    path = Path(name_or_path)
    if not path.is_file():
        if path.is_dir() and not _named(path):
            raise KzooError(
                f"{str(path)!r} is a folder, not a recipe (a name from `kzoo list --recipes` or "
                f"a YAML file); to fine-tune a pretrained model on a folder of images, run "
                f"`kzoo finetune {path}` (kzoo.fine_tune in Python)")
        if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
            raise KzooError(f"recipe file {str(path)!r} does not exist")
        found = [folder / f"{path.name}.yaml" for folder in recipe_dirs()]
        path = next((candidate for candidate in found if candidate.is_file()), None)
        if path is None:
            close = difflib.get_close_matches(str(name_or_path), list_recipes(), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
            raise KzooError(
                f"unknown recipe {str(name_or_path)!r}; {hint}(`kzoo list --recipes` shows all, "
                "or pass the path of a YAML file)"
            )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise KzooError(f"{path}: not a recipe: not a text (UTF-8 YAML) file") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(error, "problem", None) or "a syntax error").split())
        raise KzooError(f"{path}: not valid YAML{where}: {problem}; fix the file (a YAML "
                        "mapping of recipe keys)") from None
    return recipe_from_dict(path.stem, data, source=str(path))


def _named(path: Path) -> bool:
    """Whether ``path`` could be the name of a shipped recipe (as ``kzoo train NAME`` reads it)."""
    return len(path.parts) == 1 and any((folder / f"{path.name}.yaml").is_file()
                                        for folder in recipe_dirs())


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))


def default_recipe(folder: str | os.PathLike, backbone: str = DEFAULT_BACKBONE) -> Recipe:
    """The settings ``fine_tune`` uses when no recipe is given: ImageNet weights, the
    ``imagenet`` augmentation preset, Adam with a cosine schedule, two phases.
    """
    name = Path(folder).expanduser().resolve().name or "images"
    return Recipe(
        name=f"finetune-{name}",
        model=backbone,
        dataset=str(folder),
        description=f"{backbone} pretrained on ImageNet, fine-tuned on {folder}",
        model_options={"weights": "imagenet"},
        augmentation="imagenet",
        optimizer=Optimizer(name="adam", learning_rate=3e-5, schedule="cosine"),
        batch_size=32,
        epochs=4,
        validation_split=0.2,
        finetune=FineTune(),
    )
