"""The records of the system-wide figures (:func:`tamalloc.system_stats`,
:func:`tamalloc.cpu_sample`): memory, CPU, swap and disk. Named tuples, as the
processes' records in :mod:`.models`, apart from them so that a command about
processes does not build these six classes (a named tuple class costs about a twentieth
of a bare Python's start-up to make).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NamedTuple
else:
    from ._records import NamedTuple


class MemoryInfo(NamedTuple):
    total_kb: int
    used_kb: int  # total - available, as procps free 4.x
    free_kb: int
    available_kb: int
    buffers_kb: int
    cached_kb: int


class CpuTimes(NamedTuple):
    """Cumulative CPU time in USER_HZ ticks since boot; ``cpu`` is None for the total."""

    cpu: int | None
    user: int
    nice: int
    system: int
    idle: int
    iowait: int
    irq: int
    softirq: int
    steal: int

    @property
    def total(self) -> int:
        return (
            self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
        )

    def __sub__(self, earlier: CpuTimes) -> CpuTimes:
        """Ticks spent between ``earlier`` and this reading."""
        return CpuTimes(
            self.cpu, *(max(0, a - b) for a, b in zip(self._ticks(), earlier._ticks(), strict=True))
        )

    def _ticks(self) -> tuple[int, ...]:
        return (
            self.user,
            self.nice,
            self.system,
            self.idle,
            self.iowait,
            self.irq,
            self.softirq,
            self.steal,
        )

    def pct(self, name: str) -> float:
        """Share of ``name`` (e.g. "user") in all ticks, in percent."""
        total = self.total
        return getattr(self, name) / total * 100 if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = self._asdict()
        if self.cpu is None:
            del data["cpu"]
        return data


class CpuStats(NamedTuple):
    total: CpuTimes
    per_cpu: tuple[CpuTimes, ...]


class SwapInfo(NamedTuple):
    """Swap space of the system (/proc/meminfo SwapTotal and SwapFree), kB."""

    total_kb: int
    used_kb: int
    free_kb: int


def disk_used_pct(total_kb: int, free_kb: int, available_kb: int) -> float:
    """Used share of a filesystem as df computes it: used / (used + available), where
    used = total - free. The blocks reserved for root count as neither, so this is the
    share an ordinary user has filled of what he can fill. The figures are the
    filesystem's word (a FUSE server chooses them): more free than total counts as
    nothing used, so the result is always within 0..100."""
    used = max(total_kb - free_kb, 0)
    return round(used / (used + available_kb) * 100, 2) if used + available_kb > 0 else 0.0


class DiskUsage(NamedTuple):
    path: str
    total_kb: int
    free_kb: int
    available_kb: int
    used_pct: float  # disk_used_pct(): as df, 2 decimals


class SystemStats(NamedTuple):
    """Memory, CPU and disk figures; ``source`` says where they came from."""

    memory: MemoryInfo
    cpu: CpuStats
    disk: DiskUsage
    source: str
    # From /proc/meminfo whatever the source (the module reports no swap); None only
    # from parse_system_stats(), which reads the module's text alone.
    swap: SwapInfo | None = None

    def to_dict(self) -> dict[str, Any]:
        """The shape of /proc/system_stats.json, plus ``source`` and ``swap``."""
        data: dict[str, Any] = {
            "memory": self.memory._asdict(),
            "cpu": cpu_to_dict(self.cpu),
            "disk": self.disk._asdict(),
            "source": self.source,
        }
        if self.swap is not None:
            data["swap"] = self.swap._asdict()
        return data


def cpu_to_dict(cpu: CpuStats) -> dict[str, Any]:
    return {"total": cpu.total.to_dict(), "per_cpu": [c.to_dict() for c in cpu.per_cpu]}
