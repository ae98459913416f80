"""Packaging metadata, the licence, one version, and what --version reports."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

import tamalloc
from _support import run_cli

ROOT = Path(__file__).resolve().parents[1]


def _project() -> dict[str, object]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(data)


def test_licence_file_states_gpl_2_only() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "GPL-2.0-only" in text.split("\n\n", 1)[0]
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 2, June 1991" in text
    project = _project()["project"]
    assert isinstance(project, dict)
    assert project["license"] == {"text": "GPL-2.0-only"}
    assert (
        "License :: OSI Approved :: GNU General Public License v2 (GPLv2)"
        in (project["classifiers"])
    )


def test_project_metadata_is_complete() -> None:
    project = _project()["project"]
    assert isinstance(project, dict)
    assert project["readme"] == "README.md"
    assert project["authors"]
    assert {"Homepage", "Source", "Issues"} <= set(project["urls"])
    dev = project["optional-dependencies"]["dev"]
    assert {re.split(r"[<>=~!]", d)[0] for d in dev} >= {"ruff", "mypy"}


def test_the_version_has_one_source() -> None:
    data = _project()
    project, tool = data["project"], data["tool"]
    assert isinstance(project, dict) and isinstance(tool, dict)
    assert "version" not in project and "version" in project["dynamic"]
    attr = tool["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "tamalloc._version.__version__"
    from tamalloc import _version

    assert tamalloc.__version__ == _version.__version__
    assert "__version__ =" not in (ROOT / "src/tamalloc/__init__.py").read_text()


@pytest.mark.parametrize("backend_args", [[], ["--backend", "procfs"]])
def test_version_says_backend_and_c_scan(backend_args: list[str]) -> None:
    result = run_cli(*backend_args, "--version")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith(f"tamalloc {tamalloc.__version__} (backend: ")
    backend = backend_args[1] if backend_args else tamalloc.default_backend_name()
    assert f"backend: {backend}" in line
    built = importlib.util.find_spec("tamalloc.backends._procscan") is not None
    if not built:
        assert "C scan tamalloc.backends._procscan: not built" in line
    elif backend == "procfs":
        assert "C scan tamalloc.backends._procscan: in use" in line
    else:
        assert "C scan tamalloc.backends._procscan: built, unused" in line


def test_version_with_a_bad_backend_variable_still_answers() -> None:
    result = run_cli("--version", TAMALLOC_BACKEND="bogus")
    assert result.returncode == 0
    assert "unknown backend 'bogus'" in result.stdout
