"""Per-process and total memory statistics, on whichever backend is chosen."""

from __future__ import annotations

import operator

from .backends import get_backend
from .models import MemStats, TotalMemStats


def _check_pid(pid: int) -> int:
    pid = operator.index(pid)  # rejects floats and strings, accepts numpy ints
    if pid <= 0:
        raise ValueError(f"invalid pid {pid}: must be a positive process id")
    return pid


def mem_stats(pid: int, *, backend: str | None = None) -> MemStats:
    """Memory statistics of process ``pid`` (a thread id gives its process).

    Raises NoSuchProcess or AccessDenied. A kernel thread gives zero memory fields.
    """
    return get_backend(backend).mem_stats(_check_pid(pid))


def all_mem_stats(*, backend: str | None = None) -> list[MemStats]:
    """Statistics of every user process (kernel threads skipped), by increasing pid.

    Processes that exit during the scan are left out.
    """
    return get_backend(backend).all_mem_stats()


def total_mem_stats(*, backend: str | None = None) -> TotalMemStats:
    """Sums over every user process plus the system's commit accounting."""
    return get_backend(backend).total_mem_stats()
