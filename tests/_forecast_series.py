"""Synthetic OOM domains scraped by the real exporter (tamalloc.exporter.collector with
its forecast window) every 15 s, written as promtool input series: what
examples/prometheus/rules_test.yml feeds the TamallocOomForecast rule, and what
test_exporter_rules.py feeds both that rule and a predict_linear() rule to compare
them. The series are the exporter's own output, so a sawtooth is absent
seconds_to_oom because the exporter says so, not because a test file says so.

``python tests/_forecast_series.py`` prints the input series for rules_test.yml."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from unittest import mock

import tamalloc.oom
from tamalloc.exporter.collector import MemoryCollector
from tamalloc.oom import OomInputs
from test_exporter import (
    MIB_KB,
    FakeBackend,
    by_domain,
    fake_stats,
    oom_cgroup,
    oom_inputs,
    oom_task,
    scrape,
)

SCRAPE = 15  # seconds, Prometheus's scrape_interval in docs/exporter.md
INSTANCE = 'instance="a:9847", job="tamalloc"'


@dataclass(frozen=True)
class Scenario:
    domain: str
    minutes: int
    make: Callable[[float], OomInputs]
    what: str


def _cgroup(domain: str, limit_mib: int, tasks: dict[tuple[int, str], float]) -> OomInputs:
    """``domain`` with memory.max ``limit_mib`` holding ``tasks`` ((pid, name): MiB);
    its usage is their sum."""
    used = sum(tasks.values())
    return oom_inputs(
        [oom_task(pid, name, domain, int(mib)) for (pid, name), mib in tasks.items()],
        {domain: oom_cgroup(limit_mib * MIB_KB, int(used * MIB_KB))},
    )


def leak(t: float) -> OomInputs:
    # 4 GiB: db holds 1.5 GiB and stays, leak 512 MiB flat for 10 minutes, then
    # 2 MiB/s: the OOM at 1624 s (27 min), when leak has overtaken db (at 1112 s).
    grown = 2 * max(t - 600, 0)
    return _cgroup("/leak", 4096, {(10, "db"): 1536, (11, "leak"): 512 + grown})


def sawtooth(t: float) -> OomInputs:
    # 1 GiB: a garbage-collected heap from 600 up to 1010 MiB in 5 minutes, collected
    # back: 14 MiB from the limit at each peak, never at it.
    return _cgroup("/gc", 1024, {(20, "java"): 600 + 410 * (t % 300) / 300})


def stops(t: float) -> OomInputs:
    # 4 GiB: 2.5 GiB + 2 MiB/s for 10 minutes, then flat 336 MiB from the limit.
    return _cgroup("/stops", 4096, {(30, "batch"): 2560 + 2 * min(t, 600)})


def step(t: float) -> OomInputs:
    # 4 GiB, 2.5 GiB used: at minute 10 a cache of 768 MiB loads in a minute, then
    # stays: 768 MiB from the limit, never at it.
    return _cgroup("/step", 4096, {(40, "cache"): 2560 + 768 * min(max(t - 600, 0), 60) / 60})


def leaky_gc(t: float) -> OomInputs:
    # 4 GiB: a heap collected every 2 minutes from 2 GiB up 1 GiB, whose floor
    # rises 1 MiB/s from minute 10 (a leak under the sawtooth): the peak reaches the
    # limit at 1624 s (27 min).
    return _cgroup(
        "/leakygc", 4096, {(50, "java"): 2048 + max(t - 600, 0) + 1024 * (t % 120) / 120}
    )


SCENARIOS = {
    "leak": Scenario("/leak", 27, leak, "a steady leak of 2 MiB/s from minute 10"),
    "sawtooth": Scenario("/gc", 40, sawtooth, "a 5-minute sawtooth 14 MiB below the limit"),
    "stops": Scenario("/stops", 30, stops, "a leak of 2 MiB/s that stops at minute 10"),
    "step": Scenario("/step", 30, step, "768 MiB taken in a minute at minute 10, then flat"),
    "leaky_gc": Scenario(
        "/leakygc", 27, leaky_gc, "a 2-minute sawtooth whose floor leaks 1 MiB/s from minute 10"
    ),
}


@dataclass(frozen=True)
class Exported:
    headroom: list[float | None]  # bytes, one per scrape
    seconds_to_oom: list[float | None]
    victim: list[tuple[str, str] | None]  # tamalloc_oom_domain_forecast_victim_info


def exported(scenario: Scenario) -> Exported:
    """The exporter's series for ``scenario``, scraped every SCRAPE seconds from 0 to
    its last minute (the exporter starts with it)."""
    now = [0.0]

    def collect_inputs(backend: str | None = None) -> OomInputs:
        return scenario.make(now[0])

    collector = MemoryCollector(backend="procfs", oom=True, clock=lambda: now[0])
    collector.backend = FakeBackend(fake_stats(3))  # type: ignore[assignment]
    out = Exported([], [], [])
    with mock.patch.object(tamalloc.oom, "collect_inputs", collect_inputs):
        for i in range(scenario.minutes * 60 // SCRAPE + 1):
            now[0] = float(i * SCRAPE)
            metrics = scrape(collector)
            out.headroom.append(
                by_domain(metrics, "tamalloc_oom_domain_headroom_bytes").get(scenario.domain)
            )
            seconds = by_domain(metrics, "tamalloc_oom_domain_seconds_to_oom")
            out.seconds_to_oom.append(seconds.get(scenario.domain))
            victims = [
                (labels["pid"], labels["name"])
                for labels, _ in metrics.get("tamalloc_oom_domain_forecast_victim_info", [])
                if labels["domain"] == scenario.domain
            ]
            out.victim.append(victims[0] if victims else None)
    return out


def values(series: list[float | None]) -> str:
    """promtool's notation: a number a scrape (seconds to 0.1, bytes whole), a run of
    whole numbers in steps of the same size as "a+bxn"; a series that leaves the
    scrape gets "stale", as Prometheus marks it (else its last value would stand for
    5 minutes, the lookback), then a run of absent scrapes "_xN"."""
    out: list[str] = []
    run: list[float] = []
    gap = 0

    def flush_run() -> None:
        i = 0
        while i < len(run):
            j = i + 1
            whole = run[i] == int(run[i])
            if whole and j < len(run) and run[j] == int(run[j]):
                step = run[j] - run[i]
                while j + 1 < len(run) and run[j + 1] == int(run[j + 1]):
                    if run[j + 1] - run[j] != step:
                        break
                    j += 1
                if j - i >= 2:
                    out.append(f"{int(run[i])}{int(step):+d}x{j - i}")
                    i = j + 1
                    continue
                j = i + 1
            out.append(str(int(run[i])) if whole else f"{run[i]:g}")
            i = j
        run.clear()

    for v in series:
        if v is None:
            if run:
                flush_run()
                out.append("stale")
            else:
                gap += 1
            continue
        if gap:
            out.append("_" if gap == 1 else f"_x{gap}")
            gap = 0
        run.append(round(v, 1))
    flush_run()
    if gap:
        out.append("_" if gap == 1 else f"_x{gap}")
    return " ".join(out)


def input_series(name: str) -> list[tuple[str, str]]:
    """(series, values) of scenario ``name``, as in rules_test.yml."""
    scenario = SCENARIOS[name]
    data = exported(scenario)
    domain = f'domain="{scenario.domain}"'
    series = [
        (f"tamalloc_oom_domain_headroom_bytes{{{INSTANCE}, {domain}}}", values(data.headroom)),
        (
            f"tamalloc_oom_domain_seconds_to_oom{{{INSTANCE}, {domain}}}",
            values(data.seconds_to_oom),
        ),
    ]
    for victim in sorted({v for v in data.victim if v is not None}):
        pid, proc = victim
        ones = [1.0 if v == victim else None for v in data.victim]
        series.append(
            (
                f"tamalloc_oom_domain_forecast_victim_info{{{INSTANCE}, {domain},"
                f' pid="{pid}", name="{proc}"}}',
                values(ones),
            )
        )
    return series


def main() -> int:
    for name in SCENARIOS:
        print(f"      # {name}: {SCENARIOS[name].what}")
        for series, vals in input_series(name):
            print(f"      - series: '{series}'\n        values: '{vals}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
