"""The tamalloc system-call ABI, mirrored from ``include/uapi/linux/tamalloc.h``.

This is the only place that knows record layouts, and with :mod:`.abi_numbers` (whose
names it exports too) syscall numbers; ``docs/abi.md`` is the reference and the two
must match.  The ``struct`` formats are derived from the ctypes layouts so that bulk
decoding (``struct.iter_unpack``) cannot drift from them.
"""

from __future__ import annotations

import ctypes
import struct

from .abi_numbers import NR_GET_MEM_STATS as NR_GET_MEM_STATS
from .abi_numbers import NR_GET_TOTAL_MEM_STATS as NR_GET_TOTAL_MEM_STATS
from .abi_numbers import NR_TAMALLOC as NR_TAMALLOC
from .abi_numbers import SUPPORTED_MACHINES as SUPPORTED_MACHINES
from .abi_numbers import machine_supported as machine_supported

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

TAMALLOC_HUGE = 0x1

TAMALLOC_MEM_STATS_SIZE_VER0 = 88
TAMALLOC_MEM_STATS_SIZE_VER1 = 104  # + cgroup_id, oom_flags
TAMALLOC_TOTAL_MEM_STATS_SIZE_VER0 = 64
TAMALLOC_TOTAL_MEM_STATS_SIZE_VER1 = 72  # + some_hidden
# The kernel rejects record sizes above this.
TAMALLOC_MAX_RECORD_SIZE = 4096

COMM_LEN = 16

# oom_flags (VER1): what oom_badness() and the OOM killer make of the process.
TAMALLOC_OOM_UNKILLABLE = 0x1  # oom_badness() is LONG_MIN: never chosen
TAMALLOC_OOM_VICTIM = 0x2  # chosen by an OOM kill already, still exiting
TAMALLOC_OOM_ORIGIN = 0x4  # marked as the pressure's origin (swapoff): chosen first
TAMALLOC_OOM_EXITING = 0x8  # exiting as a whole: an OOM choosing it kills nobody new


class TamallocMemStats(ctypes.Structure):
    """``struct tamalloc_mem_stats`` (VER1; VER0 ends after pgtables_kb)."""

    _fields_ = (
        ("pid", ctypes.c_int32),
        ("oom_score", ctypes.c_int32),
        ("oom_score_adj", ctypes.c_int32),
        # Bytes of the record the kernel filled: min(its sizeof, the caller's size), as
        # sched_getattr(2) reports; 0 from kernels older than the field (was __reserved).
        ("size", ctypes.c_uint32),
        ("comm", ctypes.c_char * COMM_LEN),
        ("reserved_kb", ctypes.c_uint64),
        ("committed_kb", ctypes.c_uint64),
        ("anon_kb", ctypes.c_uint64),
        ("file_kb", ctypes.c_uint64),
        ("shmem_kb", ctypes.c_uint64),
        ("swap_kb", ctypes.c_uint64),
        ("pgtables_kb", ctypes.c_uint64),
        # VER1: the cgroup v2 id (the inode number of the cgroup's directory) and the
        # TAMALLOC_OOM_* flags; zero from a VER0 kernel, whose size field says 88.
        ("cgroup_id", ctypes.c_uint64),
        ("oom_flags", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    )


class TamallocTotalMemStats(ctypes.Structure):
    """``struct tamalloc_total_mem_stats`` (VER1; VER0 ends before some_hidden)."""

    _fields_ = (
        ("processes", ctypes.c_uint64),
        ("reserved_kb", ctypes.c_uint64),
        ("committed_kb", ctypes.c_uint64),
        ("swap_kb", ctypes.c_uint64),
        ("committed_as_kb", ctypes.c_uint64),
        ("commit_limit_kb", ctypes.c_uint64),
        ("mem_total_kb", ctypes.c_uint64),
        ("overcommit_memory", ctypes.c_uint32),
        # As in tamalloc_mem_stats: what the kernel filled; 0 from a VER0 kernel.
        ("size", ctypes.c_uint32),
        # Nonzero when at least one user process of the caller's pid namespace was
        # hidden from it (vm.tamalloc_stats_restrict); a flag, not a count, so that
        # it tells nothing of single processes. Valid only when size >= VER1.
        ("some_hidden", ctypes.c_uint64),
    )


_STRUCT_CODES: dict[type, str] = {
    ctypes.c_int32: "i",
    ctypes.c_uint32: "I",
    ctypes.c_int64: "q",
    ctypes.c_uint64: "Q",
}


def _struct_format(cls: type[ctypes.Structure]) -> str:
    codes = []
    for field in cls._fields_:
        ctype: Any = field[1]
        if issubclass(ctype, ctypes.Array) and ctype._type_ is ctypes.c_char:
            codes.append(f"{ctype._length_}s")
        else:
            codes.append(_STRUCT_CODES[ctype])
    return "=" + "".join(codes)


MEM_STATS_STRUCT = struct.Struct(_struct_format(TamallocMemStats))
TOTAL_MEM_STATS_STRUCT = struct.Struct(_struct_format(TamallocTotalMemStats))


def _check_layout() -> None:
    # A layout that disagrees with the header would silently corrupt every record, so
    # fail at import time; explicit raises survive ``python -O``, asserts would not.
    checks = {
        "sizeof(tamalloc_mem_stats)": (
            ctypes.sizeof(TamallocMemStats),
            TAMALLOC_MEM_STATS_SIZE_VER1,
        ),
        "offsetof(tamalloc_mem_stats, cgroup_id)": (
            TamallocMemStats.cgroup_id.offset,
            TAMALLOC_MEM_STATS_SIZE_VER0,
        ),
        "sizeof(tamalloc_total_mem_stats)": (
            ctypes.sizeof(TamallocTotalMemStats),
            TAMALLOC_TOTAL_MEM_STATS_SIZE_VER1,
        ),
        "struct format of tamalloc_mem_stats": (
            MEM_STATS_STRUCT.size,
            TAMALLOC_MEM_STATS_SIZE_VER1,
        ),
        "struct format of tamalloc_total_mem_stats": (
            TOTAL_MEM_STATS_STRUCT.size,
            TAMALLOC_TOTAL_MEM_STATS_SIZE_VER1,
        ),
        "offsetof(tamalloc_mem_stats, size)": (TamallocMemStats.size.offset, 12),
        "offsetof(tamalloc_total_mem_stats, size)": (TamallocTotalMemStats.size.offset, 60),
        "offsetof(tamalloc_total_mem_stats, some_hidden)": (
            TamallocTotalMemStats.some_hidden.offset,
            TAMALLOC_TOTAL_MEM_STATS_SIZE_VER0,
        ),
        "offsetof(tamalloc_mem_stats, comm)": (TamallocMemStats.comm.offset, 16),
        "offsetof(tamalloc_mem_stats, reserved_kb)": (TamallocMemStats.reserved_kb.offset, 32),
        "offsetof(tamalloc_total_mem_stats, overcommit_memory)": (
            TamallocTotalMemStats.overcommit_memory.offset,
            56,
        ),
    }
    for what, (got, want) in checks.items():
        if got != want:
            raise AssertionError(f"tamalloc ABI mismatch: {what} is {got}, header says {want}")


_check_layout()
