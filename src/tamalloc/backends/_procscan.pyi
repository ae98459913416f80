from collections.abc import Iterable
from typing import TypeVar

_T = TypeVar("_T", bound=tuple[object, ...])

KEPT_BYTES_DEFAULT: int

def scan(
    pids: Iterable[int] | None,
    cls: type[_T],
    skip_errnos: Iterable[int],
    threads: int = 0,
    hold: bool = False,
    max_bytes: int = ...,
    /,
) -> list[_T]: ...
def release() -> bool: ...
def forget_in_child() -> None: ...
def kept_fds() -> list[int]: ...
def kept_bytes() -> int: ...
def syscall_errno(nr: int, /) -> int: ...
