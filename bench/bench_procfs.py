#!/usr/bin/env python3
"""Host benchmark of the procfs backend and of alloc(), against psutil and bare mmap.

Prints times and ratios, and PASS/FAIL per target line:
  * all_mem_stats(backend="procfs") (with every OOM score) ≥ 2.5x faster than
    psutil.process_iter(['pid', 'name', 'memory_info']), with 1,000 idle processes:
    the median over --runs rounds (default 5) of the ratio within each round, with
    min and max, in wall time (judged: what a caller waits) and CPU time (this
    process's user + system over all its threads), beside the C scan on one
    thread and with every file opened afresh (no files kept from the last scan);
  * tamalloc.alloc("1GiB") within 2x of a bare mmap (vs bytearray(1 << 30));
  * `tamalloc stats` for all processes starts and prints in under 0.5 s.
Exit status 0 whatever the results, unless --strict.
"""

from __future__ import annotations

import argparse
import mmap
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _timing import (
    Report,
    best_of,
    best_of_each,
    best_of_each_wall_cpu,
    count_user_processes,
    fmt_time,
    idle_processes,
    load_average,
    minimal_statm_oom_reader,
    spread,
)

# isort: split
import tamalloc
from tamalloc.backends import procfs
from tamalloc.exporter.service import raise_open_files_limit

GiB = 1 << 30
MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)


def bench_stats(report: Report, repeat: int, runs: int) -> None:
    """``runs`` independent rounds of the four scans (each the best of ``repeat``
    alternating calls): a ratio counts only between figures of the same round, and
    the spread over rounds shows how far one round can be trusted."""
    import psutil

    n = count_user_processes()
    report.note("user processes", str(n))
    # As `tamalloc exporter` does: files are kept between scans only above half the
    # soft limit, and the usual 1024 leaves no room (the "opened afresh" line is then
    # what all_mem_stats gives).
    raise_open_files_limit()
    report.note("open files soft limit", str(resource.getrlimit(resource.RLIMIT_NOFILE)[0]))
    report.note("procfs scan in use", "C" if procfs._c_scan else "pure Python (C not built)")
    from tamalloc.errors import SKIPPED_IN_SCANS
    from tamalloc.models import MemStats

    c_scan = procfs._c_scan

    def one_thread() -> object:
        return c_scan(None, MemStats, SKIPPED_IN_SCANS, 1, True) if c_scan else None

    def afresh() -> object:
        return c_scan(None, MemStats, SKIPPED_IN_SCANS, 0, False) if c_scan else None

    names = (
        "all_mem_stats(backend='procfs')",
        "the same, pure-Python scan",
        "psutil.process_iter(pid,name,memory_info)",
        "minimal statm + oom_score reader",
        "the C scan on one thread",
        "the C scan, every file opened afresh",
    )
    fns = (
        lambda: tamalloc.all_mem_stats(backend="procfs"),
        lambda: procfs._scan(procfs.list_pids()),
        lambda: list(psutil.process_iter(["pid", "name", "memory_info"])),
        minimal_statm_oom_reader,
        one_thread,
        afresh,
    )
    rounds: list[list[tuple[float, float]]] = []
    for run in range(runs):
        (ours, _, theirs, *_) = result = best_of_each_wall_cpu(*fns, repeat=repeat)
        rounds.append(result)
        report.note(
            f"run {run + 1} (load {load_average()})",
            f"tamalloc {fmt_time(ours[0] / n)}, psutil {fmt_time(theirs[0] / n)} per process:"
            f" {theirs[0] / ours[0]:.2f}x wall, {theirs[1] / ours[1]:.2f}x CPU",
        )
    for i, name in enumerate(names):
        if i >= 4 and c_scan is None:
            continue
        for kind, k in (("wall", 0), ("CPU", 1)):
            lo, mid, hi = spread([r[i][k] / n for r in rounds])
            report.note(
                f"{name}, {kind}",
                f"{fmt_time(mid)} per process (min {fmt_time(lo)}, max {fmt_time(hi)})",
            )

    def ratio(label: str, num: int, den: int, k: int) -> tuple[float, float, float]:
        lo, mid, hi = spread([r[num][k] / r[den][k] for r in rounds])
        report.note(label, f"median {mid:.2f}x (min {lo:.2f}x, max {hi:.2f}x, {runs} runs)")
        return lo, mid, hi

    _, wall_ratio, _ = ratio("ratio psutil / tamalloc, wall", 2, 0, 0)
    ratio("ratio psutil / tamalloc, CPU", 2, 0, 1)
    if c_scan is not None:
        ratio("ratio psutil / C scan on one thread, wall (= CPU)", 2, 4, 0)
        # Opened afresh, each file costs openat + close besides its read: psutil's CPU
        # time over that is the most any scan that opens them on each call can reach.
        ratio("ratio psutil / files opened afresh, wall", 2, 5, 0)
        ratio("ratio psutil / files opened afresh, CPU", 2, 5, 1)
        ratio("gain of kept files: afresh / all_mem_stats, CPU", 5, 0, 1)
    ratio("ratio psutil / pure-Python scan, wall", 2, 1, 0)
    ratio("ratio tamalloc / minimal reader, wall", 0, 3, 0)
    cache_clear = getattr(psutil.process_iter, "cache_clear", None)
    if cache_clear is not None:
        # A one-shot script: psutil's Process objects not cached from a previous call.
        def cold() -> None:
            cache_clear()
            list(psutil.process_iter(["pid", "name", "memory_info"]))

        cold_time, ours_time = (w for w, _ in best_of_each_wall_cpu(cold, fns[0], repeat=repeat))
        report.time("psutil, first call (cache cleared)", cold_time, n)
        report.note("ratio psutil first call / tamalloc", f"{cold_time / ours_time:.2f}x")
    report.target(
        f"all_mem_stats(procfs) >= 2.5x faster than psutil, wall, median of {runs}"
        f" runs ({wall_ratio:.2f}x)",
        wall_ratio >= 2.5,
    )


def _creation_only(make: Callable[[], Any], count: int = 2000, repeat: int = 5) -> float:
    """Seconds per call of ``make`` alone; what it returns is closed outside the timing."""
    best = float("inf")
    for _ in range(repeat):
        made = []
        start = time.perf_counter()
        for _ in range(count):
            made.append(make())
        best = min(best, (time.perf_counter() - start) / count)
        for obj in made:
            obj.close()
    return best


def bench_alloc(report: Report, repeat: int, with_bytearray: bool) -> None:
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE

    def ours() -> None:
        tamalloc.alloc("1GiB", backend="procfs").close()

    def bare() -> None:
        mmap.mmap(-1, GiB, flags=flags).close()

    # A buffer's life is allocate + free, and that is what the target compares; the
    # allocation alone is shown too (mmap(2) is cheap; munmap(2) is most of the cost).
    t_ours, t_bare = best_of_each(ours, bare, repeat=max(repeat, 7), number=5000)
    report.time('alloc("1GiB") + close (procfs)', t_ours)
    report.time("bare mmap.mmap(1 GiB) + close", t_bare)
    report.note("ratio alloc / bare mmap", f"{t_ours / t_bare:.2f}x")
    only_ours = _creation_only(lambda: tamalloc.alloc("1GiB", backend="procfs"))
    only_bare = _creation_only(lambda: mmap.mmap(-1, GiB, flags=flags))
    report.time('alloc("1GiB") alone', only_ours)
    report.time("mmap.mmap(1 GiB) alone", only_bare)
    report.note("ratio (allocation alone)", f"{only_ours / only_bare:.2f}x")
    report.target(
        f'alloc("1GiB") + close within 2x of bare mmap + close ({t_ours / t_bare:.2f}x)',
        t_ours / t_bare <= 2,
    )
    # huge=True takes another path: a 2 MiB-aligned mapping moved into the buffer.
    t_huge, _ = best_of_each(
        lambda: tamalloc.alloc("1GiB", huge=True, backend="procfs").close(),
        bare,
        repeat=max(repeat, 7),
        number=2000,
    )
    report.time('alloc("1GiB", huge=True) + close (procfs)', t_huge)
    report.note("ratio huge alloc / bare mmap", f"{t_huge / t_bare:.2f}x")
    if with_bytearray:
        start = time.perf_counter()
        block = bytearray(GiB)  # zero-fills every page up front: the cost tamalloc avoids
        t_bytes = time.perf_counter() - start
        del block
        report.time("bytearray(1 << 30) (once)", t_bytes)
        report.note("ratio bytearray / alloc", f"{t_bytes / t_ours:,.0f}x")


def bench_cli(report: Report, repeat: int) -> None:
    exe = shutil.which("tamalloc", path=str(Path(sys.executable).parent))
    base = [exe] if exe else [sys.executable, "-m", "tamalloc"]
    env = {**os.environ, "TAMALLOC_BACKEND": "procfs"}
    for args in (["stats", "--json"], ["stats"]):

        def run(args: list[str] = args) -> None:
            subprocess.run([*base, *args], stdout=subprocess.DEVNULL, check=True, env=env)

        seconds = best_of(run, repeat=repeat)
        label = "tamalloc " + " ".join(args) + " (wall, piped)"
        report.time(label, seconds)
        report.target(
            f"`{' '.join(['tamalloc', *args])}` under 0.5 s ({seconds:.3f} s)", seconds < 0.5
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--processes",
        type=int,
        default=1000,
        help="extra idle processes during the stats benchmark (default 1000)",
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="each timing is the best of N calls (default 5)"
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=5,
        help="independent rounds of the stats comparison, reported as min/median/max (default 5)",
    )
    parser.add_argument(
        "--stats-only",
        action="store_true",
        help="only the all_mem_stats comparison (no CLI, no alloc)",
    )
    parser.add_argument(
        "--alloc-only",
        action="store_true",
        help="only the alloc() measurements (no idle processes, no stats)",
    )
    parser.add_argument(
        "--no-bytearray", action="store_true", help="skip the one bytearray(1 GiB) measurement"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target fails")
    args = parser.parse_args()

    report = Report(
        f"tamalloc procfs benchmark (kernel {os.uname().release},"
        f" {os.cpu_count()} CPUs, load {load_average()})"
    )
    if not args.alloc_only:
        with idle_processes(args.processes):
            bench_stats(report, args.repeat, args.runs)
            if not args.stats_only:
                bench_cli(report, args.repeat)
    if not args.stats_only:
        bench_alloc(report, args.repeat, not args.no_bytearray)
    report.note("load at the end", load_average())
    report.print()
    return 1 if args.strict and report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
