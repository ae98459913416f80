import mmap
from typing import Self, TypeVar

_M = TypeVar("_M", bound="Mapping")

# Typed as an mmap.mmap, which it is not at run time: it has only its constructor,
# address, close, closed, len(), items, slices and the buffer protocol. APIs that type
# buffers as a union naming mmap, such as numpy.frombuffer before Python 3.12 (no
# collections.abc.Buffer), then accept a tamalloc.Buffer, as when it was an mmap.mmap.
class Mapping(mmap.mmap):
    def __new__(cls, length: int) -> Self: ...
    @property
    def address(self) -> int: ...

def adopt(cls: type[_M], address: int, length: int, /) -> _M: ...
