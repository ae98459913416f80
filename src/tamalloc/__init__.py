"""tamalloc: lazily-zeroed buffers and per-process/system memory statistics.

On a kernel with the tamalloc syscalls they are used directly; on any other Linux the
same API is served from /proc and mmap(2). See :func:`kernel_available`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .backends import default_backend_name, get_backend, kernel_available
from .errors import (
    AccessDenied,
    KernelUnavailable,
    NoSuchCgroup,
    NoSuchProcess,
    TamallocError,
)
from .models import (
    CpuStats,
    CpuTimes,
    DiskUsage,
    MemoryInfo,
    MemStats,
    SwapInfo,
    SystemStats,
    TotalMemStats,
)
from .process_visibility import Visibility
from .sizes import format_bytes, parse_size
from .stats import all_mem_stats, mem_stats, total_mem_stats, visibility

if TYPE_CHECKING:
    from .buffer import Buffer, alloc
    from .oom import OomCandidate, OomDomain, predict_oom
    from .system import cpu_sample, parse_system_stats, system_stats

__all__ = [
    "AccessDenied",
    "Buffer",
    "CpuStats",
    "CpuTimes",
    "DiskUsage",
    "KernelUnavailable",
    "MemStats",
    "MemoryInfo",
    "NoSuchCgroup",
    "NoSuchProcess",
    "OomCandidate",
    "OomDomain",
    "SwapInfo",
    "SystemStats",
    "TamallocError",
    "TotalMemStats",
    "Visibility",
    "__version__",
    "all_mem_stats",
    "alloc",
    "cpu_sample",
    "default_backend_name",
    "format_bytes",
    "get_backend",
    "kernel_available",
    "mem_stats",
    "parse_size",
    "parse_system_stats",
    "predict_oom",
    "system_stats",
    "total_mem_stats",
    "visibility",
]

# Loaded on first use: ctypes and libc are only needed to allocate, and `tamalloc
# stats` should not pay for them.
_LAZY = {
    "Buffer": "buffer",
    "alloc": "buffer",
    "OomCandidate": "oom",
    "OomDomain": "oom",
    "cpu_sample": "system",
    "predict_oom": "oom",
    "parse_system_stats": "system",
    "system_stats": "system",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tamalloc' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
