#!/usr/bin/env python3
"""Host benchmark of `tamalloc oom --forecast`'s cost per sample, with 1,000 idle processes.

A sample is the OOM model's inputs read from the system (``collect_inputs``: every
task's rss, swap, page tables and adj, /proc/meminfo, the cgroup tree), then reduced
into the window (``ForecastWindow.add``: the domains' headroom, each task's size). The
forecast at the end of a window (``forecast()``: a Theil-Sen fit per domain and per
task, and predict() once on the projected tasks) is paid once per window. CPU time of
this process (user + system), the best of --repeat alternating rounds.

Targets: the reduction costs at most 25 % of the reading it reduces (the forecast adds
little to the sampling it needs anyway), and the forecast of a 30-sample window at
most 5 samples' reading. Exit status 0 whatever the results, unless --strict.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from _timing import (
    Report,
    best_of_each_wall_cpu,
    count_user_processes,
    fmt_time,
    idle_processes,
    load_average,
)

# isort: split
from tamalloc.forecast import ForecastWindow, sample_and_forecast
from tamalloc.oom import collect_inputs

SAMPLES = 31  # a 30 s window at the default 1 s interval


def bench(report: Report, backend: str | None, repeat: int) -> None:
    report.note("user processes", str(count_user_processes()))
    inputs = collect_inputs(backend)
    report.note("backend", inputs.backend)
    report.note("tasks in a sample", str(len(inputs.tasks)))
    report.note("OOM domains", str(1 + sum(1 for c in inputs.cgroups.values() if c.memory_max_kb)))
    window = ForecastWindow(1e9, max_samples=SAMPLES)
    clock = [0.0]

    def add() -> None:
        clock[0] += 1.0
        window.add(clock[0], inputs)

    for _ in range(SAMPLES):
        add()
    (read_wall, read_cpu), (add_wall, add_cpu), (fc_wall, fc_cpu) = best_of_each_wall_cpu(
        lambda: collect_inputs(backend), add, window.forecast, repeat=repeat
    )
    report.note(
        "read a sample (collect_inputs)", f"{fmt_time(read_cpu)} CPU, {fmt_time(read_wall)} wall"
    )
    report.note(
        "reduce it into the window (add)", f"{fmt_time(add_cpu)} CPU, {fmt_time(add_wall)} wall"
    )
    report.note(
        "per sample in all",
        f"{fmt_time(read_cpu + add_cpu)} CPU: {(read_cpu + add_cpu) * 100:.2f} % of a CPU"
        " at the default 1 s interval",
    )
    report.note(
        f"forecast() of {SAMPLES} samples", f"{fmt_time(fc_cpu)} CPU, {fmt_time(fc_wall)} wall"
    )
    # The forecast's worst case: a domain that grows, so that every task's own trend is
    # fitted for the victim at the OOM.
    growing = ForecastWindow(1e9, max_samples=SAMPLES)
    for i in range(SAMPLES):
        leak = i * 4096  # the system loses 4 MiB/s
        growing.add(
            float(i), dataclasses.replace(inputs, mem_available_kb=inputs.mem_available_kb - leak)
        )
    ((gf_wall, gf_cpu),) = best_of_each_wall_cpu(growing.forecast, repeat=repeat)
    (system,) = [f for f in growing.forecast() if f.domain is None]
    assert system.seconds_to_oom is not None
    report.note(
        f"forecast() of {SAMPLES} samples, growing",
        f"{fmt_time(gf_cpu)} CPU, {fmt_time(gf_wall)} wall",
    )
    report.target(
        f"reduction <= 25 % of the reading ({add_cpu / read_cpu * 100:.1f} %)",
        add_cpu <= 0.25 * read_cpu,
    )
    report.target(
        f"forecast of a growing window <= 5 readings ({gf_cpu / read_cpu:.2f})",
        max(fc_cpu, gf_cpu) <= 5 * read_cpu,
    )


def idle(report: Report, backend: str | None, seconds: float) -> None:
    forecasts = sample_and_forecast(seconds, 1.0, backend=backend)
    growing = [
        f"{f.domain or 'system'} ({(f.growth_kb_per_s or 0) / 1024:.1f} MiB/s)"
        for f in forecasts
        if f.seconds_to_oom is not None
    ]
    report.note(
        f"--forecast over {seconds:g} s here",
        "nothing growing" if not growing else "growing: " + ", ".join(growing),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=1000, help="extra idle processes")
    parser.add_argument("--repeat", type=int, default=7, help="best of N rounds (default 7)")
    parser.add_argument("--backend", help="the backend to sample with (default: the one in use)")
    parser.add_argument(
        "--idle-window",
        type=float,
        default=10.0,
        help="also run a forecast over this many seconds and say what grows (0: skip)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target fails")
    args = parser.parse_args()
    report = Report(
        f"tamalloc oom --forecast benchmark (kernel {os.uname().release},"
        f" {os.cpu_count()} CPUs, load {load_average()})"
    )
    with idle_processes(args.processes):
        bench(report, args.backend, args.repeat)
        if args.idle_window > 0:
            idle(report, args.backend, args.idle_window)
    report.note("load at the end", load_average())
    report.print()
    return 1 if args.strict and report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
