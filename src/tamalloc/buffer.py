"""Lazily-zeroed buffers: anonymous memory that costs no RAM until first touched.

A ``Buffer`` is a ctypes ``c_ubyte`` array placed over the mapping, so the buffer
protocol comes from ctypes itself: ``memoryview(buf)`` and ``numpy.frombuffer(buf)`` see
the mapping without copying. (Python 3.11 classes cannot export buffers themselves.)
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import sys
from typing import TYPE_CHECKING, Any, SupportsIndex

from . import _libc
from .backends import get_backend
from .errors import raise_errno
from .sizes import format_bytes, parse_size

_ArrayType: Any = type(ctypes.Array)
# ctypes.Array's own item access, which the Buffer methods wrap with the closed check.
_array_getitem: Any = ctypes.Array.__getitem__
_array_setitem: Any = ctypes.Array.__setitem__
# Each mincore byte says "resident" in its lowest bit; the other bits are reserved.
_LOW_BIT = bytes(i & 1 for i in range(256))
_CLOSED = "operation on a closed tamalloc buffer"
_SLOTS = ("_address", "_mapped_length", "_closed", "_owner", "huge", "backend")
# Python sizes are Py_ssize_t; the kernel refuses far less (TASK_SIZE) anyway.
_MAX_LENGTH = sys.maxsize - _libc.HUGE_PAGE_SIZE


class Buffer:
    """Memory from :func:`alloc`; also a ``ctypes.c_ubyte`` array of ``len(buf)``.

    Indexing gives ints, slicing gives ``bytes``; ``memoryview(buf)`` and
    ``numpy.frombuffer(buf, dtype=numpy.uint8)`` are zero-copy. ``close()`` unmaps the
    memory: views taken before it must not be used afterwards (ctypes cannot track
    them), every Buffer method then raises ValueError.
    """

    # The concrete per-length types hold these in slots (see _buffer_type); a mixin
    # next to ctypes.Array cannot have non-empty slots of its own.
    if TYPE_CHECKING:
        __slots__ = _SLOTS
    else:
        __slots__ = ()
    _address: int
    _mapped_length: int
    _closed: bool
    _owner: mmap.mmap | None  # the mapping's owner when the backend made one
    huge: bool
    backend: str

    # ctypes.Array supplies the storage; these wrap it with the closed check.
    def __getitem__(self, key: SupportsIndex | slice) -> Any:
        if self._closed:
            raise ValueError(_CLOSED)
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return ctypes.string_at(self._address + start, max(0, stop - start))
            return memoryview(self)[key].tobytes()  # type: ignore[arg-type]
        return _array_getitem(self, key)

    def __setitem__(self, key: SupportsIndex | slice, value: Any) -> None:
        if self._closed:
            raise ValueError(_CLOSED)
        if isinstance(key, slice):
            memoryview(self).cast("B")[key] = value  # type: ignore[arg-type]
            return
        if not 0 <= value <= 255:  # ctypes would silently wrap
            raise ValueError("byte must be in range(0, 256)")
        _array_setitem(self, key, value)

    def __len__(self) -> int:
        if self._closed:
            raise ValueError(_CLOSED)
        return self._length_  # type: ignore[attr-defined,no-any-return]

    @property
    def address(self) -> int:
        """Start address of the mapping (2 MiB aligned when ``huge``)."""
        if self._closed:
            raise ValueError(_CLOSED)
        return self._address

    @property
    def closed(self) -> bool:
        return self._closed

    def resident_bytes(self) -> int:
        """Bytes of this buffer in RAM now, in whole pages (mincore(2))."""
        if self._closed:
            raise ValueError(_CLOSED)
        pages = self._mapped_length // _libc.PAGE_SIZE
        vec = ctypes.create_string_buffer(pages)
        if _libc.mincore(self._address, self._mapped_length, vec) != 0:
            raise_errno(ctypes.get_errno(), what="mincore")
        return vec.raw.translate(_LOW_BIT).count(1) * _libc.PAGE_SIZE

    def close(self) -> None:
        """Unmap the memory (munmap); closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        if self._owner is not None:
            self._owner.close()
            self._owner = None
        elif _libc.munmap(self._address, self._mapped_length) != 0:
            raise_errno(ctypes.get_errno(), what="munmap")

    def __enter__(self) -> Buffer:
        if self._closed:
            raise ValueError(_CLOSED)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Plain try/except, not contextlib.suppress: at interpreter shutdown module
        # globals may already be gone, and there is nothing useful to report anyway.
        try:
            if not self._closed:
                self.close()
        except Exception:
            pass

    def __reduce__(self) -> Any:
        raise TypeError("a tamalloc buffer cannot be pickled (it is a memory mapping)")

    def __repr__(self) -> str:
        if self._closed:
            return "<tamalloc.Buffer closed>"
        huge = " huge" if self.huge else ""
        return (
            f"<tamalloc.Buffer {format_bytes(self._length_)}{huge}"  # type: ignore[attr-defined]
            f" at {self._address:#x} backend={self.backend}>"
        )


@functools.lru_cache(maxsize=64)
def _buffer_type(length: int) -> type[Buffer]:
    # Built through the ctypes metaclass directly: ``c_ubyte * n`` would also land in
    # ctypes' own unbounded type cache, one entry per distinct size ever allocated.
    buffer_type: type[Buffer] = _ArrayType(
        "Buffer",
        (Buffer, ctypes.Array),
        {
            "_type_": ctypes.c_ubyte,
            "_length_": length,
            # Slots, not a __dict__: cheaper to create, and alloc() is meant to cost
            # little more than the mmap(2) itself.
            "__slots__": _SLOTS,
            "__module__": __name__,
            "__qualname__": "Buffer",
        },
    )
    return buffer_type


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
    address, owner = chosen.map_anonymous(length, huge)
    mapped = _libc.page_round_up(length)
    try:
        buf: Buffer = _buffer_type(length).from_address(address)  # type: ignore[attr-defined]
    except BaseException:
        if owner is not None:
            owner.close()
        else:
            _libc.munmap(address, mapped)
        raise
    buf._address = address
    buf._mapped_length = mapped
    buf._closed = False
    buf._owner = owner
    buf.huge = huge
    buf.backend = chosen.name
    return buf
