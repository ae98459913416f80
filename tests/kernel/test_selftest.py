"""The series' own kselftest, built against the installed uapi headers and run."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("require_kernel")

BUILD_DIR = Path(os.environ.get("TAMALLOC_BUILD_DIR") or Path.home() / ".cache" / "tamalloc")
SELFTEST = BUILD_DIR / "src" / "tools" / "testing" / "selftests" / "tamalloc"
HEADERS = BUILD_DIR / "headers" / "include"


def test_kselftest_passes_without_skips(tmp_path: Path) -> None:
    assert SELFTEST.is_dir(), f"{SELFTEST} missing: `make kernel` applies the series"
    subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(SELFTEST),
            f"OUTPUT={tmp_path}",
            f"KHDR_INCLUDES=-isystem {HEADERS}",
        ],
        check=True,
    )
    run = subprocess.run(
        [str(tmp_path / "tamalloc_test")], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    totals = re.search(
        r"# Totals: pass:(\d+) fail:(\d+) xfail:\d+ xpass:\d+ skip:(\d+) "
        r"error:(\d+)",
        run.stdout,
    )
    assert totals, run.stdout
    passed, failed, skipped, errors = map(int, totals.groups())
    assert (failed, skipped, errors) == (0, 0, 0), run.stdout
    assert passed >= 11
