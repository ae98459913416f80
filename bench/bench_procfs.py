#!/usr/bin/env python3
"""Host benchmark of the procfs backend and of alloc(), against psutil and bare mmap.

Prints times and ratios from one run, and PASS/FAIL per target line:
  * all_mem_stats(backend="procfs") (with every OOM score) ≥ 2.5x faster than
    psutil.process_iter(['pid', 'name', 'memory_info']), with 1,000 idle processes;
  * tamalloc.alloc("1GiB") within 2x of a bare mmap (vs bytearray(1 << 30));
  * `tamalloc stats` for all processes starts and prints in under 0.5 s.
Exit status 0 whatever the results, unless --strict.
"""

from __future__ import annotations

import argparse
import mmap
import os
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
    count_user_processes,
    idle_processes,
    minimal_statm_oom_reader,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import tamalloc  # noqa: E402
from tamalloc.backends import procfs  # noqa: E402

GiB = 1 << 30
MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)


def bench_stats(report: Report, repeat: int) -> None:
    import psutil

    n = count_user_processes()
    report.note("user processes", str(n))
    ours, theirs, minimal, pure_python = best_of_each(
        lambda: tamalloc.all_mem_stats(backend="procfs"),
        lambda: list(psutil.process_iter(["pid", "name", "memory_info"])),
        minimal_statm_oom_reader,
        lambda: procfs._scan(procfs.list_pids()),
        repeat=repeat,
    )
    report.note("procfs scan in use", "C" if procfs._c_scan else "pure Python (C not built)")
    report.time("all_mem_stats(backend='procfs')", ours, n)
    report.time("the same, pure-Python scan", pure_python, n)
    report.time("psutil.process_iter(pid,name,memory_info)", theirs, n)
    report.time("minimal statm + oom_score reader", minimal, n)
    report.note("ratio psutil / tamalloc", f"{theirs / ours:.2f}x")
    report.note("ratio tamalloc / minimal reader", f"{ours / minimal:.2f}x")
    report.note("ratio psutil / pure-Python scan", f"{theirs / pure_python:.2f}x")
    cache_clear = getattr(psutil.process_iter, "cache_clear", None)
    if cache_clear is not None:
        # A one-shot script: psutil's Process objects not cached from a previous call.
        def cold() -> None:
            cache_clear()
            list(psutil.process_iter(["pid", "name", "memory_info"]))

        cold_time = best_of(cold, repeat=repeat)
        report.time("psutil, first call (cache cleared)", cold_time, n)
        report.note("ratio psutil first call / tamalloc", f"{cold_time / ours:.2f}x")
    report.target(f"all_mem_stats(procfs) >= 2.5x faster than psutil ({theirs / ours:.2f}x)",
                  theirs / ours >= 2.5)


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
    report.target(f'alloc("1GiB") + close within 2x of bare mmap + close ({t_ours / t_bare:.2f}x)',
                  t_ours / t_bare <= 2)
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
        report.target(f"`{' '.join(['tamalloc', *args])}` under 0.5 s ({seconds:.3f} s)",
                      seconds < 0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=1000,
                        help="extra idle processes during the stats benchmark (default 1000)")
    parser.add_argument("--repeat", type=int, default=5, help="best of N runs (default 5)")
    parser.add_argument("--no-bytearray", action="store_true",
                        help="skip the one bytearray(1 GiB) measurement")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target fails")
    args = parser.parse_args()

    report = Report(f"tamalloc procfs benchmark (kernel {os.uname().release},"
                    f" {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f})")
    with idle_processes(args.processes):
        bench_stats(report, args.repeat)
        bench_cli(report, args.repeat)
    bench_alloc(report, args.repeat, not args.no_bytearray)
    report.print()
    return 1 if args.strict and report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
