"""The example alerting rules (examples/prometheus/) pass `promtool check rules` and
their unit tests, `promtool test rules` (promtool comes with Debian's prometheus); the
forecast's rule is fed the exporter's own series, and compared with predict_linear()."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from _forecast_series import SCENARIOS, input_series

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "prometheus"
PREDICT_LINEAR_RULES = Path(__file__).resolve().parent / "data" / "predict_linear_rules.yml"


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
    assert "SUCCESS: 5 rules found" in run_promtool("check", "rules", "rules.yml")


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
        (
            "tamalloc_oom_domain_seconds_to_oom < 900",
            "tamalloc_oom_domain_seconds_to_oom < 60",
            "TamallocOomForecast",
        ),
        # Without `for`, the sawtooth's one forecast of a scrape would fire.
        (
            "tamalloc_oom_domain_seconds_to_oom < 900\n        for: 3m",
            "tamalloc_oom_domain_seconds_to_oom < 900",
            "TamallocOomForecast",
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


def test_the_forecast_rule_is_tested_on_the_exporters_own_series() -> None:
    """rules_test.yml's /leak and /gc series are what the exporter exports for them
    (tests/_forecast_series.py prints them anew): the sawtooth's absent
    seconds_to_oom is the exporter's doing, not the test file's."""
    text = (EXAMPLES / "rules_test.yml").read_text()
    found = re.findall(r"- series: '([^']*)'\n\s+values: '([^']*)'", text)
    expected = input_series("leak") + input_series("sawtooth")
    start = found.index(expected[0])
    assert found[start : start + len(expected)] == expected


# When each alert fires (its first and last minute), the exporter scraped every 15 s and
# the rules evaluated every minute: TamallocOomForecast (examples/prometheus/rules.yml)
# and the same alert on predict_linear() (tests/data/predict_linear_rules.yml). The
# table of docs/exporter.md.
FIRING = {
    "leak": {"TamallocOomForecast": (20, 27), "PredictLinearOom": (20, 27)},
    "sawtooth": {"PredictLinearOom": (4, 6)},
    "stops": {"TamallocOomForecast": (8, 16), "PredictLinearOom": (4, 17)},
    "step": {"PredictLinearOom": (16, 19)},
    "leaky_gc": {"PredictLinearOom": (27, 27)},
}


@pytest.mark.parametrize("name", sorted(FIRING))
def test_the_forecast_against_predict_linear(name: str, tmp_path: Path) -> None:
    scenario = SCENARIOS[name]
    shutil.copy(EXAMPLES / "rules.yml", tmp_path)
    shutil.copy(PREDICT_LINEAR_RULES, tmp_path)
    lines = [
        "rule_files: [rules.yml, predict_linear_rules.yml]",
        "evaluation_interval: 1m",
        "tests:",
        "  - interval: 15s",
        "    input_series:",
    ]
    for series, values in input_series(name):
        lines += [f"      - series: '{series}'", f"        values: '{values}'"]
    lines.append("    promql_expr_test:")
    for minute in range(1, scenario.minutes + 1):
        lines += [
            '      - expr: count by (alertname) (ALERTS{alertstate="firing"})',
            f"        eval_time: {minute}m",
            "        exp_samples:",
        ]
        firing = [a for a, (first, last) in FIRING[name].items() if first <= minute <= last]
        lines += [f"          - {{labels: '{{alertname=\"{a}\"}}', value: 1}}" for a in firing]
        if not firing:
            lines[-1] += " []"
    (tmp_path / "test.yml").write_text("\n".join(lines) + "\n")
    result = subprocess.run(
        [promtool(), "test", "rules", "test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
