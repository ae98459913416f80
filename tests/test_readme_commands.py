"""The README's two commands are what CI and `make fresh-test` run, to the letter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "vm"))

import fresh_test  # noqa: E402
from readme_lines import readme_lines  # noqa: E402


def _first_block_lines() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    body = text.split("```sh\n", 1)[1].split("\n```", 1)[0]
    return body.splitlines()


def test_readme_opens_with_the_main_line_and_the_test_line() -> None:
    lines = readme_lines()
    assert [lines["main"], lines["test"]] == _first_block_lines()
    assert lines["main"].startswith("python3 -m venv .venv && ")
    assert ".venv/bin/tamalloc" in lines["main"]
    # The test line alone sets up a fresh machine: make itself, then `make test`
    # (whose first prerequisite is `deps`).
    test_line = lines["test"].split("#")[0].strip()
    assert test_line == "apt-get update && apt-get install -y make && make test"


def test_make_test_installs_the_packages_first() -> None:
    makefile = (ROOT / "Makefile").read_text()
    prerequisites = next(
        line.split(":", 1)[1].split("##")[0].split()
        for line in makefile.splitlines()
        if line.startswith("test:")
    )
    assert prerequisites[0] == "deps"


def test_fresh_test_runs_the_readme_lines_in_order() -> None:
    lines = _first_block_lines()
    assert fresh_test.planned_commands(ROOT / "README.md") == [
        lines[0],
        fresh_test.VERSION_CHECK,
        lines[1],
    ]


def test_fresh_test_reads_the_clones_readme(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n```sh\nfirst one\nsecond one\n```\n\nprose `not this`\n")
    assert fresh_test.planned_commands(readme) == [
        "first one",
        fresh_test.VERSION_CHECK,
        "second one",
    ]


@pytest.mark.parametrize("lines", [["only one"], ["one", "two", "three"]])
def test_a_readme_without_exactly_two_lines_is_refused(tmp_path: Path, lines: list[str]) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("```sh\n" + "\n".join(lines) + "\n```\n")
    with pytest.raises(ValueError, match="not 2"):
        readme_lines(readme)


def test_ci_runs_the_readme_test_line() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert "vm/readme_lines.py test" in script
    printed = subprocess.run(
        [sys.executable, str(ROOT / "vm" / "readme_lines.py"), "test"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed == _first_block_lines()[1] + "\n"
