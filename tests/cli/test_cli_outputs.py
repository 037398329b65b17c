"""Where the ``kzoo`` command writes what it makes, and what it says about it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import write_image_folder

from kzoo.cli.main import main


def run_main(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def written_to(out: str) -> Path:
    lines = [line for line in out.splitlines() if line.startswith("kzoo: audit written to ")]
    assert len(lines) == 1, out
    return Path(lines[0].removeprefix("kzoo: audit written to "))


def test_audit_writes_into_the_folders_cache_entry_not_the_current_directory(
        tmp_path, monkeypatch, capsys):
    folder = write_image_folder(tmp_path / "pets", {"cat": 3, "dog": 3})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, err = run_main(capsys, "audit", folder, "--image-size", "16", "--quiet")
    assert code == 0, err
    assert list(elsewhere.iterdir()) == []  # nothing dropped where the command was run
    report = written_to(out)
    assert report.name == "audit.json" and report.is_file()
    assert report.is_relative_to(Path(os.environ["KZOO_CACHE_DIR"]))
    assert not folder.joinpath("audit.json").exists()  # nor into the user's images
    assert json.loads(report.read_text())["splits"]["train"]["images"] == 6


def test_audit_output_names_a_file_or_a_folder(tmp_path, capsys):
    folder = write_image_folder(tmp_path / "pets", {"cat": 2, "dog": 2})
    code, out, err = run_main(capsys, "audit", folder, "--image-size", "16", "--quiet",
                              "--output", tmp_path / "report.json")
    assert code == 0, err
    assert written_to(out) == tmp_path / "report.json" and (tmp_path / "report.json").is_file()
    reports = tmp_path / "reports"
    reports.mkdir()
    code, out, err = run_main(capsys, "audit", folder, "--image-size", "16", "--quiet",
                              "--output", reports)
    assert code == 0, err
    assert written_to(out) == reports / "audit.json" and (reports / "audit.json").is_file()
