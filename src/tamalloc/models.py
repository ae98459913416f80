"""Result types shared by both backends (frozen, so results can be cached and compared):
the processes' records. The system-wide figures' are in :mod:`.system_models`.

NamedTuples rather than frozen dataclasses: the dataclasses module (and the inspect
module it loads) cost each ``tamalloc`` command about as much as the interpreter's own
start-up, and these records need no more than a tuple gives (fields, equality, hashing,
a repr, ``_replace``, ``_asdict``). At run time their base is :mod:`._records`'s, which
makes the same classes without importing :mod:`typing`.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NamedTuple
else:
    from ._records import NamedTuple

OVERCOMMIT_MODES = {0: "heuristic", 1: "always", 2: "never"}


def committed_pct(committed_kb: int, reserved_kb: int) -> float:
    """Committed as a percentage of reserved (0 when nothing is reserved)."""
    return committed_kb / reserved_kb * 100 if reserved_kb else 0.0


class MemStats(NamedTuple):
    """Memory of one process. Sizes are in kB (1024 bytes), as in /proc.

    A NamedTuple rather than a frozen dataclass: scans build thousands of these, and
    a tuple is built several times faster (it matters most on the kernel backend,
    where decoding the records is most of the cost).
    """

    pid: int
    name: str
    reserved_kb: int  # virtual size, VmSize
    committed_kb: int  # resident, VmRSS = anon + file + shmem
    committed_pct: float
    anon_kb: int
    file_kb: int
    shmem_kb: int
    swap_kb: int
    oom_score: int
    oom_score_adj: int

    @classmethod
    def build(
        cls,
        pid: int,
        name: str,
        reserved_kb: int,
        committed_kb: int,
        anon_kb: int,
        file_kb: int,
        shmem_kb: int,
        swap_kb: int,
        oom_score: int,
        oom_score_adj: int,
    ) -> MemStats:
        """Construct with ``committed_pct`` derived, so every backend computes it alike."""
        return cls(
            pid,
            name,
            reserved_kb,
            committed_kb,
            committed_pct(committed_kb, reserved_kb),
            anon_kb,
            file_kb,
            shmem_kb,
            swap_kb,
            oom_score,
            oom_score_adj,
        )

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


FIELD_NAMES: tuple[str, ...] = MemStats._fields


class OomTask(NamedTuple):
    """What the OOM killer weighs of one process (``oom_badness()`` in mm/oom_kill.c).

    Both backends fill it: the kernel backend from one get_mem_stats() walk with the
    VER1 record (cgroup id and OOM flags), the procfs backend from ``status``,
    ``oom_score``, ``oom_score_adj`` and ``cgroup`` of each process. Sizes in kB.
    """

    pid: int
    name: str
    # cgroup v2 path of the process ("/" for the root, "/a/b" below it), None when no
    # cgroup v2 hierarchy is mounted or the process's cgroup could not be found.
    cgroup: str | None
    rss_kb: int  # VmRSS: get_mm_rss()
    swap_kb: int  # VmSwap: MM_SWAPENTS
    pgtables_kb: int  # VmPTE: mm_pgtables_bytes()
    oom_score: int  # /proc/PID/oom_score (the system-wide OOM's score)
    oom_score_adj: int
    # oom_badness() returns LONG_MIN: never chosen (global init, oom_score_adj -1000,
    # MMF_OOM_SKIP after the OOM reaper, a vfork parent).
    unkillable: bool
    # Already chosen by an OOM kill and still exiting: the kernel waits for it rather
    # than choose another. Only the kernel backend can see this; procfs says False.
    oom_victim: bool
    # signal->oom_flag_origin, set while it runs swapoff or a KSM unmerge: the OOM
    # killer takes it first, before badness, whatever its oom_score_adj. None where the
    # backend cannot see it (procfs).
    oom_origin: bool | None = None
    # task_will_free_mem(): exiting as a whole, so an OOM that chooses it kills nobody
    # new, and an OOM it triggers itself kills nobody. None where the backend cannot
    # see it (procfs).
    exiting: bool | None = None


class TotalMemStats(NamedTuple):
    """Sums over every user process, plus the system's commit accounting (kB)."""

    processes: int
    reserved_kb: int
    committed_kb: int
    swap_kb: int
    committed_as_kb: int  # /proc/meminfo Committed_AS
    commit_limit_kb: int  # /proc/meminfo CommitLimit
    mem_total_kb: int  # /proc/meminfo MemTotal
    overcommit_memory: int  # vm.overcommit_memory: 0, 1 or 2
    # Whether the sums leave out processes the caller may not see: False when every
    # process is counted, True when at least one is left out, None when some may be
    # but nothing says (a kernel older than the flag, /proc mounted hidepid). Never a
    # count: a count of hidden processes would let a caller follow other users'
    # process starts and exits. See tamalloc.visibility().
    some_hidden: bool | None = None

    @property
    def overcommit_mode(self) -> str:
        """``vm.overcommit_memory`` by name: heuristic, always or never."""
        return OVERCOMMIT_MODES.get(self.overcommit_memory, str(self.overcommit_memory))

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()
