"""Per-process and total memory statistics, on whichever backend is chosen."""

from __future__ import annotations

import operator

from .backends import get_backend
from .models import MemStats, OomTask, TotalMemStats
from .process_visibility import Visibility, kernel_visibility, procfs_visibility

# PID_MAX_LIMIT on 64-bit kernels: no pid is ever larger (include/linux/threads.h).
PID_MAX_LIMIT = 1 << 22
_PID_MAX_PATH = "/proc/sys/kernel/pid_max"


def pid_max() -> int:
    """The kernel's largest pid (``kernel.pid_max``); 2**22 when it cannot be read."""
    try:
        with open(_PID_MAX_PATH, "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return PID_MAX_LIMIT


def check_pid(pid: int) -> int:
    """``pid`` if it is a possible process id (1..pid_max), else ValueError.

    Checked here, before any backend, because the kernel backend passes the pid as a C
    int: 2**32 + 1 would wrap to 1 and report init.
    """
    pid = operator.index(pid)  # rejects floats and strings, accepts numpy ints
    if pid <= 0:
        raise ValueError(f"invalid pid {pid}: must be a positive process id")
    limit = pid_max()
    if pid > limit:
        raise ValueError(f"invalid pid {pid}: above the kernel's pid_max ({limit})")
    return pid


def mem_stats(pid: int, *, backend: str | None = None) -> MemStats:
    """Memory statistics of process ``pid`` (a thread id gives its process).

    Raises NoSuchProcess or AccessDenied. A kernel thread gives zero memory fields.
    """
    return get_backend(backend).mem_stats(check_pid(pid))


def all_mem_stats(*, backend: str | None = None) -> list[MemStats]:
    """Statistics of every user process (kernel threads skipped), by increasing pid.

    Processes that exit during the scan are left out, and so are those the caller may
    not see: :func:`visibility` says whether any are, and how many.
    """
    return get_backend(backend).all_mem_stats()


def total_mem_stats(*, backend: str | None = None) -> TotalMemStats:
    """Sums over every user process the caller may see, plus the system's commit
    accounting; ``some_hidden`` says whether any were left out (not how many)."""
    chosen = get_backend(backend)
    total = chosen.total_mem_stats()
    if chosen.name == "procfs" and total.some_hidden is None:
        # /proc does not say whether it hides anything: False, or unknown under hidepid.
        total = total._replace(some_hidden=procfs_visibility().some_hidden)
    return total


def oom_tasks(*, backend: str | None = None) -> list[OomTask]:
    """Every user process the caller may see, as the OOM killer weighs it (rss, swap,
    page tables, oom_score_adj, cgroup v2 path, whether it can be chosen at all): the
    input of :func:`tamalloc.predict_oom`."""
    return get_backend(backend).oom_tasks()


def visibility(*, backend: str | None = None) -> Visibility:
    """Whether :func:`all_mem_stats` and :func:`total_mem_stats` see every process.

    On the kernel backend the kernel says whether it hides any process from the caller
    (one get_total_mem_stats call), never how many; on procfs only the ``hidepid``
    mount option of /proc can hide processes, and then whether any are is unknown
    (``some_hidden`` None).
    """
    chosen = get_backend(backend)
    if chosen.name == "kernel":
        return kernel_visibility(chosen.total_mem_stats().some_hidden)
    return procfs_visibility()
