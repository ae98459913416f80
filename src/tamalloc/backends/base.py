"""What a backend is: its name and the calls every backend answers. Below the
implementations (:mod:`.kernel`, :mod:`.bpf`, :mod:`.procfs`) and the selection in
:mod:`tamalloc.backends`, which both name it.

``Backend`` and ``BackendName`` are types for mypy, defined as such only when it reads
them: at run time nothing evaluates them, and defining them needed :mod:`typing`, a
third of a bare Python's start-up in every ``tamalloc`` command.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import mmap
    from typing import Literal, Protocol

    from ..models import MemStats, OomTask, TotalMemStats

    BackendName = Literal["kernel", "bpf", "procfs"]

    class Backend(Protocol):
        name: BackendName

        def mem_stats(self, pid: int) -> MemStats: ...

        def all_mem_stats(self) -> list[MemStats]: ...

        def total_mem_stats(self) -> TotalMemStats: ...

        def oom_tasks(self) -> list[OomTask]:
            """Every user process the caller may see, as the OOM killer weighs it."""
            ...

        def map_anonymous(self, size: int, huge: bool) -> tuple[int, mmap.mmap | None]:
            """Map ``size`` bytes of lazily-zeroed memory. Returns its address and the
            object owning the mapping, if any (closing it unmaps; else munmap(2) frees)."""
            ...

else:
    # Names that other modules import for their annotations, which run time never
    # evaluates (``from __future__ import annotations``): what they stand for is above.
    BackendName = str
    Backend = object

BACKEND_NAMES: tuple[BackendName, ...] = ("kernel", "bpf", "procfs")
