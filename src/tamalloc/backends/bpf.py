"""The bpf backend: a BPF task iterator (Linux 5.8+) reads every process in one pass.

``_bpf/memstats.bpf.c``, compiled by clang at install, is a CO-RE program: libbpf
relocates its field accesses against the running kernel's BTF, so one object runs on
kernels whose structures differ. ``_bpfiter`` (C, libbpf) loads and attaches it once per
process and returns a pass's records as bytes; they are decoded here into the records
the other backends return. What the kernel keeps in pages is converted to kB with this
machine's page size, and the OOM score is computed as ``proc_oom_score()`` does
(:mod:`tamalloc.oom_score`) from the same inputs the kernel weighs.

Loading costs tens of milliseconds (libbpf parses the kernel's BTF), which a one-shot
command would pay every time: the backend is used only when asked for (``--backend
bpf``, ``$TAMALLOC_BACKEND``, ``backend="bpf"``), never chosen by default yet.
"""

from __future__ import annotations

import errno
import functools
import mmap
import os
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BpfUnavailable
from ..models import MemStats, OomTask, TotalMemStats, committed_pct
from ..oom_score import OOM_SCORE_ADJ_MIN, badness, proc_score
from ..system import read_meminfo, read_overcommit_memory
from .base import BackendName

if TYPE_CHECKING:
    from .procfs import ProcfsBackend

OBJECT = Path(__file__).with_name("_bpf") / "memstats.bpf.o"
BTF = "/sys/kernel/btf/vmlinux"
MIN_KERNEL = (5, 8)  # the task iterator

# struct tam_bpf_rec of _bpf/memstats.h: pid, flags, oom_score_adj, pad, comm[16],
# total_vm, anon, file, shmem, swap (pages), pgtables (bytes), cgroup_id.
RECORD = struct.Struct("<IIiI16s7Q")
THREAD = 0x01
NO_MM = 0x02
OOM_SKIP = 0x04
OOM_ORIGIN = 0x08
VFORK = 0x10
EXITING = 0x20
OOM_VICTIM = 0x40
GLOBAL_INIT = 0x80
# From the thread whose mm is read, for a zombie leader: the rest is the leader's.
_MM_FLAGS = OOM_SKIP | VFORK

_PAGE = mmap.PAGESIZE
_PAGE_KB = _PAGE // 1024
_Record = tuple[int, int, int, int, bytes, int, int, int, int, int, int, int]


def _kernel_version(release: str) -> tuple[int, int]:
    found = re.match(r"(\d+)\.(\d+)", release)
    return (int(found[1]), int(found[2])) if found else (0, 0)


@functools.cache
def unavailable_reason() -> str | None:
    """Why the backend cannot run here, or None when it can (then the program is
    loaded: the first call pays for the load, once per process)."""
    try:
        from . import _bpfiter
    except ImportError:
        return (
            "its loader tamalloc.backends._bpfiter was not built at install"
            " (needs libbpf-dev and a C compiler)"
        )
    if not OBJECT.is_file():
        return f"{OBJECT.name} was not built at install (needs clang)"
    release = os.uname().release
    if _kernel_version(release) < MIN_KERNEL:
        return f"kernel {release} is older than 5.8 (no BPF task iterator)"
    if not os.path.exists(BTF):
        return f"the kernel has no BTF ({BTF}: CONFIG_DEBUG_INFO_BTF)"
    try:
        _bpfiter.load(str(OBJECT))
    except OSError as err:
        if err.errno in (errno.EPERM, errno.EACCES):
            return (
                "bpf() was denied: it needs root or CAP_BPF + CAP_PERFMON, and"
                " kernel.unprivileged_bpf_disabled or lockdown may forbid it"
            )
        return str(err.strerror or err)
    return None


def _read_pass() -> bytes:
    from . import _bpfiter  # loaded by unavailable_reason()

    return _bpfiter.read()


def _processes(data: bytes) -> list[_Record]:
    """One record per process: a leader without mm (a zombie leader) takes its memory
    from the first live thread the pass showed, and is left out without one (a zombie
    or a process that finished exiting during the pass, as /proc shows no memory)."""
    records: list[_Record] = list(RECORD.iter_unpack(data))
    if not any(rec[1] & (THREAD | NO_MM) for rec in records):
        return records
    stand_ins: dict[int, _Record] = {}
    for rec in records:
        if rec[1] & THREAD:
            stand_ins.setdefault(rec[0], rec)
    result = []
    for rec in records:
        flags = rec[1]
        if flags & THREAD:
            continue
        if flags & NO_MM:
            live = stand_ins.get(rec[0])
            if live is None:
                continue
            # A zombie leader's PF_EXITING says nothing of the threads still running.
            flags = (flags & ~(NO_MM | _MM_FLAGS | EXITING)) | (live[1] & _MM_FLAGS)
            rec = (rec[0], flags, rec[2], rec[3], rec[4], *live[5:11], rec[11])
        result.append(rec)
    return result


def _name(comm: bytes) -> str:
    return comm.split(b"\0", 1)[0].decode("utf-8", "replace")


def _total_pages() -> int:
    """totalram_pages() + total_swap_pages, as proc_oom_score() weighs against."""
    meminfo = read_meminfo()
    return (meminfo.get("MemTotal", 0) + meminfo.get("SwapTotal", 0)) // max(_PAGE_KB, 1)


def _unkillable(flags: int, adj: int) -> bool:
    """oom_badness()'s LONG_MIN: the global init, OOM_SCORE_ADJ_MIN, MMF_OOM_SKIP (the
    reaper is done), a vfork child on its parent's mm."""
    return adj == OOM_SCORE_ADJ_MIN or bool(flags & (GLOBAL_INIT | OOM_SKIP | VFORK))


def _score(rec: _Record, total_pages: int) -> int:
    _pid, flags, adj, _pad, _comm, _vm, anon, file_, shmem, swap, pgtables, _cg = rec
    if _unkillable(flags, adj):
        return proc_score(None, total_pages)
    return proc_score(
        badness(anon + file_ + shmem, swap, pgtables // _PAGE, adj, total_pages), total_pages
    )


def _mem_stats(records: list[_Record], total_pages: int) -> list[MemStats]:
    """The records as MemStats. The tuple is built directly (no NamedTuple __new__, as
    the kernel backend's decoding) and the shared definitions bound locally: this loop
    is most of what a pass costs, the iterator's read() a third of it."""
    new = tuple.__new__
    pct = committed_pct
    score = _score
    kb = _PAGE_KB
    result = []
    for rec in records:
        pid, _flags, adj, _pad, comm, total_vm, anon, file_, shmem, swap, _pt, _cg = rec
        reserved = total_vm * kb
        committed = (anon + file_ + shmem) * kb
        result.append(
            new(
                MemStats,
                (
                    pid,
                    comm.split(b"\0", 1)[0].decode("utf-8", "replace"),
                    reserved,
                    committed,
                    pct(committed, reserved),
                    anon * kb,
                    file_ * kb,
                    shmem * kb,
                    swap * kb,
                    score(rec, total_pages),
                    adj,
                ),
            )
        )
    return result


class BpfBackend:
    name: BackendName = "bpf"

    def __init__(self) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise BpfUnavailable(reason)

    def _records(self) -> list[_Record]:
        return _processes(_read_pass())

    def all_mem_stats(self) -> list[MemStats]:
        return _mem_stats(self._records(), _total_pages())

    def mem_stats(self, pid: int) -> MemStats:
        """From a pass; a pid the pass does not show as a process with memory (a thread
        id, a kernel thread, a zombie, no such process) is answered by /proc, which says
        which of these it is."""
        for rec in self._records():
            if rec[0] == pid:
                return _mem_stats([rec], _total_pages())[0]
        return self._procfs().mem_stats(pid)

    def total_mem_stats(self) -> TotalMemStats:
        records = self._records()
        meminfo = read_meminfo()
        return TotalMemStats(
            processes=len(records),
            reserved_kb=sum(rec[5] for rec in records) * _PAGE_KB,
            committed_kb=sum(rec[6] + rec[7] + rec[8] for rec in records) * _PAGE_KB,
            swap_kb=sum(rec[9] for rec in records) * _PAGE_KB,
            committed_as_kb=meminfo.get("Committed_AS", 0),
            commit_limit_kb=meminfo.get("CommitLimit", 0),
            mem_total_kb=meminfo.get("MemTotal", 0),
            overcommit_memory=read_overcommit_memory(),
        )

    def oom_tasks(self) -> list[OomTask]:
        from .kernel import _cgroup_paths_by_id  # the kernel backend's: ids the same

        records = self._records()
        total_pages = _total_pages()
        paths = _cgroup_paths_by_id()
        kb = _PAGE_KB
        return [
            OomTask(
                pid=rec[0],
                name=_name(rec[4]),
                cgroup=paths.get(rec[11]),
                rss_kb=(rec[6] + rec[7] + rec[8]) * kb,
                swap_kb=rec[9] * kb,
                pgtables_kb=rec[10] >> 10,
                oom_score=_score(rec, total_pages),
                oom_score_adj=rec[2],
                unkillable=_unkillable(rec[1], rec[2]),
                oom_victim=bool(rec[1] & OOM_VICTIM),
                oom_origin=bool(rec[1] & OOM_ORIGIN),
                # The leader exiting with its mm (task_will_free_mem()); a coredump
                # or another process sharing the mm, which would make the kernel
                # kill after all, are not in the record.
                exiting=bool(rec[1] & EXITING) and not rec[1] & OOM_SKIP,
            )
            for rec in records
        ]

    def map_anonymous(self, size: int, huge: bool) -> tuple[int, mmap.mmap | None]:
        """As the procfs backend: a stock kernel has no tamalloc syscall."""
        return self._procfs().map_anonymous(size, huge)

    @staticmethod
    def _procfs() -> ProcfsBackend:
        return _procfs_instance()


@functools.cache
def _procfs_instance() -> ProcfsBackend:
    from .procfs import ProcfsBackend

    return ProcfsBackend()
