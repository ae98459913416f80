"""System-wide memory, CPU and disk figures: /proc/system_stats when the module is
loaded, /proc/meminfo, /proc/stat and statvfs(2) otherwise."""

from __future__ import annotations

import os
import time

from .system_models import (
    CpuStats,
    CpuTimes,
    DiskUsage,
    MemoryInfo,
    SwapInfo,
    SystemStats,
    disk_used_pct,
)

SYSTEM_STATS_PATH = "/proc/system_stats"
SOURCE_MODULE = "system_stats"
SOURCE_MODULE_STATVFS = "system_stats+statvfs"  # module for memory/CPU, disk of another path
SOURCE_PROCFS = "procfs"

_MEMORY_KEYS = ("total_kb", "used_kb", "free_kb", "available_kb", "buffers_kb", "cached_kb")
_REQUIRED_MEMORY_KEYS = ("total_kb", "used_kb", "free_kb", "available_kb")
_DISK_KEYS = ("total_kb", "free_kb", "available_kb")
_CPU_FIELDS = 8  # user nice system idle iowait irq softirq steal


def _cpu_times(name: str, values: list[str], where: str) -> CpuTimes:
    if name == "cpu":
        cpu = None
    elif name.startswith("cpu") and name[3:].isdigit():
        cpu = int(name[3:])
    else:
        raise ValueError(f"{where}: unexpected CPU line {name!r}")
    ticks = [int(v) for v in values[:_CPU_FIELDS]]
    ticks += [0] * (_CPU_FIELDS - len(ticks))  # older kernels print fewer columns
    return CpuTimes(cpu, *ticks)


def parse_system_stats(text: str) -> SystemStats:
    """Parse the text of /proc/system_stats (format in docs/abi.md).

    Raises ValueError naming the line or the missing key when the text is malformed.
    """
    where = SYSTEM_STATS_PATH
    memory: dict[str, int] = {}
    disk: dict[str, float] = {}
    disk_path: str | None = None
    total: CpuTimes | None = None
    per_cpu: list[CpuTimes] = []
    section: str | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            if section.split(None, 1)[0] == "disk":
                disk_path = section[4:].strip() or "/"
                section = "disk"
            continue
        key, *values = line.split()
        try:
            if section == "memory" and key in _MEMORY_KEYS:
                memory[key] = int(values[0])
            elif section == "cpu":
                times = _cpu_times(key, values, f"{where} line {lineno}")
                if times.cpu is None:
                    total = times
                else:
                    per_cpu.append(times)
            elif section == "disk" and key in (*_DISK_KEYS, "used_pct"):
                disk[key] = float(values[0]) if key == "used_pct" else int(values[0])
        except (IndexError, ValueError) as err:
            raise ValueError(f"{where} line {lineno}: cannot parse {raw!r}: {err}") from err
    missing = [f"memory {k}" for k in _REQUIRED_MEMORY_KEYS if k not in memory]
    missing += [f"disk {k}" for k in _DISK_KEYS if k not in disk]
    if total is None:
        missing.append("cpu total line")
    if missing or total is None or disk_path is None:
        raise ValueError(f"{where}: missing {', '.join(missing) or 'disk section'}")
    return SystemStats(
        memory=MemoryInfo(**{k: memory.get(k, 0) for k in _MEMORY_KEYS}),
        cpu=CpuStats(total, tuple(sorted(per_cpu, key=lambda c: c.cpu or 0))),
        disk=DiskUsage(
            path=disk_path,
            total_kb=int(disk["total_kb"]),
            free_kb=int(disk["free_kb"]),
            available_kb=int(disk["available_kb"]),
            # The module's own used_pct is (total - free) / total; df's figure is
            # recomputed from the sizes, so that both sources agree with df.
            used_pct=disk_used_pct(
                int(disk["total_kb"]), int(disk["free_kb"]), int(disk["available_kb"])
            ),
        ),
        source=SOURCE_MODULE,
    )


def disk_usage(path: str = "/") -> DiskUsage:
    """Size of the filesystem holding ``path`` (statvfs), in kB."""
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize // 1024
    free = st.f_bfree * st.f_frsize // 1024
    available = st.f_bavail * st.f_frsize // 1024
    return DiskUsage(
        path=path,
        total_kb=total,
        free_kb=free,
        available_kb=available,
        used_pct=disk_used_pct(total, free, available),
    )


def _read_text(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def read_meminfo() -> dict[str, int]:
    """/proc/meminfo as {field: value} (kB, or pages for the HugePages_ counts)."""
    info: dict[str, int] = {}
    for line in _read_text("/proc/meminfo").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key] = int(value.split()[0])
    return info


def read_overcommit_memory() -> int:
    """``vm.overcommit_memory``: 0 (heuristic), 1 (always) or 2 (never)."""
    return int(_read_text("/proc/sys/vm/overcommit_memory"))


def _memory_from_meminfo(info: dict[str, int]) -> MemoryInfo:
    total = info["MemTotal"]
    free = info["MemFree"]
    # MemAvailable exists since Linux 3.14; the fallback is what older free(1) showed.
    available = info.get("MemAvailable", free + info.get("Buffers", 0) + info.get("Cached", 0))
    return MemoryInfo(
        total_kb=total,
        used_kb=total - available,
        free_kb=free,
        available_kb=available,
        buffers_kb=info.get("Buffers", 0),
        cached_kb=info.get("Cached", 0),
    )


def _swap_from_meminfo(info: dict[str, int]) -> SwapInfo:
    total = info.get("SwapTotal", 0)
    free = info.get("SwapFree", 0)
    return SwapInfo(total_kb=total, used_kb=total - free, free_kb=free)


def cpu_sample(interval: float) -> CpuStats:
    """CPU ticks spent during the next ``interval`` seconds, all CPUs and each (two
    reads of /proc/stat, as top computes its %CPU); ``pct()`` gives the shares."""
    before = _cpu_from_proc_stat(_read_text("/proc/stat"))
    time.sleep(interval)
    after = _cpu_from_proc_stat(_read_text("/proc/stat"))
    earlier = {c.cpu: c for c in before.per_cpu}
    return CpuStats(
        after.total - before.total,
        tuple(c - earlier[c.cpu] for c in after.per_cpu if c.cpu in earlier),  # hotplug
    )


def _cpu_from_proc_stat(text: str) -> CpuStats:
    total: CpuTimes | None = None
    per_cpu: list[CpuTimes] = []
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        name, *values = line.split()
        times = _cpu_times(name, values, "/proc/stat")
        if times.cpu is None:
            total = times
        else:
            per_cpu.append(times)
    if total is None:
        raise ValueError("/proc/stat: no cpu line")
    return CpuStats(total, tuple(per_cpu))


def system_stats(path: str = "/") -> SystemStats:
    """Memory, CPU (total and per CPU) and disk usage of ``path``'s filesystem.

    Reads /proc/system_stats when the module is loaded (it reports the disk of "/"
    only, so another ``path`` is measured with statvfs); ``source`` says which. Swap
    comes from /proc/meminfo either way.
    """
    try:
        text = _read_text(SYSTEM_STATS_PATH)
    except OSError:
        text = None
    meminfo = read_meminfo()
    swap = _swap_from_meminfo(meminfo)
    if text is not None:
        stats = parse_system_stats(text)._replace(swap=swap)
        if os.path.realpath(path) == "/":
            return stats
        return stats._replace(disk=disk_usage(path), source=SOURCE_MODULE_STATVFS)
    return SystemStats(
        memory=_memory_from_meminfo(meminfo),
        cpu=_cpu_from_proc_stat(_read_text("/proc/stat")),
        disk=disk_usage(path),
        source=SOURCE_PROCFS,
        swap=swap,
    )
