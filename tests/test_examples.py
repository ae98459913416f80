"""The README's Python example and examples/*.py: they type-check under mypy --strict
(the buffer protocol is typed: a Buffer is an mmap.mmap) and the README's runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from _support import SRC, subprocess_env

ROOT = Path(__file__).resolve().parents[1]


def _readme_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert blocks, "no ```python block in README.md"
    numpy_blocks = [b for b in blocks if "np.frombuffer" in b]
    assert numpy_blocks, "the README's numpy example is gone"
    return str(numpy_blocks[0])


def test_readme_example_and_examples_pass_mypy_strict(tmp_path: Path) -> None:
    if os.environ.get("TAMALLOC_IN_VM") == "1":
        # Types do not depend on the kernel; under emulation mypy --strict on numpy's
        # stubs takes over five minutes.
        pytest.skip("type-checking runs in the host suite (make host-test), not the guest")
    pytest.importorskip("mypy")
    pytest.importorskip("numpy")
    example = tmp_path / "readme_example.py"
    example.write_text(_readme_example())
    files = [str(example), *map(str, sorted((ROOT / "examples").glob("*.py")))]
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), *files],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env=subprocess_env(MYPYPATH=str(SRC)),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Success" in run.stdout


def test_readme_example_runs(tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    example = tmp_path / "readme_example.py"
    example.write_text(_readme_example())
    run = subprocess.run(
        [sys.executable, str(example)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[0] == "4096"
