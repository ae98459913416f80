#!/usr/bin/env python3
"""Start-up benchmark: `import tamalloc` and `tamalloc stats` against a bare Python.

Each round runs every command once, in turn, beside `python -c pass` (the interpreter's
own start-up), so that all meet the same load; the figures are the medians over
--rounds rounds with min-max, wall time and the child's CPU time (user + system, which
another program's load changes less). A machine shared with other work slows every
command alike, so the targets are judged as ratios to the bare Python of the same run,
scaled to the 20 ms a bare Python takes on an idle host:
  * `python -c 'import tamalloc'` ≤ 25 ms, i.e. ≤ 1.25x a bare Python;
  * `tamalloc stats` (piped, about 100 processes) ≤ 50 ms, i.e. ≤ 2.5x a bare Python.
The ratio judged is the median of the per-round ratios (wall time). Shown beside them:
`tamalloc stats 1` (the start-up with one process read instead of all) and argparse
with one parser made (which loads gettext's translations and the locale module): the
floor of any command line built on argparse.
Exit status 0 whatever the results, unless --strict.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _timing import Report, count_user_processes, fmt_time, idle_processes, load_average, spread

# A bare Python on an idle host, in the figures: what the targets in ms scale by.
BARE_MS = 20.0
TARGETS_MS = {"import tamalloc": 25.0, "tamalloc stats": 50.0}


def _commands() -> dict[str, list[str]]:
    exe = shutil.which("tamalloc", path=str(Path(sys.executable).parent))
    stats = [exe, "stats"] if exe else [sys.executable, "-m", "tamalloc", "stats"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "import tamalloc": [sys.executable, "-c", "import tamalloc"],
        "tamalloc stats": stats,
        # Shown, not judged: the start-up alone (one process read, not all of them), and
        # what argparse costs by itself (no help formatter: the CLI makes none either).
        "tamalloc stats 1": [*stats, "1"],
        "argparse, one parser": [
            sys.executable,
            "-c",
            "import argparse; argparse.ArgumentParser(add_help=False)",
        ],
    }


# As an installed package runs: from the .pyc files (the warm-up run writes them), not
# compiled from source at every start as PYTHONDONTWRITEBYTECODE=1 would have it.
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _run_once(argv: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run of ``argv``, its output thrown away."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=_ENV)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {child.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def measure(rounds: int) -> dict[str, tuple[list[float], list[float]]]:
    """Per command: the wall and CPU seconds of each round."""
    commands = _commands()
    for argv in commands.values():  # warm the page cache and the .pyc files
        _run_once(argv)
    times: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n in commands}
    for _ in range(rounds):
        for name, argv in commands.items():
            wall, cpu = _run_once(argv)
            times[name][0].append(wall)
            times[name][1].append(cpu)
    return times


def _span(values: list[float]) -> str:
    low, median, high = spread(values)
    return f"{fmt_time(median)} ({fmt_time(low)}-{fmt_time(high)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=21, help="rounds of one run of each command (default 21)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=100,
        help="idle processes started if the machine has fewer user"
        " processes than this (default 100)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target fails")
    args = parser.parse_args()

    report = Report(
        f"tamalloc start-up (kernel {os.uname().release}, {os.cpu_count()} CPUs,"
        f" load {load_average()})"
    )
    with idle_processes(max(args.processes - count_user_processes(), 0)):
        report.note("user processes", str(count_user_processes()))
        times = measure(args.rounds)
    bare_wall, bare_cpu = times["python -c pass"]
    for name, (wall, cpu) in times.items():
        report.note(f"{name}: wall", _span(wall))
        report.note(f"{name}: CPU", _span(cpu))
        if name == "python -c pass":
            continue
        ratios = [w / b for w, b in zip(wall, bare_wall, strict=True)]
        cpu_ratios = [c / b for c, b in zip(cpu, bare_cpu, strict=True) if b > 0]
        low, ratio, high = spread(ratios)
        report.note(f"{name}: ratio to bare (wall)", f"{ratio:.2f}x ({low:.2f}-{high:.2f})")
        if cpu_ratios:
            c_low, c_ratio, c_high = spread(cpu_ratios)
            report.note(
                f"{name}: ratio to bare (CPU)", f"{c_ratio:.2f}x ({c_low:.2f}-{c_high:.2f})"
            )
        if name not in TARGETS_MS:
            continue
        limit = TARGETS_MS[name] / BARE_MS
        report.target(
            f"{name} ≤ {TARGETS_MS[name]:.0f} ms on a {BARE_MS:.0f} ms Python,"
            f" i.e. ≤ {limit:.2f}x bare ({ratio:.2f}x, about"
            f" {ratio * BARE_MS:.0f} ms)",
            ratio <= limit,
        )
    report.note("load at the end", load_average())
    report.print()
    return 1 if args.strict and report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
