"""Lazily-zeroed buffers: anonymous memory that costs no RAM until first touched.

A ``Buffer`` is an ``mmap.mmap``, so the buffer protocol is the mmap module's own:
``memoryview(buf)`` has format ``B`` (indexing and slicing work as on ``bytearray``),
``numpy.frombuffer(buf)`` is zero-copy, and the interpreter counts the exported views,
so ``close()`` refuses with ``BufferError`` while one exists, exactly as ``mmap.mmap``
does: no view can outlive the mapping. (Python 3.11 classes cannot export buffers
themselves; the former ctypes-array Buffer exported ``<B`` and counted nothing, so a
numpy view of a closed buffer crashed the interpreter.)

The plain procfs case is a bare ``mmap(2)`` that the mmap module makes itself. The
tamalloc syscall and the 2 MiB-aligned huge mapping come from elsewhere: the mmap module
cannot map at a chosen address, so the Buffer *adopts* that mapping (see ``_adopt``).
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

# Each mincore byte says "resident" in its lowest bit; the other bits are reserved.
_LOW_BIT = bytes(i & 1 for i in range(256))
# Python sizes are Py_ssize_t; the kernel refuses far less (TASK_SIZE) anyway.
_MAX_LENGTH = sys.maxsize - _libc.HUGE_PAGE_SIZE
_CLOSED = "operation on a closed tamalloc buffer"
_PLACEHOLDER = _libc.PAGE_SIZE


class Buffer(mmap.mmap):
    """Memory from :func:`alloc`: an ``mmap.mmap`` of ``len(buf)`` bytes.

    Indexing gives ints, slicing gives ``bytes``; ``memoryview(buf)`` and
    ``numpy.frombuffer(buf, dtype=numpy.uint8)`` are zero-copy. ``close()`` unmaps the
    memory, and raises ``BufferError`` while views of it exist (delete them first);
    afterwards every method raises ValueError. Leaving a ``with`` block closes the
    buffer the same way; when the block ends by an exception, a buffer that still has
    views is left to be unmapped once the last view is gone, so that the BufferError
    does not hide the exception.
    """

    __slots__ = ("_address", "_mapped_length", "backend", "huge")
    _address: int
    _mapped_length: int
    huge: bool
    backend: str

    def __new__(cls, *args: object, **kwargs: object) -> Buffer:
        # alloc() builds buffers with mmap.mmap.__new__ and fills the slots; one made
        # here would have none of them.
        raise TypeError("tamalloc.Buffer cannot be created directly: use tamalloc.alloc()")

    @property
    def address(self) -> int:
        """Start address of the mapping (2 MiB aligned when ``huge``)."""
        if self.closed:
            raise ValueError(_CLOSED)
        return self._address

    def resident_bytes(self) -> int:
        """Bytes of this buffer in RAM now, in whole pages (mincore(2))."""
        if self.closed:
            raise ValueError(_CLOSED)
        pages = self._mapped_length // _libc.PAGE_SIZE
        vec = ctypes.create_string_buffer(pages)
        if _libc.mincore(self._address, self._mapped_length, vec) != 0:
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
        # The views hold a reference to this object and mmap's dealloc unmaps, so the
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
            f" at {self._address:#x} backend={self.backend}>"
        )


def _new_placeholder() -> Buffer:
    return mmap.mmap.__new__(Buffer, -1, _PLACEHOLDER, flags=_libc.MAP_PRIVATE_ANON_NORESERVE)


def _address_of(buf: mmap.mmap) -> int:
    # The temporary ctypes view is released at once (CPython frees it on return).
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def _find_layout() -> tuple[int, int]:
    """Byte offsets of ``data`` and ``size`` in CPython's mmap object (``Modules/
    mmapmodule.c``: the first two fields after the object header). Found by looking
    for a fresh placeholder's own address and length rather than assumed, so that a
    different header size (debug or free-threaded builds) is found too, and an
    unrecognised layout is an error instead of a wild write."""
    probe = _new_placeholder()
    try:
        address = _address_of(probe)
        words = (ctypes.c_ssize_t * 8).from_address(id(probe))
        hits = [
            i for i in range(1, 7) if words[i] == address and words[i + 1] == _PLACEHOLDER
        ]
    finally:
        mmap.mmap.close(probe)
    if len(hits) != 1:
        raise RuntimeError("tamalloc: unrecognised mmap object layout in this Python")
    word = ctypes.sizeof(ctypes.c_ssize_t)
    return hits[0] * word, (hits[0] + 1) * word


_layout: tuple[int, int] | None = None


def _adopt(address: int, length: int) -> Buffer:
    """A Buffer that owns the existing mapping at ``address`` (``length`` bytes).

    A placeholder mmap object is made, its own page unmapped, and its ``data`` and
    ``size`` pointed at the mapping; from then on the mmap module exports, counts
    views of and unmaps that mapping (munmap(data, size) on close and dealloc). No
    view of the placeholder exists yet, so nothing still points at its old page.
    """
    global _layout
    if _layout is None:
        _layout = _find_layout()
    data_offset, size_offset = _layout
    buf = _new_placeholder()
    old = _address_of(buf)
    ctypes.c_void_p.from_address(id(buf) + data_offset).value = address
    ctypes.c_ssize_t.from_address(id(buf) + size_offset).value = length
    _libc.munmap(old, _PLACEHOLDER)
    return buf


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
    if chosen.name == "procfs" and not huge:
        # What ProcfsBackend.map_anonymous does, made as a Buffer directly.
        try:
            buf = mmap.mmap.__new__(Buffer, -1, length, flags=_libc.MAP_PRIVATE_ANON_NORESERVE)
        except OSError as exc:
            raise_errno(exc.errno or errno.ENOMEM, what=f"cannot allocate {length} bytes")
        address = _address_of(buf)
    else:
        address, owner = chosen.map_anonymous(length, huge)
        if owner is not None:
            # Only procfs's plain mapping has an owner, and it is made above instead.
            owner.close()
            raise RuntimeError(f"backend {chosen.name} returned an mmap object to adopt")
        try:
            buf = _adopt(address, length)
        except BaseException:
            _libc.munmap(address, _libc.page_round_up(length))
            raise
    buf._address = address
    buf._mapped_length = _libc.page_round_up(length)
    buf.huge = huge
    buf.backend = chosen.name
    return buf
