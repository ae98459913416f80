"""ctypes prototypes for the few libc calls the package makes."""

from __future__ import annotations

import ctypes
import mmap as _mmap
import os

# The symbols of the running process: glibc or musl, whichever Python is linked to.
libc = ctypes.CDLL(None, use_errno=True)

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
HUGE_PAGE_SIZE = 2 << 20

PROT_READ_WRITE = _mmap.PROT_READ | _mmap.PROT_WRITE
# MAP_NORESERVE is 0x4000 on every Linux architecture; the mmap module lacks it on 3.11.
MAP_NORESERVE = getattr(_mmap, "MAP_NORESERVE", 0x4000)
MAP_PRIVATE_ANON_NORESERVE = _mmap.MAP_PRIVATE | _mmap.MAP_ANONYMOUS | MAP_NORESERVE
MADV_HUGEPAGE = getattr(_mmap, "MADV_HUGEPAGE", 14)
MAP_FAILED = ctypes.c_void_p(-1).value
# Linux 4.17; an older kernel takes the address as a hint and maps elsewhere.
MAP_FIXED_NOREPLACE = 0x100000
MREMAP_MAYMOVE_FIXED = 1 | 2  # MREMAP_MAYMOVE | MREMAP_FIXED

syscall = libc.syscall
syscall.restype = ctypes.c_long

mmap = libc.mmap
mmap.restype = ctypes.c_void_p
mmap.argtypes = (
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
)

munmap = libc.munmap
munmap.restype = ctypes.c_int
munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)

mremap = libc.mremap
mremap.restype = ctypes.c_void_p
mremap.argtypes = (
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_void_p,
)

madvise = libc.madvise
madvise.restype = ctypes.c_int
madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)

mincore = libc.mincore
mincore.restype = ctypes.c_int
mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)


def page_round_up(size: int, align: int = PAGE_SIZE) -> int:
    return (size + align - 1) & ~(align - 1)


def syscall_errno(nr: int, /) -> int:
    """The errno of syscall(nr, NULL, 0, 0), 0 if it succeeded: the kernel probe where
    the C extension's ``_procscan.syscall_errno`` is not built."""
    ret = syscall(ctypes.c_long(nr), None, ctypes.c_uint(0), ctypes.c_uint(0))
    return ctypes.get_errno() if ret == -1 else 0
