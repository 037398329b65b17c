"""The documentation: the docs/ site builds with every link resolved, and the README stays a
short read in the order a new user needs it."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

README_MAX_LINES = 250
# what kzoo is (the text under the title), then these sections, in this order
README_SECTIONS = [
    "Install",
    "Fine-tune on your own images",
    "Models",
    "Train a recipe",
    "Documentation",
]


def _readme() -> str:
    return (ROOT / "README.md").read_text()


def _headings(text: str, level: int) -> list[str]:
    """Markdown headings of one level, outside fenced code blocks."""
    found, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#" * level + " "):
            found.append(line[level + 1:].strip())
    return found


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs is not installed (pip install -e '.[dev]' installs it)")
def test_docs_site_builds_strictly(tmp_path):
    """`mkdocs build --strict` fails on a link to a missing page or anchor, or a page left out
    of the navigation."""
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stdout}{build.stderr}"


def test_readme_is_short():
    lines = len(_readme().splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail into docs/"
    )


def test_readme_sections_come_in_order():
    text = _readme()
    assert _headings(text, 1) == ["kzoo"]
    assert _headings(text, 2) == README_SECTIONS
    intro = text.split("\n## ", 1)[0]
    assert "kzoo is" in intro, "the README starts by saying what kzoo is"


def test_readme_links_resolve():
    """Relative links in the README (to docs pages, CONTRIBUTING.md) point at files that exist."""
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", _readme()):
        if "://" not in target:
            assert (ROOT / target).is_file(), f"README.md links to {target}, which does not exist"
