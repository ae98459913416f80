"""Package exceptions and the single place where errno values become them."""

from __future__ import annotations

import errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType
    from typing import NoReturn


class TamallocError(Exception):
    """Base class of the errors this package raises on purpose."""


class NoSuchProcess(TamallocError, ProcessLookupError):
    """The process does not exist (or exited while it was being read).

    Also a ProcessLookupError (errno ESRCH), what ``os.kill`` raises for a process
    that is gone: code that handles that handles this too.
    """

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        message = f"no such process: {pid}" if pid is not None else "no such process"
        super().__init__(errno.ESRCH, message)

    def __str__(self) -> str:
        return str(self.strerror)  # not OSError's "[Errno 3] ..."

    def __reduce__(self) -> tuple[type[NoSuchProcess], tuple[int | None]]:
        return type(self), (self.pid,)  # pickles (multiprocessing) as it was made


class AccessDenied(TamallocError):
    """The caller may not read this process's statistics."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        what = f"process {pid}" if pid is not None else "this process"
        super().__init__(f"access denied to {what} (try as root or as its owner)")


class NoSuchCgroup(TamallocError):
    """The cgroup asked for is not in the cgroup v2 hierarchy (or none is mounted)."""


class KernelUnavailable(TamallocError):
    """The kernel backend was requested but this kernel has no tamalloc syscalls."""

    def __init__(self, detail: str = "") -> None:
        msg = (
            "the kernel backend needs the patched kernel with the tamalloc syscalls"
            " (this kernel has none); use --backend procfs / backend='procfs'"
        )
        super().__init__(f"{msg}: {detail}" if detail else msg)


class BpfUnavailable(TamallocError):
    """The bpf backend was requested but cannot run here; the message says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"the bpf backend cannot run: {reason}; use --backend procfs / backend='procfs'"
        )


_NO_PROCESS = frozenset({errno.ESRCH, errno.ENOENT})
_DENIED = frozenset({errno.EACCES, errno.EPERM})
# A process that exits or hides from us during a scan of all processes is left out.
SKIPPED_IN_SCANS = _NO_PROCESS | _DENIED
_NO_MEMORY = frozenset({errno.ENOMEM, errno.EOVERFLOW, errno.EFBIG})


class translate_os_errors:
    """Turn ``OSError`` raised inside the block into this package's exceptions.

    ``pid`` names the process being read: only then do ENOENT/ESRCH mean "no such
    process" (a missing /proc/meminfo is a different problem and stays an OSError).
    ``what`` prefixes MemoryError/ValueError messages ("cannot allocate 1 GiB").
    """

    __slots__ = ("pid", "what")

    def __init__(self, pid: int | None = None, what: str | None = None) -> None:
        self.pid = pid
        self.what = what

    def __enter__(self) -> translate_os_errors:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or not isinstance(exc, OSError) or exc.errno is None:
            return
        if isinstance(exc, TamallocError):  # NoSuchProcess is an OSError too: as raised
            return
        raise exception_for_errno(exc.errno, pid=self.pid, what=self.what) from exc


def exception_for_errno(err: int, *, pid: int | None = None, what: str | None = None) -> Exception:
    """The package exception for ``err``; an ``OSError`` when none fits."""
    reason = os.strerror(err)
    prefix = f"{what}: " if what else ""
    if err in _NO_PROCESS and pid is not None:
        return NoSuchProcess(pid)
    if err in _DENIED:
        return AccessDenied(pid)
    if err in _NO_MEMORY:
        return MemoryError(f"{prefix}{reason}")
    if err == errno.EINVAL:
        return ValueError(f"{prefix}{reason}")
    if err == errno.ENOSYS:
        return KernelUnavailable(reason)
    return OSError(err, f"{prefix}{reason}")


def raise_errno(err: int, *, pid: int | None = None, what: str | None = None) -> NoReturn:
    """Raise for an errno taken from ``ctypes.get_errno()`` (syscalls via ctypes)."""
    raise exception_for_errno(err, pid=pid, what=what) from OSError(err, os.strerror(err))
