"""The kernel backend's buffer sizing, retry on EOVERFLOW and record decoding, with the
syscall replaced by a fake (runs on any kernel)."""

from __future__ import annotations

import ctypes
import errno
from pathlib import Path

import pytest

from tamalloc import NoSuchProcess, abi
from tamalloc.backends import kernel

RECORD = ctypes.sizeof(abi.TamallocMemStats)


def _record(pid: int, comm: bytes, reserved: int, committed: int) -> bytes:
    return bytes(
        abi.TamallocMemStats(
            pid=pid,
            oom_score=666,
            oom_score_adj=-100,
            comm=comm,
            reserved_kb=reserved,
            committed_kb=committed,
            anon_kb=committed - 8,
            file_kb=8,
            shmem_kb=0,
            swap_kb=4,
            pgtables_kb=12,
        )
    )


class FakeKernel:
    """get_mem_stats over a process table that grows by ``growth`` after sizing."""

    def __init__(self, records: list[bytes], growth: list[bytes]) -> None:
        self.records, self.growth, self.calls = records, growth, []

    def __call__(self, pid: int, buf: ctypes.Array[ctypes.c_char] | None, count: int) -> int:
        self.calls.append((pid, count))
        if pid > 0:
            for rec in self.records:
                if abi.MEM_STATS_STRUCT.unpack(rec)[0] == pid:
                    assert buf is not None and count >= 1
                    ctypes.memmove(buf, rec, RECORD)
                    return 1
            return -errno.ESRCH
        if buf is None:
            n = len(self.records)
            self.records = self.records + self.growth  # processes appear meanwhile
            return n
        if len(self.records) > count:
            return -errno.EOVERFLOW
        data = b"".join(self.records)
        ctypes.memmove(buf, data, len(data))
        return len(self.records)


@pytest.fixture
def kbackend() -> kernel.KernelBackend:
    return object.__new__(kernel.KernelBackend)  # skip the availability check


def test_all_grows_the_buffer_on_eoverflow(
    kbackend: kernel.KernelBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = [_record(pid, b"proc%d" % pid, 1000 + pid, 100) for pid in range(1, 4)]
    growth = [_record(pid, b"late", 500, 50) for pid in range(10, 40)]
    fake = FakeKernel(table, growth)
    monkeypatch.setattr(kernel, "_get_mem_stats", fake)
    stats = kbackend.all_mem_stats()
    assert [s.pid for s in stats] == [1, 2, 3, *range(10, 40)]
    assert [count for _, count in fake.calls] == [0, 19, 38]  # sized, too small, doubled
    first = stats[0]
    assert first.name == "proc1"
    assert (first.reserved_kb, first.committed_kb, first.anon_kb, first.file_kb) == (
        1001,
        100,
        92,
        8,
    )
    assert (first.swap_kb, first.oom_score, first.oom_score_adj) == (4, 666, -100)
    assert first.committed_pct == pytest.approx(100 / 1001 * 100)
    # The next scan trusts the last count (plus headroom) and skips the sizing walk.
    assert [s.pid for s in kbackend.all_mem_stats()] == [1, 2, 3, *range(10, 40)]
    assert [count for _, count in fake.calls][3:] == [33 + 16]


def test_one_process_and_errors(
    kbackend: kernel.KernelBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "é-sixteen-bytes!".encode()[:15]  # comm is cut at 15 bytes, mid-character
    monkeypatch.setattr(kernel, "_get_mem_stats", FakeKernel([_record(7, name, 0, 0)], []))
    stats = kbackend.mem_stats(7)
    assert stats.pid == 7
    assert stats.name == name.decode("utf-8", "replace")
    assert stats.committed_pct == 0
    with pytest.raises(NoSuchProcess, match="8"):
        kbackend.mem_stats(8)


def _fake_total(size: int, hidden: int, processes: int = 12) -> object:
    def fake(rec: abi.TamallocTotalMemStats) -> int:
        # What a kernel writes, as raw bytes: VER1 fills size and some_hidden, a
        # VER0 kernel leaves the old __reserved 0 and zero-fills the bytes past its own.
        raw = abi.TOTAL_MEM_STATS_STRUCT.pack(
            processes, 1000, 500, 0, 700, 9000, 16000, 0, size, hidden
        )
        ctypes.memmove(ctypes.byref(rec), raw, len(raw))
        return 0

    return fake


@pytest.mark.parametrize(
    ("size", "hidden", "expected"),
    # A kernel of this series writes 0 or 1; an earlier one of it wrote a count.
    [(72, 1, True), (72, 45, True), (72, 0, False), (0, 0, None), (64, 1, None), (4096, 1, True)],
)
def test_total_decodes_the_hidden_flag_only_from_a_ver1_record(
    kbackend: kernel.KernelBackend,
    monkeypatch: pytest.MonkeyPatch,
    size: int,
    hidden: int,
    expected: bool | None,
) -> None:
    monkeypatch.setattr(kernel, "_get_total_mem_stats", _fake_total(size, hidden))
    total = kbackend.total_mem_stats()
    assert total.processes == 12
    assert (total.reserved_kb, total.committed_kb, total.committed_as_kb) == (1000, 500, 700)
    assert total.some_hidden is expected


def test_the_backend_asks_for_the_ver1_record() -> None:
    assert kernel._TOTAL_SIZE == abi.TAMALLOC_TOTAL_MEM_STATS_SIZE_VER1 == 72


def test_total_errors_are_translated(
    kbackend: kernel.KernelBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernel, "_get_total_mem_stats", lambda rec: -errno.EFAULT)
    with pytest.raises(OSError, match="get_total_mem_stats"):
        kbackend.total_mem_stats()


def test_visibility_on_the_kernel_backend_uses_the_hidden_flag(
    kbackend: kernel.KernelBackend, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    import tamalloc.process_visibility as pv
    import tamalloc.stats

    sysctl = tmp_path / "restrict"  # type: ignore[operator]
    sysctl.write_text("1\n")
    monkeypatch.setattr(pv, "_RESTRICT_PATH", str(sysctl))
    monkeypatch.setattr(kernel, "_get_total_mem_stats", _fake_total(72, 1))
    monkeypatch.setattr(tamalloc.stats, "get_backend", lambda name=None: kbackend)
    vis = tamalloc.stats.visibility(backend="kernel")
    assert vis.some_hidden is True
    # No total: the kernel says only that some are hidden, never how many.
    assert vis.describe(12) == (
        "12 processes shown; others are hidden from you: vm.tamalloc_stats_restrict=1;"
        " run as root or use --backend procfs to see what /proc shows"
    )
    monkeypatch.setattr(kernel, "_get_total_mem_stats", _fake_total(0, 0))  # VER0 kernel
    assert tamalloc.stats.visibility(backend="kernel").describe(12) is None


def test_decoding_uses_the_one_committed_pct(monkeypatch: pytest.MonkeyPatch) -> None:
    # committed_pct has one definition (models.committed_pct); the decoder calls it.
    from tamalloc import models

    assert kernel.committed_pct is models.committed_pct
    monkeypatch.setattr(kernel, "committed_pct", lambda committed, reserved: -1.0)
    (stats,) = kernel._from_records(memoryview(_record(5, b"x", 100, 50)))
    assert stats.committed_pct == -1.0


def _ver1_record(pid: int, cgroup_id: int, flags: int, size: int = 104) -> bytes:
    return bytes(
        abi.TamallocMemStats(
            pid=pid,
            oom_score=700,
            oom_score_adj=-1000 if flags else 250,
            size=size,
            comm=b"worker",
            reserved_kb=9000,
            committed_kb=4000,
            anon_kb=3000,
            file_kb=1000,
            swap_kb=64,
            pgtables_kb=40,
            cgroup_id=cgroup_id,
            oom_flags=flags,
        )
    )


def test_oom_tasks_decode_the_cgroup_and_the_oom_flags(
    kbackend: kernel.KernelBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = [
        _ver1_record(10, 1, 0),
        _ver1_record(11, 77, abi.TAMALLOC_OOM_UNKILLABLE),
        _ver1_record(12, 78, abi.TAMALLOC_OOM_VICTIM),
        _ver1_record(13, 999, 0),  # a cgroup removed since the walk
        _ver1_record(14, 1, abi.TAMALLOC_OOM_ORIGIN | abi.TAMALLOC_OOM_UNKILLABLE),
        _ver1_record(15, 1, abi.TAMALLOC_OOM_EXITING),
    ]
    monkeypatch.setattr(kernel, "_get_mem_stats", FakeKernel(table, []))
    monkeypatch.setattr(kernel, "_cgroup_paths_by_id", lambda: {1: "/", 77: "/a", 78: "/a/b"})
    tasks = kbackend.oom_tasks()
    assert [
        (t.pid, t.cgroup, t.unkillable, t.oom_victim, t.oom_origin, t.exiting) for t in tasks
    ] == [
        (10, "/", False, False, False, False),
        (11, "/a", True, False, False, False),
        (12, "/a/b", False, True, False, False),
        (13, None, False, False, False, False),
        (14, "/", True, False, True, False),
        (15, "/", False, False, False, True),
    ]
    first = tasks[0]
    assert (first.name, first.rss_kb, first.swap_kb, first.pgtables_kb) == ("worker", 4000, 64, 40)
    assert (first.oom_score, first.oom_score_adj) == (700, 250)


def test_oom_tasks_ask_proc_when_the_kernel_fills_only_ver0(
    kbackend: kernel.KernelBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tamalloc.backends import procfs

    monkeypatch.setattr(kernel, "_get_mem_stats", FakeKernel([_ver1_record(10, 0, 0, 88)], []))
    sentinel = [object()]
    monkeypatch.setattr(procfs.ProcfsBackend, "oom_tasks", lambda self: sentinel)
    assert kbackend.oom_tasks() is sentinel


def test_cgroup_ids_are_the_directory_inodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tamalloc import cgroupfs

    root = tmp_path
    (root / "a" / "b").mkdir(parents=True)
    (root / "c").mkdir()
    (root / "memory.max").write_text("max\n")  # files are not cgroups
    monkeypatch.setattr(cgroupfs, "cgroup2_mount", lambda: ("/", str(root)))
    paths = kernel._cgroup_paths_by_id()
    assert paths == {
        root.stat().st_ino: "/",
        (root / "a").stat().st_ino: "/a",
        (root / "a" / "b").stat().st_ino: "/a/b",
        (root / "c").stat().st_ino: "/c",
    }
    # Inside a cgroup namespace the mount's root is a path below the hierarchy's.
    monkeypatch.setattr(cgroupfs, "cgroup2_mount", lambda: ("/ns", str(root)))
    assert kernel._cgroup_paths_by_id()[(root / "a").stat().st_ino] == "/ns/a"
