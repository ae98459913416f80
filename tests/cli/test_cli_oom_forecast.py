"""``tamalloc oom --forecast``: its table and JSON from synthetic samples (the model on a
fake clock), a real short run, and its usage errors."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pytest

import tamalloc.forecast as forecast_module
from _support import assert_clean_error, run_cli
from tamalloc.cli import commands
from tamalloc.cli.env import Environment
from tamalloc.cli.main import main
from tamalloc.oom import OomInputs
from test_forecast import sawtooth, snapshot

Sizes = dict[int, Callable[[float], float]]


def fake_sampling(monkeypatch: pytest.MonkeyPatch, sizes: Sizes) -> list[float]:
    """Makes sample_and_forecast() sample ``snapshot(t, sizes)`` on a clock that its
    sleeps advance; returns the times sampled."""
    clock = [0.0]
    seen: list[float] = []
    real = forecast_module.sample_and_forecast

    def collect(backend: str | None = None) -> OomInputs:
        seen.append(clock[0])
        return snapshot(clock[0], sizes)

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    def sampled(*args: object, **kwargs: object) -> object:
        return real(*args, clock=lambda: clock[0], sleep=sleep, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(forecast_module, "collect_inputs", collect)
    monkeypatch.setattr(forecast_module, "sample_and_forecast", sampled)
    return seen


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(
        ["oom", "--forecast", "--backend", "procfs", *argv],
        Environment(stdout=out, stderr=err, stdout_isatty=False),
    )
    return status, out.getvalue(), err.getvalue()


def test_the_table_names_the_time_and_the_victim_then(monkeypatch: pytest.MonkeyPatch) -> None:
    # 100 MiB static; 10 MiB + 5 MiB/s: at t=10 76 MiB are left, 15.2 s.
    seen = fake_sampling(monkeypatch, {100: lambda t: 100, 200: lambda t: 10 + 5 * t})
    status, out, _ = cli("--window", "10", "--interval", "0.5", "--units", "mb")
    assert status == 0
    assert seen == pytest.approx([i * 0.5 for i in range(21)])
    lines = out.splitlines()
    assert lines[0].startswith("DOMAIN") and "GROWTH/s (MiB)" in lines[0]
    assert lines[1].split()[0] == "system"
    app = lines[2]
    assert app.split()[:5] == ["/app", "256.0", "76.0", "5.0", "15.2"]
    assert "100 (p100)" in app and app.rstrip().endswith("200 (p200)")
    assert "high" in app
    assert any("/app: 200 (p200) overtakes today's victim 100 (p100)" in line for line in lines)
    assert "21 samples over 10 s" in out


def test_json_is_the_forecasts(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_sampling(monkeypatch, {100: lambda t: 50 + 4 * t})
    status, out, _ = cli("--window", "10", "--interval", "0.5", "--json")
    assert status == 0
    system, app = json.loads(out)
    # The machine grows by the same 4 MiB/s, but has GiBs left.
    assert system["domain"] is None and system["seconds_to_oom"] > 100
    assert app["domain"] == "/app"
    assert app["seconds_to_oom"] == pytest.approx((256 - 110) / 4)
    assert app["growth_kb_per_s"] == pytest.approx(4096)
    assert app["victim_at_oom"]["pid"] == 100 and app["samples"] == 21


def test_a_sawtooth_is_not_growing(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_sampling(monkeypatch, {100: sawtooth})
    status, out, _ = cli("--window", "10", "--interval", "0.5")
    assert status == 0
    assert out.count("not growing") == 2


def test_a_real_short_run_on_this_machine() -> None:
    result = run_cli("oom", "--forecast", "--window", "1", "--interval", "0.2", "--json")
    assert result.returncode == 0, result.stderr
    forecasts = json.loads(result.stdout)
    # At most one sample an interval, the first at once (fewer on a loaded machine).
    assert forecasts[0]["domain"] is None and 2 <= forecasts[0]["samples"] <= 6
    assert forecasts[0]["victim_now"]["pid"] > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--forecast", "--window", "-1"], "--window: must be a positive number"),
        (["--forecast", "--window", "0"], "--window: must be a positive number"),
        (["--forecast", "--window", "inf"], "--window: not a number"),
        (["--forecast", "--interval", "0"], "--interval: must be a positive number"),
        (["--forecast", "--interval", "0.01"], "--interval: must be at least 0.1"),
        (["--forecast", "--window", "1", "--interval", "2"], "must not exceed the window (1 s)"),
        (["--forecast", "--interval", "31"], "must not exceed the window (30 s)"),
        (["--forecast", "--window", "100", "--interval", "0.1"], "at most 599 samples"),
        (["--forecast", "--top", "3"], "--top has no effect with --forecast"),
        (["--window", "10"], "--window needs --forecast"),
        (["--interval", "1"], "--interval needs --forecast"),
        (["--forecast", "--window", "1", "--cgroup", "/no/such"], "no such cgroup"),
    ],
)
def test_bad_input_is_one_line(argv: list[str], message: str) -> None:
    result = run_cli("oom", *argv)
    status = 1 if message == "no such cgroup" else 2
    line = assert_clean_error(result, status)
    assert message in line
    assert result.stdout == ""


def test_the_help_quotes_the_models_defaults() -> None:
    assert commands.FORECAST_WINDOW == forecast_module.DEFAULT_WINDOW
    assert commands.FORECAST_INTERVAL == forecast_module.DEFAULT_INTERVAL
