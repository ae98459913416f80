#!/usr/bin/env python3
"""Kernel-backend benchmark, meant for the VM with the patched kernel (`make bench-vm`).

With N idle processes (default 1,000; --processes 10000 or --ten-thousand for more):
  * all_mem_stats(backend="kernel") vs psutil process_iter(['memory_info']) plus an
    oom_score read per process vs a minimal statm + oom_score reader;
  * total_mem_stats(backend="kernel") vs summing /proc (the procfs backend);
  * alloc("1GiB") on the kernel backend vs a bare mmap;
  * first touch of 1 GiB (one byte written per 4 KiB page), huge=True vs huge=False.
Prints times and ratios. On a kernel without the syscalls it says so and exits 0.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _timing import (
    Report,
    best_of,
    best_of_each,
    count_user_processes,
    idle_processes,
    minimal_statm_oom_reader,
)

# isort: split
import tamalloc
from tamalloc import abi

GiB = 1 << 30
PAGE = mmap.PAGESIZE
MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)


def psutil_with_oom_scores() -> list[tuple[int, object, int]]:
    import psutil

    out = []
    for proc in psutil.process_iter(["memory_info"]):
        try:
            with open(f"/proc/{proc.pid}/oom_score", "rb") as f:
                out.append((proc.pid, proc.info["memory_info"], int(f.read())))
        except OSError:
            continue
    return out


def raw_get_mem_stats() -> Callable[[], int]:
    """The all-process syscall alone, called from Python through ctypes into a buffer
    (the records are then all there, as fixed-width structs, but not decoded)."""
    size = abi.TAMALLOC_MEM_STATS_SIZE_VER0
    capacity = 2 * count_user_processes() + 1024
    buf = ctypes.create_string_buffer(capacity * size)
    syscall = ctypes.CDLL(None, use_errno=True).syscall

    def call() -> int:
        written = syscall(ctypes.c_long(abi.NR_GET_MEM_STATS), 0, buf, size, capacity, 0)
        assert written > 0, "get_mem_stats failed"
        return int(written)

    return call


def bench_stats(report: Report, repeat: int) -> None:
    n = count_user_processes()
    report.note("user processes", str(n))
    contenders = [
        raw_get_mem_stats(),
        lambda: tamalloc.all_mem_stats(backend="kernel"),
        lambda: tamalloc.all_mem_stats(backend="procfs"),
        minimal_statm_oom_reader,
    ]
    try:
        import psutil  # noqa: F401
    except ImportError:
        have_psutil = False
    else:
        have_psutil = True
        contenders.append(psutil_with_oom_scores)
    raw, kernel, procfs, minimal, *rest = best_of_each(*contenders, repeat=repeat)
    report.time("get_mem_stats(0) syscall alone", raw, n)
    report.time("all_mem_stats(kernel), decoded", kernel, n)
    report.time("all_mem_stats(procfs)", procfs, n)
    report.time("minimal statm + oom_score reader", minimal, n)
    if not have_psutil:
        report.note("psutil", "not installed: skipped")
    else:
        theirs = rest[0]
        report.time("psutil process_iter(memory_info) + oom_score", theirs, n)
        report.note("ratio psutil+oom / syscall", f"{theirs / raw:.1f}x")
        report.note("ratio psutil+oom / all_mem_stats", f"{theirs / kernel:.1f}x")
        report.target("syscall >= 50x faster than psutil + oom_score", theirs / raw >= 50)
        report.target(
            "all_mem_stats(kernel) >= 50x faster than psutil + oom_score", theirs / kernel >= 50
        )
    report.note("ratio minimal reader / syscall", f"{minimal / raw:.1f}x")
    report.note("ratio minimal reader / all_mem_stats", f"{minimal / kernel:.1f}x")
    report.note("ratio procfs / kernel", f"{procfs / kernel:.1f}x")
    report.target(
        "syscall >= 10x faster than a minimal statm + oom_score reader", minimal / raw >= 10
    )
    report.target(
        "all_mem_stats(kernel) >= 10x faster than the minimal reader", minimal / kernel >= 10
    )

    total_k = best_of(lambda: tamalloc.total_mem_stats(backend="kernel"), repeat=repeat)
    total_p = best_of(lambda: tamalloc.total_mem_stats(backend="procfs"), repeat=repeat)
    report.time("total_mem_stats(kernel)", total_k)
    report.time("total_mem_stats(procfs): summing /proc", total_p)
    report.note("ratio procfs / kernel (totals)", f"{total_p / total_k:.1f}x")
    report.target(
        "total_mem_stats(kernel) >= 50x faster than summing /proc", total_p / total_k >= 50
    )


def bench_alloc(report: Report, repeat: int) -> None:
    def ours() -> None:
        tamalloc.alloc("1GiB", backend="kernel").close()

    def bare() -> None:
        mmap.mmap(-1, GiB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_NORESERVE).close()

    # At least 5 rounds whatever --repeat says: one round is a single noisy sample.
    t_ours, t_bare = best_of_each(ours, bare, repeat=max(repeat, 5), number=200)
    report.time('alloc("1GiB") + close (kernel)', t_ours)
    report.time("bare mmap.mmap(1 GiB) + close", t_bare)
    report.note("ratio alloc / bare mmap", f"{t_ours / t_bare:.2f}x")
    report.target('alloc("1GiB") within 2x of mmap', t_ours / t_bare <= 2)


def _first_touch(huge: bool) -> float:
    with tamalloc.alloc("1GiB", huge=huge, backend="kernel") as buf:
        start = time.perf_counter()
        try:
            import numpy as np
        except ImportError:
            view = memoryview(buf).cast("B")
            for offset in range(0, GiB, PAGE):
                view[offset] = 1
            del view
        else:
            arr = np.frombuffer(buf, dtype=np.uint8)
            arr[::PAGE] = 1  # one write per 4 KiB page, in C
            del arr
        return time.perf_counter() - start


def bench_first_touch(report: Report) -> None:
    small = _first_touch(huge=False)
    huge = _first_touch(huge=True)
    report.time("first touch of 1 GiB, 4 KiB pages", small)
    report.time("first touch of 1 GiB, huge=True", huge)
    report.note("ratio small / huge pages", f"{small / huge:.1f}x")
    report.target("first touch with huge=True >= 4x faster", small / huge >= 4)
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.exists():
        report.note("transparent_hugepage", thp.read_text().strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--processes",
        type=int,
        default=1000,
        help="extra idle processes during the stats benchmark (default 1000)",
    )
    parser.add_argument("--ten-thousand", action="store_true", help="same as --processes 10000")
    parser.add_argument("--repeat", type=int, default=5, help="best of N runs (default 5)")
    args = parser.parse_args()
    if not tamalloc.kernel_available():
        print(
            "bench_kernel: needs the patched kernel with the tamalloc syscalls"
            " (run `make bench-vm`); nothing measured on this kernel."
        )
        return 0
    processes = 10000 if args.ten_thousand else args.processes
    report = Report(
        f"tamalloc kernel benchmark (kernel {os.uname().release},"
        f" {os.cpu_count()} CPUs, {processes} idle processes)"
    )
    with idle_processes(processes):
        bench_stats(report, args.repeat)
    bench_alloc(report, args.repeat)
    bench_first_touch(report)
    report.print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
