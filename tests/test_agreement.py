"""On the patched kernel: for every process, the kernel and procfs backends agree."""

from __future__ import annotations

import os

import pytest

import tamalloc
from _support import Child, proc_status
from tamalloc import MemStats

pytestmark = pytest.mark.kernel

# 6.1 batches RSS counter updates per thread (SPLIT_RSS_COUNTING) and flushes every 64
# faults, so two readers a moment apart may differ by up to 64 pages per thread.
RSS_LAG_PAGES_PER_THREAD = 64
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def _by_pid(stats: list[MemStats]) -> dict[int, MemStats]:
    return {s.pid: s for s in stats}


def _threads(pid: int) -> int:
    try:
        return int(proc_status(pid)["Threads"])
    except (OSError, KeyError, ValueError):
        return 1


def test_kernel_and_procfs_agree_for_every_process() -> None:
    # kernel, procfs, kernel: a process whose address space changed between the two
    # kernel snapshots was busy, and only it may legitimately differ in reserved.
    first = _by_pid(tamalloc.all_mem_stats(backend="kernel"))
    procfs = _by_pid(tamalloc.all_mem_stats(backend="procfs"))
    second = _by_pid(tamalloc.all_mem_stats(backend="kernel"))
    me = os.getpid()
    common = set(first) & set(procfs) & set(second) - {me}
    assert len(common) >= max(1, len(first) - 5), "the two backends list different processes"
    checked = 0
    for pid in sorted(common):
        k1, p, k2 = first[pid], procfs[pid], second[pid]
        if k1.reserved_kb != k2.reserved_kb:
            continue  # busy process: its VmSize moved during the comparison
        checked += 1
        assert p.name == k1.name, pid
        assert p.reserved_kb == k1.reserved_kb, f"pid {pid} ({p.name}): reserved differs"
        lag = RSS_LAG_PAGES_PER_THREAD * _threads(pid) * PAGE_KB
        low, high = sorted((k1.committed_kb, k2.committed_kb))
        assert low - lag <= p.committed_kb <= high + lag, (
            f"pid {pid} ({p.name}): committed {p.committed_kb} kB vs kernel {low}..{high} kB"
        )
        assert p.oom_score_adj == k1.oom_score_adj, pid
    assert checked >= len(common) // 2, "too many processes changed during the comparison"


def test_totals_agree() -> None:
    kernel = tamalloc.total_mem_stats(backend="kernel")
    procfs = tamalloc.total_mem_stats(backend="procfs")
    assert kernel.mem_total_kb == procfs.mem_total_kb
    assert kernel.commit_limit_kb == procfs.commit_limit_kb
    assert kernel.overcommit_memory == procfs.overcommit_memory
    assert kernel.processes == pytest.approx(procfs.processes, abs=2)
    assert kernel.reserved_kb == pytest.approx(procfs.reserved_kb, rel=0.02)
    assert kernel.committed_kb == pytest.approx(procfs.committed_kb, rel=0.05)
    assert kernel.committed_as_kb == pytest.approx(procfs.committed_as_kb, rel=0.05)


def test_an_idle_process_agrees_exactly(child: Child) -> None:
    kernel = tamalloc.mem_stats(child.pid, backend="kernel")
    procfs = tamalloc.mem_stats(child.pid, backend="procfs")
    assert kernel == procfs
