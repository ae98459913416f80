"""Lazily-zeroed buffers: anonymous memory that costs no RAM until first touched.

A ``Buffer`` exports the buffer protocol with format ``B``: ``memoryview(buf)`` indexes
and slices as a ``bytearray`` does, ``numpy.frombuffer(buf)`` is zero-copy, and the
exported views are counted, so ``close()`` refuses with ``BufferError`` while one
exists, as ``mmap.mmap`` does: no view can outlive the memory.

Its base is the C type ``tamalloc._mapping.Mapping`` (``_mapping.c``), which maps a
plain buffer's memory itself and takes over a mapping the backend made (the tamalloc
system call's, procfs's 2 MiB-aligned one for ``huge``) as its own. Installed without a
C compiler, the base is ``mmap.mmap``: the mmap module can neither choose an address
nor own another mapping, so the backend's mapping is moved onto the mmap object's with
``mremap(MREMAP_FIXED)`` (keeping its flags, not its alignment: a huge buffer there is
advised for transparent huge pages but not 2 MiB aligned).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import sys
from typing import NoReturn

from . import _libc
from .backends import get_backend
from .errors import raise_errno
from .sizes import format_bytes, parse_size

# Whether buffers are the C type (2 MiB aligned when huge) or mmap.mmap objects.
C_MAPPING = True
try:
    from ._mapping import Mapping as _Base
    from ._mapping import adopt
except ImportError:  # installed without a C compiler: see the module docstring
    _Base = mmap.mmap  # type: ignore[assignment,misc]
    C_MAPPING = False
# Each mincore byte says "resident" in its lowest bit; the other bits are reserved.
_LOW_BIT = bytes(i & 1 for i in range(256))
# Python sizes are Py_ssize_t; the kernel refuses far less (TASK_SIZE) anyway.
_MAX_LENGTH = sys.maxsize - _libc.HUGE_PAGE_SIZE
_CLOSED = "operation on a closed tamalloc buffer"


class Buffer(_Base):
    """Memory from :func:`alloc`: ``len(buf)`` bytes that export the buffer protocol.

    Indexing gives ints, slicing gives ``bytes``; ``memoryview(buf)`` and
    ``numpy.frombuffer(buf, dtype=numpy.uint8)`` are zero-copy. ``close()`` unmaps the
    memory, and raises ``BufferError`` while views of it exist (delete them first);
    afterwards every method raises ValueError. Leaving a ``with`` block closes the
    buffer the same way; when the block ends by an exception, a buffer that still has
    views is left to be unmapped once the last view is gone, so that the BufferError
    does not hide the exception.
    """

    __slots__ = ("_address", "backend", "huge")
    _address: int  # without the C type only: mmap.mmap has no address
    huge: bool
    backend: str

    def __new__(cls, *args: object, **kwargs: object) -> Buffer:
        # alloc() builds buffers with the base's __new__ and fills the slots; one made
        # here would have none of them.
        raise TypeError("tamalloc.Buffer cannot be created directly: use tamalloc.alloc()")

    if not C_MAPPING:

        @property
        def address(self) -> int:
            """Start address of the mapping (without the C type, 2 MiB aligned when
            ``huge`` only where the kernel aligned the mmap module's mapping)."""
            if self.closed:
                raise ValueError(_CLOSED)
            return self._address

    def resident_bytes(self) -> int:
        """Bytes of this buffer in RAM now, in whole pages (mincore(2))."""
        address, mapped = self.address, _libc.page_round_up(len(self))
        vec = ctypes.create_string_buffer(mapped // _libc.PAGE_SIZE)
        if _libc.mincore(address, mapped, vec) != 0:
            raise_errno(ctypes.get_errno(), what="mincore")
        return vec.raw.translate(_LOW_BIT).count(1) * _libc.PAGE_SIZE

    def close(self) -> None:
        """Unmap the memory; closing twice is harmless. Raises BufferError while a
        view (memoryview, numpy array) of the buffer exists."""
        try:
            super().close()
        except BufferError:
            raise BufferError(
                "cannot close a tamalloc buffer while views of it exist (numpy arrays,"
                " memoryviews): delete them first"
            ) from None

    def __enter__(self) -> Buffer:
        if self.closed:
            raise ValueError(_CLOSED)
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc is None:
            self.close()
            return
        # The views hold a reference to this object and its dealloc unmaps, so the
        # memory goes with the last view; the block's own exception matters more.
        with contextlib.suppress(BufferError):
            self.close()

    def resize(self, newsize: int) -> NoReturn:
        raise TypeError("a tamalloc buffer cannot be resized")

    def __reduce__(self) -> NoReturn:
        raise TypeError("a tamalloc buffer cannot be pickled (it is a memory mapping)")

    def __repr__(self) -> str:
        if self.closed:
            return "<tamalloc.Buffer closed>"
        huge = " huge" if self.huge else ""
        return (
            f"<tamalloc.Buffer {format_bytes(len(self))}{huge}"
            f" at {self.address:#x} backend={self.backend}>"
        )


def _new(length: int) -> Buffer:
    """A Buffer of ``length`` bytes of its own memory; slots unset."""
    if C_MAPPING:
        return _Base.__new__(Buffer, length)
    flags = _libc.MAP_PRIVATE_ANON_NORESERVE
    buf = mmap.mmap.__new__(Buffer, -1, length, flags=flags)
    # The temporary ctypes view is released at once (CPython frees it on return).
    buf._address = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    return buf


def _take(address: int, length: int) -> Buffer:
    """A Buffer that owns the mapping at ``address``; the caller keeps it on an error."""
    if C_MAPPING:
        return adopt(Buffer, address, length)
    # mmap.mmap: an object of its own, onto whose pages the mapping is moved. mremap
    # unmaps the target before it looks at the source, so when the move fails the
    # target is mapped again where it was before the object is closed.
    buf = _new(length)
    target, mapped = buf._address, _libc.page_round_up(length)
    if _libc.mremap(address, mapped, mapped, _libc.MREMAP_MAYMOVE_FIXED, target) == target:
        return buf
    err = ctypes.get_errno()
    again = _libc.mmap(
        target,
        mapped,
        _libc.PROT_READ_WRITE,
        _libc.MAP_PRIVATE_ANON_NORESERVE | _libc.MAP_FIXED_NOREPLACE,
        -1,
        0,
    )
    if again not in (target, _libc.MAP_FAILED):
        _libc.munmap(again, mapped)  # a kernel without NOREPLACE took it as a hint
    buf.close()
    raise OSError(err, f"mremap: {errno.errorcode.get(err, err)}")


def alloc(size: int | str, *, huge: bool = False, backend: str | None = None) -> Buffer:
    """Allocate ``size`` bytes ("10M", "1GiB" or an int) of lazily-zeroed memory.

    No RAM is used until a page is first touched, and every page reads as zero then.
    ``huge`` asks for a 2 MiB-aligned mapping advised for transparent huge pages.
    Raises ValueError for a size ≤ 0 or unparsable, MemoryError when the address space
    or a limit (RLIMIT_AS, memcg, overcommit policy) refuses it.
    """
    length = parse_size(size)
    if length > _MAX_LENGTH:
        raise MemoryError(f"cannot allocate {length} bytes: larger than the address space")
    chosen = get_backend(backend)
    if chosen.name in ("procfs", "bpf") and not huge:
        # What ProcfsBackend.map_anonymous does (bpf's is procfs's), made as a Buffer
        # directly.
        try:
            buf = _new(length)
        except OSError as exc:  # not a `with` block: this path is timed in µs
            raise_errno(exc.errno or errno.ENOMEM, what=f"cannot allocate {length} bytes")
    else:
        address, owner = chosen.map_anonymous(length, huge)
        if owner is not None:
            # Only procfs's (and bpf's) plain mapping has an owner, made above instead.
            owner.close()
            raise RuntimeError(f"backend {chosen.name} returned an mmap object to take over")
        try:
            buf = _take(address, length)
        except BaseException as exc:
            _libc.munmap(address, _libc.page_round_up(length))
            if isinstance(exc, OSError):
                raise_errno(exc.errno or errno.ENOMEM, what=f"cannot allocate {length} bytes")
            raise
    buf.huge = huge
    buf.backend = chosen.name
    return buf
