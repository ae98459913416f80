"""Whether the running kernel has the tamalloc syscalls: the first question of the
default backend's choice, hence of nearly every command. Apart from the kernel backend
so that asking loads neither it nor ctypes: the syscall goes through the C extension
``_procscan`` (which the procfs backend loads anyway), through ctypes where that is
not built."""

from __future__ import annotations

import errno
import functools

from ..abi_numbers import NR_GET_TOTAL_MEM_STATS, machine_supported


def probe() -> bool:
    """Whether the syscalls exist: get_total_mem_stats(NULL, 0, 0) is a harmless call
    that fails with EINVAL on the patched kernel and ENOSYS elsewhere."""
    if not machine_supported():
        return False
    try:
        from ._procscan import syscall_errno
    except ImportError:  # not built (no compiler at install time)
        from .._libc import syscall_errno
    # Anything but EINVAL (ENOSYS, or EPERM from a seccomp filter) means unusable.
    return syscall_errno(NR_GET_TOTAL_MEM_STATS) == errno.EINVAL


@functools.cache
def kernel_available() -> bool:
    """True when the running kernel has the tamalloc syscalls (probed once)."""
    return probe()
