from collections.abc import Iterable, Sequence
from typing import TypeVar

_T = TypeVar("_T", bound=tuple[object, ...])

def scan(
    pids: Sequence[int] | None,
    cls: type[_T],
    skip_errnos: Iterable[int],
    threads: int = 0,
    hold: bool = False,
    /,
) -> list[_T]: ...
def release() -> bool: ...
def forget_in_child() -> None: ...
def kept_fds() -> list[int]: ...
