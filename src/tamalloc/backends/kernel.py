"""The kernel backend: the tamalloc syscalls through ctypes (x86_64, patched kernel)."""

from __future__ import annotations

import ctypes
import errno

from .. import _libc, abi, cgroupfs
from ..errors import KernelUnavailable, raise_errno
from ..models import MemStats, OomTask, TotalMemStats, committed_pct
from .base import BackendName
from .probe import kernel_available

_c_long = ctypes.c_long
_c_uint = ctypes.c_uint
_c_int = ctypes.c_int
_c_ulong = ctypes.c_ulong

_MEM_STATS_SIZE = ctypes.sizeof(abi.TamallocMemStats)
_TOTAL_SIZE = ctypes.sizeof(abi.TamallocTotalMemStats)  # VER1: asks for some_hidden
_MAX_OVERFLOW_RETRIES = 8


def _from_records(view: memoryview) -> list[MemStats]:
    """Decode a buffer of records. No dataclass and no NamedTuple __new__ (the tuple is
    built directly): this loop is most of what all_mem_stats() costs, the syscall
    itself being far cheaper. committed_pct is the one shared definition, bound
    locally (a call costs ~30 ns a record more than inlining it, and keeps one formula)."""
    new = tuple.__new__
    pct = committed_pct
    return [
        new(
            MemStats,
            (
                pid,
                comm.split(b"\0", 1)[0].decode("utf-8", "replace"),
                reserved,
                committed,
                pct(committed, reserved),
                anon,
                file_,
                shmem,
                swap,
                oom_score,
                oom_adj,
            ),
        )
        for (
            pid,
            oom_score,
            oom_adj,
            _size,
            comm,
            reserved,
            committed,
            anon,
            file_,
            shmem,
            swap,
            _pte,
            _cgroup_id,
            _oom_flags,
            _pad,
        ) in abi.MEM_STATS_STRUCT.iter_unpack(view)
    ]


def _cgroup_paths_by_id() -> dict[int, str]:
    """Every cgroup of the v2 hierarchy by the id get_mem_stats() reports; empty when
    no cgroup v2 hierarchy is mounted."""
    mount = cgroupfs.cgroup2_mount()
    return {} if mount is None else {ino: path for _, path, ino in cgroupfs.walk_cgroups(mount)}


def _oom_tasks_from_records(view: memoryview, paths: dict[int, str]) -> list[OomTask]:
    tasks = []
    for (
        pid,
        oom_score,
        oom_adj,
        _size,
        comm,
        _reserved,
        committed,
        _anon,
        _file,
        _shmem,
        swap,
        pte,
        cgroup_id,
        oom_flags,
        _pad,
    ) in abi.MEM_STATS_STRUCT.iter_unpack(view):
        tasks.append(
            OomTask(
                pid=pid,
                name=comm.split(b"\0", 1)[0].decode("utf-8", "replace"),
                cgroup=paths.get(cgroup_id),
                rss_kb=committed,
                swap_kb=swap,
                pgtables_kb=pte,
                oom_score=oom_score,
                oom_score_adj=oom_adj,
                unkillable=bool(oom_flags & abi.TAMALLOC_OOM_UNKILLABLE),
                oom_victim=bool(oom_flags & abi.TAMALLOC_OOM_VICTIM),
                oom_origin=bool(oom_flags & abi.TAMALLOC_OOM_ORIGIN),
                exiting=bool(oom_flags & abi.TAMALLOC_OOM_EXITING),
            )
        )
    return tasks


def _get_mem_stats(pid: int, buf: ctypes.Array[ctypes.c_char] | None, count: int) -> int:
    """Raw get_mem_stats; returns its result or -errno."""
    ret = _libc.syscall(
        _c_long(abi.NR_GET_MEM_STATS),
        _c_int(pid),
        buf,
        _c_uint(_MEM_STATS_SIZE),
        _c_uint(count),
        _c_uint(0),
    )
    return ret if ret >= 0 else -ctypes.get_errno()


def _get_total_mem_stats(rec: abi.TamallocTotalMemStats) -> int:
    """Raw get_total_mem_stats into ``rec``; returns its result or -errno."""
    ret = _libc.syscall(
        _c_long(abi.NR_GET_TOTAL_MEM_STATS), ctypes.byref(rec), _c_uint(_TOTAL_SIZE), _c_uint(0)
    )
    return ret if ret >= 0 else -ctypes.get_errno()


def _total_from_record(rec: abi.TamallocTotalMemStats) -> TotalMemStats:
    # The kernel reports how much of the record it filled; a VER0 kernel (size 0, the
    # old __reserved) does not say whether any process is hidden, and zero-fills the
    # bytes beyond its own.
    known = rec.size >= abi.TAMALLOC_TOTAL_MEM_STATS_SIZE_VER1
    return TotalMemStats(
        processes=rec.processes,
        reserved_kb=rec.reserved_kb,
        committed_kb=rec.committed_kb,
        swap_kb=rec.swap_kb,
        committed_as_kb=rec.committed_as_kb,
        commit_limit_kb=rec.commit_limit_kb,
        mem_total_kb=rec.mem_total_kb,
        overcommit_memory=rec.overcommit_memory,
        some_hidden=bool(rec.some_hidden) if known else None,
    )


class KernelBackend:
    name: BackendName = "kernel"
    _capacity = 0  # how many records the last all_mem_stats() returned

    def __init__(self) -> None:
        if not kernel_available():
            raise KernelUnavailable()

    def mem_stats(self, pid: int) -> MemStats:
        buf = ctypes.create_string_buffer(_MEM_STATS_SIZE)
        ret = _get_mem_stats(pid, buf, 1)
        if ret < 0:
            raise_errno(-ret, pid=pid, what=f"get_mem_stats({pid})")
        return _from_records(memoryview(buf.raw))[0]

    def all_mem_stats(self) -> list[MemStats]:
        return _from_records(self._walk())

    def oom_tasks(self) -> list[OomTask]:
        view = self._walk()
        filled = abi.TamallocMemStats.size.offset
        if view and int.from_bytes(view[filled : filled + 4], "little") < _MEM_STATS_SIZE:
            # A VER0 kernel knows no cgroup id nor OOM flags: /proc has the one, and
            # the procfs backend infers the other. Imported here: 2 ms of start-up
            # that the kernel backend otherwise never needs.
            from .procfs import ProcfsBackend

            return ProcfsBackend().oom_tasks()
        return _oom_tasks_from_records(view, _cgroup_paths_by_id())

    def _walk(self) -> memoryview:
        """The records of every process, from as few get_mem_stats(0) calls as it
        takes to fit them all."""
        # The sizing call walks every process too: skip it while the last count
        # (with headroom) still fits.
        capacity = self._capacity
        if not capacity:
            count = _get_mem_stats(0, None, 0)
            if count < 0:
                raise_errno(-count, what="get_mem_stats(0)")
            capacity = count
        # Processes may appear between two calls: leave headroom, and grow on
        # EOVERFLOW (the kernel never truncates silently).
        capacity += max(16, capacity // 8)
        for _ in range(_MAX_OVERFLOW_RETRIES):
            buf = ctypes.create_string_buffer(capacity * _MEM_STATS_SIZE)
            written = _get_mem_stats(0, buf, capacity)
            if written >= 0:
                self._capacity = written
                return memoryview(buf).cast("B")[: written * _MEM_STATS_SIZE]
            if -written != errno.EOVERFLOW:
                raise_errno(-written, what="get_mem_stats(0)")
            capacity *= 2
        raise_errno(errno.EOVERFLOW, what="get_mem_stats(0): process count kept growing")

    def total_mem_stats(self) -> TotalMemStats:
        rec = abi.TamallocTotalMemStats()
        ret = _get_total_mem_stats(rec)
        if ret < 0:
            raise_errno(-ret, what="get_total_mem_stats")
        return _total_from_record(rec)

    def map_anonymous(self, size: int, huge: bool) -> tuple[int, None]:
        flags = abi.TAMALLOC_HUGE if huge else 0
        ret = _libc.syscall(_c_long(abi.NR_TAMALLOC), _c_ulong(size), _c_ulong(flags))
        if ret == -1:
            raise_errno(ctypes.get_errno(), what=f"cannot allocate {size} bytes")
        return int(ret), None
