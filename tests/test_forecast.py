"""The OOM forecast (tamalloc.forecast) on synthetic samples: leaks, a sawtooth, noise,
a leak that stops, a small leaker that overtakes a big static process."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

import tamalloc
from tamalloc.forecast import (
    DomainForecast,
    ForecastWindow,
    check_timing,
    fit,
    forecast_oom,
    sample_and_forecast,
)
from tamalloc.oom import OomInputs
from test_oom_model import GIB_KB, cg, inputs, task

MIB = 1024  # kB
LIMIT_MIB = 256
BASE_MIB = 20  # the cgroup's usage besides its tasks (page cache, kernel memory)

# A task's rss in MiB as a function of the time in seconds.
Rss = Callable[[float], float]


def snapshot(t: float, sizes: dict[int, Rss], *, limit_mib: int = LIMIT_MIB) -> OomInputs:
    """The inputs at ``t``: tasks ``pid -> rss(t)`` in cgroup /app (memory.max
    ``limit_mib``), its usage their sum plus BASE_MIB, the system's likewise."""
    rss_kb = {pid: int(f(t) * MIB) for pid, f in sizes.items()}
    used = sum(rss_kb.values()) + BASE_MIB * MIB
    return inputs(
        [task(pid, rss_kb=kb, cgroup="/app") for pid, kb in rss_kb.items()],
        {"/app": cg(limit_mib, current_kb=used)},
        mem_total_kb=4 * GIB_KB,
        mem_available_kb=4 * GIB_KB - used - 500 * MIB,
    )


def run(
    sizes: dict[int, Rss], *, seconds: float = 10.0, interval: float = 0.5, **kw: int
) -> tuple[DomainForecast, DomainForecast]:
    """The forecasts of the system and of /app after sampling [0, seconds]."""
    n = round(seconds / interval)
    samples = [(i * interval, snapshot(i * interval, sizes, **kw)) for i in range(n + 1)]
    system, app = forecast_oom(samples)
    assert system.domain is None and app.domain == "/app"
    return system, app


def sawtooth(t: float) -> float:
    # A garbage-collected heap: 40 MiB, up 8 MiB/s for 2 s, collected back to 40.
    return 40 + 8 * (t % 2.0)


def sawtooth_slow(t: float) -> float:
    # The same heap collected every 5 s: two teeth in a 10 s window.
    return 40 + 8 * (t % 5.0)


def least_squares(ts: list[float], ys: list[float]) -> float:
    mt, my = sum(ts) / len(ts), sum(ys) / len(ys)
    return sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / sum(
        (t - mt) ** 2 for t in ts
    )


def test_steady_leak_runs_out_when_the_line_says() -> None:
    # 50 MiB at t=0, +4 MiB/s: at t=10 the cgroup uses 110 of 256 MiB.
    _, app = run({100: lambda t: 50 + 4 * t})
    assert app.growth_kb_per_s == pytest.approx(4 * MIB)
    assert app.headroom_kb == (LIMIT_MIB - 110) * MIB
    assert app.seconds_to_oom == pytest.approx((LIMIT_MIB - 110) / 4)
    assert app.confidence == "high"
    assert app.seconds_low is not None and app.seconds_high is not None
    assert app.seconds_to_oom is not None
    assert app.seconds_low <= app.seconds_to_oom <= app.seconds_high
    assert app.victim_now is not None and app.victim_now.pid == 100
    assert app.victim_at_oom is not None and app.victim_at_oom.pid == 100
    # The system has 4 GiB: the same 4 MiB/s, years away is not the point; it grows.
    assert app.samples == 21 and app.span_s == pytest.approx(10.0)


def test_two_leakers_add_up_and_the_faster_dies() -> None:
    _, app = run({100: lambda t: 30 + 2 * t, 200: lambda t: 20 + 6 * t})
    assert app.growth_kb_per_s == pytest.approx(8 * MIB)
    # At t=10: 50 + 80 + 20 MiB used, 106 MiB left at 8 MiB/s.
    assert app.seconds_to_oom == pytest.approx(106 / 8)
    # Today 200 (80 MiB) leads 100 (50 MiB) already; at the OOM by more.
    assert app.victim_now is not None and app.victim_now.pid == 200
    assert app.victim_at_oom is not None and app.victim_at_oom.pid == 200


def test_a_small_leaker_overtakes_the_big_static_process() -> None:
    # 100 MiB static, 10 MiB + 5 MiB/s: at t=10, 100 vs 60 MiB, 76 MiB left, 15.2 s;
    # at the OOM the leaker holds 136 MiB.
    _, app = run({100: lambda t: 100, 200: lambda t: 10 + 5 * t})
    assert app.seconds_to_oom == pytest.approx(76 / 5)
    assert app.victim_now is not None and app.victim_now.pid == 100
    assert app.victim_at_oom is not None and app.victim_at_oom.pid == 200
    assert app.victim_at_oom.points is not None
    assert app.victim_at_oom.points == pytest.approx(136 * 256, abs=2)
    assert any("overtakes today's victim 100" in n for n in app.notes)


def test_a_leaker_too_slow_to_overtake_before_the_oom_does_not() -> None:
    # 200 grows 1 MiB/s, 100 grows 4 MiB/s from 10 MiB: 200 still bigger at the OOM.
    _, app = run({100: lambda t: 10 + 4 * t, 200: lambda t: 150 + 1 * t})
    assert app.victim_at_oom is not None and app.victim_at_oom.pid == 200


def test_the_projected_tie_goes_to_the_higher_pid_as_predict() -> None:
    # Both reach 100 MiB at the OOM (t=10 + 10 s): 300 at 5 MiB/s from 0, 200 static.
    # 100 + 100 + 20 = 220 at the OOM... choose the limit so the OOM is at t=20.
    _, app = run({200: lambda t: 100, 300: lambda t: 5 * t}, limit_mib=220)
    assert app.seconds_to_oom == pytest.approx(10.0)
    assert app.victim_now is not None and app.victim_now.pid == 200
    assert app.victim_at_oom is not None and app.victim_at_oom.pid == 300
    _, app = run({300: lambda t: 100, 200: lambda t: 5 * t}, limit_mib=220)
    assert app.victim_at_oom is not None and app.victim_at_oom.pid == 300


def test_a_leak_that_stopped_is_not_growing() -> None:
    def stops(t: float) -> float:
        return 50 + 6 * min(t, 10.0)

    n = 41
    samples = [(i * 0.5, snapshot(i * 0.5, {100: stops})) for i in range(n)]
    window = ForecastWindow(10.0)
    for t, data in samples[:21]:
        window.add(t, data)
    assert window.forecast()[1].seconds_to_oom is not None
    for t, data in samples[21:]:
        window.add(t, data)
    app = window.forecast()[1]
    assert app.samples == 21  # [10, 20]: the window forgot the leak
    assert app.seconds_to_oom is None and app.growth_kb_per_s is None
    assert app.confidence == "none" and app.victim_at_oom is None
    assert app.victim_now is not None and app.victim_now.pid == 100


def test_a_sawtooth_is_not_a_leak() -> None:
    for heap in (sawtooth, sawtooth_slow):
        system, app = run({100: heap})
        assert app.seconds_to_oom is None, heap.__name__
        assert system.seconds_to_oom is None


def test_a_sawtooth_fools_the_bare_slopes() -> None:
    # What the envelope check is for: with two 5 s teeth in the window, Theil-Sen's
    # slope reads a 2.5 MiB/s leak (most pairs of samples lie on one tooth), least
    # squares a 1.25 MiB/s one; neither is there.
    ts = [i * 0.5 for i in range(21)]
    slow = [(LIMIT_MIB - BASE_MIB - sawtooth_slow(t)) * MIB for t in ts]
    bare = fit(ts, slow)
    assert bare.slope < -2 * MIB and not bare.significant
    assert least_squares(ts, slow) < -1 * MIB


def late_collection(t: float) -> float:
    # A heap that grows 8 MiB/s for 8 s and is collected once, 8 s into the window.
    return 40 + 8 * (t % 8.0)


def test_a_heap_collected_once_late_in_the_window_is_not_a_leak(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ts = [i * 0.5 for i in range(21)]
    headroom = [(LIMIT_MIB - BASE_MIB - late_collection(t)) * MIB for t in ts]
    assert not fit(ts, headroom).significant
    _, app = run({100: late_collection})
    assert app.seconds_to_oom is None
    # The samples after the collection are few: the residuals' median does not see
    # them, and the noise test alone passes the teeth for a leak. The envelope of the
    # last third (its trough after the collection) is what refuses it.
    monkeypatch.setattr("tamalloc.forecast._envelope_agrees", lambda *args: True)
    assert fit(ts, headroom).significant


def test_a_leaking_heap_under_its_sawtooth_is_a_leak() -> None:
    # The troughs rise 3 MiB/s under the 2 s teeth: the peaks too.
    _, app = run({100: lambda t: sawtooth(t) + 3 * t})
    assert app.seconds_to_oom is not None
    assert app.victim_at_oom is not None and app.victim_at_oom.pid == 100


def test_noise_alone_is_not_growth() -> None:
    rng = random.Random(19)
    jitter = {round(i * 0.5, 1): rng.uniform(-6, 6) for i in range(21)}
    system, app = run({100: lambda t: 80 + jitter[round(t, 1)]})
    assert app.seconds_to_oom is None and system.seconds_to_oom is None


def test_a_leak_through_noise_and_outliers_keeps_its_rate() -> None:
    rng = random.Random(7)
    jitter = {round(i * 0.5, 1): rng.uniform(-2, 2) for i in range(21)}
    jitter[3.0] += 60  # one sample far off, as a burst freed at once
    jitter[7.5] -= 40
    _, app = run({100: lambda t: 50 + 4 * t + jitter[round(t, 1)]})
    assert app.growth_kb_per_s is not None
    assert app.growth_kb_per_s == pytest.approx(4 * MIB, rel=0.1)
    assert app.seconds_to_oom == pytest.approx((LIMIT_MIB - 110) / 4, rel=0.1)


def test_too_few_samples_say_so() -> None:
    _, app = run({100: lambda t: 50 + 4 * t}, seconds=2.0, interval=1.0)
    assert app.seconds_to_oom is None and app.samples == 3
    assert any("at least 6 are needed" in n for n in app.notes)


def test_now_counts_down_from_the_last_sample() -> None:
    n = 21
    samples = [(i * 0.5, snapshot(i * 0.5, {100: lambda t: 50 + 4 * t})) for i in range(n)]
    at_last = forecast_oom(samples)[1].seconds_to_oom
    later = forecast_oom(samples, now=15.0)[1].seconds_to_oom
    assert at_last is not None and later is not None
    assert later == pytest.approx(at_last - 5.0)


def test_the_window_forgets_by_age_and_by_count() -> None:
    window = ForecastWindow(5.0, max_samples=8)
    for i in range(40):
        window.add(i * 0.5, snapshot(i * 0.5, {100: lambda t: 50.0}))
    assert len(window) == 8
    window = ForecastWindow(5.0)
    for i in range(40):
        window.add(i * 0.5, snapshot(i * 0.5, {100: lambda t: 50.0}))
    assert len(window) == 11  # [14.5, 19.5]


def test_the_cgroup_selection_is_predicts() -> None:
    samples = [(i * 0.5, snapshot(i * 0.5, {100: lambda t: 50 + 4 * t})) for i in range(21)]
    assert [f.domain for f in forecast_oom(samples, cgroup="/app")] == [None, "/app"]
    with pytest.raises(tamalloc.NoSuchCgroup):
        forecast_oom(samples, cgroup="/nope")


def test_to_dict_is_plain_json() -> None:
    _, app = run({100: lambda t: 100, 200: lambda t: 10 + 5 * t})
    data = app.to_dict()
    assert data["victim_at_oom"] == {"pid": 200, "name": "p200", "points": app.victim_at_oom.points}  # type: ignore[union-attr]
    assert data["domain"] == "/app" and isinstance(data["notes"], list)


def test_the_public_names() -> None:
    assert tamalloc.forecast_oom is forecast_oom
    assert tamalloc.DomainForecast is DomainForecast
    assert tamalloc.ForecastWindow is ForecastWindow


@pytest.mark.parametrize(
    ("window", "interval", "message"),
    [
        (-1.0, 1.0, "window must be a positive"),
        (0.0, 1.0, "window must be a positive"),
        (math.inf, 1.0, "window must be a positive"),
        (math.nan, 1.0, "window must be a positive"),
        (10.0, 20.0, "must not exceed the window"),
        (10.0, -1.0, "interval must be a positive"),
        (1000.0, 0.1, "at most 599 samples"),
    ],
)
def test_bad_timing_is_refused(window: float, interval: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_timing(window, interval)
    with pytest.raises(ValueError, match=message):
        sample_and_forecast(window, interval)


def test_bad_samples_are_refused() -> None:
    window = ForecastWindow(10.0)
    data = snapshot(0.0, {100: lambda t: 1.0})
    window.add(5.0, data)
    with pytest.raises(ValueError, match="time order"):
        window.add(4.0, data)
    with pytest.raises(ValueError, match="finite"):
        window.add(math.nan, data)
    with pytest.raises(TypeError, match="OomInputs"):
        window.add(6.0, {"tasks": []})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ForecastWindow("10")  # type: ignore[arg-type]
    assert forecast_oom([]) == []


def test_sample_and_forecast_samples_on_its_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    seen = []

    def collect(backend: str | None = None) -> OomInputs:
        seen.append(clock[0])
        return snapshot(clock[0], {100: lambda t: 50 + 4 * t})

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    monkeypatch.setattr("tamalloc.forecast.collect_inputs", collect)
    _, app = sample_and_forecast(5.0, 0.5, clock=lambda: clock[0], sleep=sleep)
    assert seen == pytest.approx([i * 0.5 for i in range(11)])
    assert app.seconds_to_oom == pytest.approx((LIMIT_MIB - 90) / 4)
