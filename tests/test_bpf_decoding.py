"""The bpf backend's decoding of iterator records (C, in _bpfiter), on records built
here: runs wherever the extension was built, the guest included; the iterator itself is
tested in test_bpf_backend.py. The expected scores come from tamalloc.oom_score, the
model the other backends' tests check against the kernel."""

from __future__ import annotations

import mmap
import random
from pathlib import Path

import pytest

from tamalloc.backends import bpf
from tamalloc.models import MemStats, committed_pct
from tamalloc.oom_score import OOM_SCORE_ADJ_MIN, badness, proc_score

try:
    from tamalloc.backends import _bpfiter
except ImportError:  # pragma: no cover - where libbpf-dev was missing at install
    pytest.skip("tamalloc.backends._bpfiter was not built (libbpf-dev)", allow_module_level=True)

PAGE = mmap.PAGESIZE
PAGE_KB = PAGE // 1024
TOTAL_PAGES = 4_000_000
U64 = (1 << 64) - 1


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
    pgtables: int = 3 * PAGE + 1,
    cgroup: int = 1,
) -> bytes:
    return bpf.RECORD.pack(pid, flags, adj, 0, comm, vm, anon, file_, shmem, swap, pgtables, cgroup)


def mem_stats(data: bytes, total_pages: int = TOTAL_PAGES) -> list[MemStats]:
    return _bpfiter.mem_stats(data, MemStats, total_pages, PAGE)


def rows(data: bytes, total_pages: int = TOTAL_PAGES) -> list[tuple[object, ...]]:
    return list(_bpfiter.oom_rows(data, total_pages, PAGE))


def test_a_zombie_leader_takes_the_memory_of_its_first_thread() -> None:
    data = b"".join(
        [
            # A thread may come before its leader (tids wrap around).
            rec(10, bpf.THREAD | bpf.OOM_SKIP, comm=b"leader", vm=900, anon=90),
            rec(10, bpf.NO_MM | bpf.EXITING | bpf.VFORK, comm=b"leader", vm=0, anon=0, adj=300),
            rec(10, bpf.THREAD, comm=b"leader", vm=1, anon=1),
            rec(11),
        ]
    )
    zombie, other = mem_stats(data)
    assert (zombie.pid, other.pid) == (10, 11)
    assert (zombie.reserved_kb, zombie.anon_kb) == (900 * PAGE_KB, 90 * PAGE_KB)  # the first
    assert zombie.oom_score_adj == 300  # the leader's
    # The mm's flags are the thread's (the reaper is done: unkillable); the leader's own
    # VFORK, which is about the mm it no longer has, is dropped.
    assert zombie.oom_score == 0
    (row, _) = rows(data)
    assert row[8] is True  # unkillable
    without_skip = data.replace(
        bpf.RECORD.pack(
            10, bpf.THREAD | bpf.OOM_SKIP, 0, 0, b"leader", 900, 90, 50, 5, 7, 3 * PAGE + 1, 1
        ),
        rec(10, bpf.THREAD, comm=b"leader", vm=900, anon=90),
    )
    assert rows(without_skip)[0][8] is False


def test_a_leader_without_mm_nor_live_thread_is_left_out() -> None:
    assert [s.pid for s in mem_stats(rec(5, bpf.NO_MM) + rec(6))] == [6]
    assert _bpfiter.totals(rec(5, bpf.NO_MM) + rec(6), PAGE)[0] == 1


def test_threads_of_a_process_with_a_leader_are_not_processes() -> None:
    assert [s.pid for s in mem_stats(rec(7) + rec(7, bpf.THREAD) + rec(8, bpf.THREAD))] == [7]


def test_mem_stats_units_and_score() -> None:
    (stats,) = mem_stats(rec(7, adj=-5, comm=b"n\xff\0junk"))
    assert type(stats) is MemStats
    assert stats.pid == 7 and stats.name == "n\ufffd"
    assert stats.reserved_kb == 1000 * PAGE_KB
    assert (stats.anon_kb, stats.file_kb, stats.shmem_kb, stats.swap_kb) == (
        100 * PAGE_KB,
        50 * PAGE_KB,
        5 * PAGE_KB,
        7 * PAGE_KB,
    )
    assert stats.committed_kb == 155 * PAGE_KB
    assert stats.committed_pct == committed_pct(155 * PAGE_KB, 1000 * PAGE_KB)
    # pgtables_bytes / PAGE_SIZE truncates, as oom_badness() does
    assert stats.oom_score == proc_score(badness(155, 7, 3, -5, TOTAL_PAGES), TOTAL_PAGES)
    assert stats.oom_score_adj == -5


def test_a_comm_of_sixteen_bytes_has_no_nul() -> None:
    (stats,) = mem_stats(rec(7, comm=b"abcdefghijklmnop"))
    assert stats.name == "abcdefghijklmnop"


@pytest.mark.parametrize(
    ("flags", "adj"),
    [(bpf.OOM_SKIP, 0), (bpf.VFORK, 500), (bpf.GLOBAL_INIT, 0), (0, OOM_SCORE_ADJ_MIN)],
)
def test_unkillable_scores_zero(flags: int, adj: int) -> None:
    (stats,) = mem_stats(rec(9, flags, adj=adj))
    assert stats.oom_score == 0
    ((_pid, _name, _cg, _rss, _swap, _pt, score, got_adj, unkillable, victim, _, _),) = rows(
        rec(9, flags, adj=adj)
    )
    assert (score, got_adj, unkillable, victim) == (0, adj, True, False)


def test_killable_flags_do_not_make_unkillable() -> None:
    for flags in (bpf.EXITING, bpf.OOM_ORIGIN, bpf.OOM_VICTIM):
        ((*_, unkillable, victim, origin, exiting),) = rows(rec(9, flags))
        assert unkillable is False
        assert victim is (flags == bpf.OOM_VICTIM)
        assert origin is (flags == bpf.OOM_ORIGIN)
        assert exiting is (flags == bpf.EXITING)


def test_oom_rows_fields() -> None:
    ((pid, name, cgroup, rss, swap, pgtables, score, adj, _, _, _, _),) = rows(
        rec(12, comm=b"x", cgroup=4242, adj=17)
    )
    assert (pid, name, cgroup, adj) == (12, "x", 4242, 17)
    assert (rss, swap, pgtables) == (155 * PAGE_KB, 7 * PAGE_KB, (3 * PAGE + 1) >> 10)
    assert score == proc_score(badness(155, 7, 3, 17, TOTAL_PAGES), TOTAL_PAGES)


def test_totals() -> None:
    data = rec(1) + rec(2, vm=10, anon=1, file_=0, shmem=0, swap=0) + rec(3, bpf.NO_MM)
    assert _bpfiter.totals(data, PAGE) == (2, 1010 * PAGE_KB, 156 * PAGE_KB, 7 * PAGE_KB)


def _reference(records: list[tuple[int, ...]], total_pages: int) -> list[tuple[object, ...]]:
    """What the C decoding should give for records with neither THREAD nor NO_MM: the
    unit conversion and proc_oom_score() in Python, from tamalloc.oom_score."""
    result = []
    for pid, flags, adj, _pad, comm, vm, anon, file_, shmem, swap, pgtables, _cg in records:
        killable = adj != OOM_SCORE_ADJ_MIN and not flags & (
            bpf.GLOBAL_INIT | bpf.OOM_SKIP | bpf.VFORK
        )
        points = badness(anon + file_ + shmem, swap, pgtables // PAGE, adj, total_pages)
        result.append(
            (
                pid,
                comm.split(b"\0", 1)[0].decode("utf-8", "replace"),
                vm * PAGE_KB,
                (anon + file_ + shmem) * PAGE_KB,
                anon * PAGE_KB,
                swap * PAGE_KB,
                proc_score(points if killable else None, total_pages),
                adj,
            )
        )
    return result


def test_random_records_against_the_python_model() -> None:
    rng = random.Random(17)
    flag_bits = (bpf.OOM_SKIP, bpf.OOM_ORIGIN, bpf.VFORK, bpf.EXITING, bpf.OOM_VICTIM)
    for total_pages in (1, 999, 1000, 4_000_000, 1 << 40):
        records = []
        for pid in range(1, 300):
            flags = sum(bit for bit in flag_bits if rng.random() < 0.1)
            comm = bytes(rng.randrange(256) for _ in range(rng.randrange(17)))[:16]
            counts = [
                rng.choice((0, rng.randrange(1 << 20), rng.randrange(1 << 40))) for _ in "12345"
            ]
            records.append(
                (
                    pid,
                    flags,
                    rng.randrange(-1000, 1001),
                    0,
                    comm,
                    *counts,
                    rng.randrange(1 << 32),
                    rng.randrange(1 << 40),
                )
            )
        data = b"".join(bpf.RECORD.pack(*r) for r in records)
        got = [
            (
                s.pid,
                s.name,
                s.reserved_kb,
                s.committed_kb,
                s.anon_kb,
                s.swap_kb,
                s.oom_score,
                s.oom_score_adj,
            )
            for s in mem_stats(data, total_pages)
        ]
        assert got == _reference(records, total_pages)


def test_hostile_counts_saturate_and_never_go_negative() -> None:
    data = rec(1, vm=U64, anon=U64, file_=U64, shmem=U64, swap=U64, pgtables=U64, adj=1 << 30)
    (stats,) = mem_stats(data, total_pages=U64 >> 1)
    assert 0 <= stats.anon_kb < 1 << 63 and stats.committed_kb == 3 * stats.anon_kb
    assert 0 <= stats.oom_score <= 2000 * 2
    processes, reserved, committed, swap = _bpfiter.totals(data * 100_000, PAGE)
    assert processes == 100_000 and reserved == committed == swap == U64  # saturated


@pytest.mark.parametrize("cut", [1, 44, bpf.RECORD.size - 1])
def test_a_truncated_pass_or_another_layout_is_an_error(cut: int) -> None:
    data = rec(1) + rec(2)
    with pytest.raises(ValueError, match="record layout or a truncated read"):
        mem_stats(data[:-cut])
    with pytest.raises(ValueError, match="record layout"):
        rows(data + b"\0" * cut)
    with pytest.raises(ValueError, match="record layout"):
        _bpfiter.totals(data[:cut], PAGE)


def test_hostile_arguments() -> None:
    with pytest.raises(TypeError):
        _bpfiter.mem_stats(rec(1), dict, TOTAL_PAGES, PAGE)
    with pytest.raises(TypeError):
        _bpfiter.mem_stats("text", MemStats, TOTAL_PAGES, PAGE)
    for page in (0, 1000, 3 * 1024 + 1, 1 << 21, -4096):
        with pytest.raises(ValueError, match="page_size"):
            _bpfiter.mem_stats(rec(1), MemStats, TOTAL_PAGES, page)
    with pytest.raises(ValueError, match="total_pages"):
        _bpfiter.oom_rows(rec(1), -1, PAGE)
    with pytest.raises(OverflowError):
        _bpfiter.oom_rows(rec(1), 1 << 64, PAGE)
    # A buffer other than bytes, and an empty pass.
    assert mem_stats(bytearray(rec(3)))[0].pid == 3
    assert mem_stats(memoryview(rec(3) + rec(4)))[1].pid == 4
    assert mem_stats(b"") == [] and _bpfiter.totals(b"", PAGE) == (0, 0, 0, 0)


def test_many_zombie_leaders_with_threads() -> None:
    """Each NO_MM leader finds its thread through a table, not a search each."""
    data = b"".join(
        rec(pid, bpf.NO_MM) + rec(pid, bpf.THREAD, anon=pid) for pid in range(1, 20_001)
    )
    stats = mem_stats(data)
    assert len(stats) == 20_000
    assert all(s.anon_kb == s.pid * PAGE_KB for s in stats)


def test_kernel_version_parsing() -> None:
    assert bpf._kernel_version("6.18.0-1-amd64") == (6, 18)
    assert bpf._kernel_version("6.18.44-fc-v1272") == (6, 18)
    assert bpf._kernel_version("5.8.0") >= bpf.MIN_KERNEL > bpf._kernel_version("5.7.19")
    assert bpf._kernel_version("5.10") == (5, 10)
    for weird in ("weird", "6", "6.x", "٦.١٨", ""):
        assert bpf._kernel_version(weird) == (0, 0)


def _fnv1a64(data: bytes) -> str:
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & (1 << 64) - 1
    return f"{value:016x}"


def test_the_pin_name_tells_builds_apart(tmp_path: Path) -> None:
    """The pin's name carries a hash of the object (FNV-1a, in C, no module to import):
    a pin of another build (another layout) is under another name."""
    one, two = tmp_path / "one.o", tmp_path / "two.o"
    one.write_bytes(b"\x7fELF" + bytes(range(256)) * 100)
    two.write_bytes(b"\x7fELF" + bytes(range(256)) * 99 + bytes(255) + b"\x01")
    assert _bpfiter.file_tag(str(one)) == _fnv1a64(one.read_bytes())
    assert _bpfiter.file_tag(str(two)) == _fnv1a64(two.read_bytes()) != _bpfiter.file_tag(str(one))
    (tmp_path / "empty").write_bytes(b"")
    assert _bpfiter.file_tag(str(tmp_path / "empty")) == "cbf29ce484222325"
    with pytest.raises(FileNotFoundError):
        _bpfiter.file_tag(str(tmp_path / "missing"))
    with pytest.raises(IsADirectoryError):
        _bpfiter.file_tag(str(tmp_path))
    if Path(bpf.OBJECT).is_file():
        assert bpf.pin_name() == f"{bpf.PIN_PREFIX}{bpf.RECORD.size}-" + _fnv1a64(
            Path(bpf.OBJECT).read_bytes()
        )


def test_the_selection_knows_the_pin_directory() -> None:
    from tamalloc.backends import _PIN_DIR

    assert _PIN_DIR == bpf.PIN_DIR


def test_oom_tasks_carry_oom_origin_and_exiting(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

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
            # A zombie leader whose thread holds the mm in a group exit: exiting, as the
            # OOM killer sees the process through that thread.
            rec(25, bpf.NO_MM, vm=0, anon=0),
            rec(25, bpf.THREAD | bpf.EXITING),
        ]
    )
    backend = object.__new__(bpf.BpfBackend)
    backend._c = SimpleNamespace(read=lambda: data, oom_rows=_bpfiter.oom_rows)  # type: ignore[attr-defined]
    monkeypatch.setattr(bpf, "_total_pages", lambda: TOTAL_PAGES)
    monkeypatch.setattr(kernel, "_cgroup_paths_by_id", lambda: {})
    got = [(t.pid, t.oom_origin, t.exiting) for t in backend.oom_tasks()]
    assert got == [
        (20, True, False),
        (21, False, True),
        (22, False, False),
        (23, False, False),
        (24, False, False),
        (25, False, True),
    ]
