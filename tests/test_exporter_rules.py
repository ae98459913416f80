"""The example alerting rules (examples/prometheus/) pass `promtool check rules` and
their unit tests, `promtool test rules` (promtool comes with Debian's prometheus)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "prometheus"


def promtool() -> str:
    path = shutil.which("promtool") or shutil.which("promtool", path="/usr/bin")
    if path is None:  # a failure, never a skip: the rules would go unchecked
        pytest.fail(
            "promtool is not installed: `make deps` installs it (Debian package"
            " prometheus, vm/install-deps.sh)"
        )
    return path


def run_promtool(*args: str) -> str:
    result = subprocess.run(
        [promtool(), *args],
        cwd=EXAMPLES,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_promtool_checks_the_rules() -> None:
    assert "SUCCESS: 4 rules found" in run_promtool("check", "rules", "rules.yml")


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    assert "SUCCESS" in run_promtool("test", "rules", "rules_test.yml")


@pytest.mark.parametrize(
    ("expr", "never", "alert"),
    [
        (
            "tamalloc_process_oom_score >= 1200",
            "tamalloc_process_oom_score > 5000",
            "TamallocProcessNearOomLine",
        ),
        (
            'tamalloc_oom_domain_limit_bytes{domain!="system"} < 0.10',
            'tamalloc_oom_domain_limit_bytes{domain!="system"} < 0.01',
            "TamallocCgroupHeadroomLow",
        ),
    ],
)
def test_the_unit_tests_can_fail(expr: str, never: str, alert: str, tmp_path: Path) -> None:
    """A rule that never fires fails its unit test: promtool really judges them."""
    rules = (EXAMPLES / "rules.yml").read_text()
    broken = rules.replace(expr, never)
    assert broken != rules
    (tmp_path / "rules.yml").write_text(broken)
    shutil.copy(EXAMPLES / "rules_test.yml", tmp_path)
    result = subprocess.run(
        [promtool(), "test", "rules", "rules_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0
    assert alert in result.stdout + result.stderr
