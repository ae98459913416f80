"""The bpf backend's decoding of iterator records, on records built here: runs
everywhere, the iterator itself is tested in test_bpf_backend.py."""

from __future__ import annotations

import mmap

import pytest

from tamalloc.backends import bpf
from tamalloc.oom_score import badness, proc_score

PAGE_KB = mmap.PAGESIZE // 1024
TOTAL_PAGES = 4_000_000


def rec(
    pid: int,
    flags: int = 0,
    *,
    adj: int = 0,
    comm: bytes = b"p",
    vm: int = 1000,
    anon: int = 100,
    file_: int = 50,
    shmem: int = 5,
    swap: int = 7,
    pgtables: int = 3 * mmap.PAGESIZE + 1,
    cgroup: int = 1,
) -> bytes:
    return bpf.RECORD.pack(pid, flags, adj, 0, comm, vm, anon, file_, shmem, swap, pgtables, cgroup)


def test_a_zombie_leader_takes_the_memory_of_its_first_thread() -> None:
    data = b"".join(
        [
            # A thread may come before its leader (tids wrap around).
            rec(10, bpf.THREAD | bpf.VFORK, comm=b"leader", vm=900, anon=90),
            rec(10, bpf.NO_MM | bpf.EXITING, comm=b"leader", vm=0, anon=0, adj=300),
            rec(10, bpf.THREAD, comm=b"leader", vm=1, anon=1),
            rec(11),
        ]
    )
    (zombie, other) = bpf._processes(data)
    assert zombie[0] == 10 and other[0] == 11
    assert zombie[5:7] == (900, 90)  # the first thread's memory
    # The leader's flags, the mm's from the thread; the leader's PF_EXITING dropped: the
    # process is not exiting while its other threads run.
    assert zombie[1] == bpf.VFORK
    assert zombie[2] == 300  # the leader's oom_score_adj


def test_a_leader_without_mm_nor_live_thread_is_left_out() -> None:
    assert [r[0] for r in bpf._processes(rec(5, bpf.NO_MM) + rec(6))] == [6]


def test_mem_stats_units_and_score() -> None:
    (stats,) = bpf._mem_stats(bpf._processes(rec(7, adj=-5, comm=b"n\xff\0junk")), TOTAL_PAGES)
    assert stats.pid == 7 and stats.name == "n\ufffd"
    assert stats.reserved_kb == 1000 * PAGE_KB
    assert (stats.anon_kb, stats.file_kb, stats.shmem_kb, stats.swap_kb) == (
        100 * PAGE_KB,
        50 * PAGE_KB,
        5 * PAGE_KB,
        7 * PAGE_KB,
    )
    assert stats.committed_kb == 155 * PAGE_KB
    # pgtables_bytes / PAGE_SIZE truncates, as oom_badness() does
    assert stats.oom_score == proc_score(badness(155, 7, 3, -5, TOTAL_PAGES), TOTAL_PAGES)
    assert stats.oom_score_adj == -5


@pytest.mark.parametrize(
    ("flags", "adj"),
    [(bpf.OOM_SKIP, 0), (bpf.VFORK, 500), (bpf.GLOBAL_INIT, 0), (0, -1000)],
)
def test_unkillable_scores_zero(flags: int, adj: int) -> None:
    (stats,) = bpf._mem_stats(bpf._processes(rec(9, flags, adj=adj)), TOTAL_PAGES)
    assert stats.oom_score == 0
    assert bpf._unkillable(flags, adj)


def test_killable_flags_do_not_make_unkillable() -> None:
    for flags in (bpf.EXITING, bpf.OOM_ORIGIN, bpf.OOM_VICTIM):
        assert not bpf._unkillable(flags, 0)


def test_kernel_version_parsing() -> None:
    assert bpf._kernel_version("6.18.0-1-amd64") == (6, 18)
    assert bpf._kernel_version("5.8.0") >= bpf.MIN_KERNEL > bpf._kernel_version("5.7.19")
    assert bpf._kernel_version("weird") == (0, 0)


def test_oom_tasks_carry_oom_origin_and_exiting(monkeypatch: pytest.MonkeyPatch) -> None:
    from tamalloc.backends import kernel

    data = b"".join(
        [
            rec(20, bpf.OOM_ORIGIN, adj=-1000),
            rec(21, bpf.EXITING),
            rec(22, bpf.EXITING | bpf.OOM_SKIP),  # reaped: unkillable, not a skip
            # A zombie leader whose thread runs on: the process is not exiting.
            rec(23, bpf.NO_MM | bpf.EXITING, vm=0, anon=0),
            rec(23, bpf.THREAD),
            rec(24),
        ]
    )
    backend = object.__new__(bpf.BpfBackend)
    monkeypatch.setattr(bpf, "_read_pass", lambda: data)
    monkeypatch.setattr(bpf, "_total_pages", lambda: TOTAL_PAGES)
    monkeypatch.setattr(kernel, "_cgroup_paths_by_id", lambda: {})
    got = [(t.pid, t.oom_origin, t.exiting) for t in backend.oom_tasks()]
    assert got == [
        (20, True, False),
        (21, False, True),
        (22, False, False),
        (23, False, False),
        (24, False, False),
    ]
