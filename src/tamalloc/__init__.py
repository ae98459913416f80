"""tamalloc: lazily-zeroed buffers and per-process/system memory statistics.

On a kernel with the tamalloc syscalls they are used directly; on any other Linux the
same API is served from /proc and mmap(2). See :func:`kernel_available`.
"""

from __future__ import annotations

from ._version import __version__

# `import tamalloc` loads nothing else: each name below is imported on first use, so
# that a program (or the CLI, a sub-package) pays only for what it calls. Importing
# them all at once costs about 2.5x a bare Python's start-up (bench/bench_startup.py).
# mypy and readers see them here; tests/test_facade.py checks that this block, __all__
# and _EXPORTS name the same things.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .backends import default_backend_name, get_backend, kernel_available
    from .buffer import Buffer, alloc
    from .errors import (
        AccessDenied,
        KernelUnavailable,
        NoSuchCgroup,
        NoSuchProcess,
        TamallocError,
    )
    from .forecast import DomainForecast, ForecastWindow, forecast_oom
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
    from .oom import OomCandidate, OomDomain, predict_oom
    from .process_visibility import Visibility
    from .sizes import format_bytes, parse_size
    from .stats import all_mem_stats, mem_stats, total_mem_stats, visibility
    from .system import cpu_sample, parse_system_stats, system_stats

# Public name -> the module that defines it.
_EXPORTS = {
    "AccessDenied": "errors",
    "Buffer": "buffer",
    "CpuStats": "models",
    "CpuTimes": "models",
    "DiskUsage": "models",
    "DomainForecast": "forecast",
    "ForecastWindow": "forecast",
    "KernelUnavailable": "errors",
    "MemStats": "models",
    "MemoryInfo": "models",
    "NoSuchCgroup": "errors",
    "NoSuchProcess": "errors",
    "OomCandidate": "oom",
    "OomDomain": "oom",
    "SwapInfo": "models",
    "SystemStats": "models",
    "TamallocError": "errors",
    "TotalMemStats": "models",
    "Visibility": "process_visibility",
    "all_mem_stats": "stats",
    "alloc": "buffer",
    "cpu_sample": "system",
    "default_backend_name": "backends",
    "forecast_oom": "forecast",
    "format_bytes": "sizes",
    "get_backend": "backends",
    "kernel_available": "backends",
    "mem_stats": "stats",
    "parse_size": "sizes",
    "parse_system_stats": "system",
    "predict_oom": "oom",
    "system_stats": "system",
    "total_mem_stats": "stats",
    "visibility": "stats",
}

__all__ = [
    "AccessDenied",
    "Buffer",
    "CpuStats",
    "CpuTimes",
    "DiskUsage",
    "DomainForecast",
    "ForecastWindow",
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
    "forecast_oom",
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


# The submodules `import tamalloc` used to import itself, which made them attributes
# of the package without an import of their own: they still are, on first use.
_SUBMODULES = frozenset({"backends", "errors", "models", "process_visibility", "sizes", "stats"})


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return __import__(f"{__name__}.{name}", fromlist=["__name__"])
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tamalloc' has no attribute {name!r}")
    value = getattr(__import__(f"{__name__}.{module}", fromlist=[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
