"""The OOM model's inputs (:class:`OomInputs`, :class:`OomCgroup`) and their reading
from the running system (all the I/O of :mod:`tamalloc.oom`): the backend's tasks,
/proc/meminfo, the vm sysctls and the cgroup v2 tree, found through
/proc/self/mountinfo wherever it is mounted."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .backends import get_backend
from .cgroupfs import (
    MOUNTINFO,
    cgroup2_mount,
    normalize_cgroup,
    read_memory_events,
    read_text,
    v1_memory_in_use,
    walk_cgroups,
)
from .models import OomTask
from .system import read_meminfo

_SELF_CGROUP = "/proc/self/cgroup"
_NODES = "/sys/devices/system/node"


def plain_dict(obj: Any) -> dict[str, Any]:
    """A dataclass of the OOM model as JSON-ready values (nested records, lists)."""
    return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)}


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class OomCgroup:
    """One cgroup v2 directory, as the OOM killer sees it. Sizes in kB."""

    memory_max_kb: int | None  # memory.max; None for "max" (and for the root)
    swap_max_kb: int | None  # memory.swap.max; None for "max" or absent
    current_kb: int  # memory.current (0 where absent)
    swap_current_kb: int  # memory.swap.current (0 where absent)
    oom_group: bool  # memory.oom.group
    # Whether it has a memcg of its own: "memory" in its parent's subtree_control (for
    # the root: in its cgroup.controllers). Without one its tasks are charged to, and
    # OOM-killed as members of, the nearest ancestor that has one.
    has_memory_controller: bool
    oom_kill: int | None = None  # memory.events oom_kill: OOM kills so far in it
    # The kernel's cgroup id (kernfs's, the directory's inode number): ids grow in
    # creation order, which is the order a memcg OOM's walk visits sibling cgroups.
    cgroup_id: int | None = None
    # cgroup.procs as read: the processes in the order the kernel's task iterator
    # (css_task_iter, CSS_TASK_ITER_PROCS) meets them, which is the order a memcg
    # OOM's walk weighs them in. None when unread.
    procs: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return plain_dict(self)


@dataclass(frozen=True, slots=True)
class OomInputs:
    """Everything :func:`predict` reads; ``to_dict``/``from_dict`` record it as JSON."""

    tasks: tuple[OomTask, ...]
    cgroups: Mapping[str, OomCgroup]  # by path ("/", "/a/b"); empty without cgroup v2
    mem_total_kb: int
    mem_available_kb: int
    swap_total_kb: int
    swap_free_kb: int
    page_size: int
    swappiness: int  # vm.swappiness: cgroup v2 has no per-cgroup one
    oom_kill_allocating_task: int
    panic_on_oom: int
    cgroup_v1_memory: bool  # a v1 memory hierarchy limits tasks and v2 has no memory
    backend: str
    numa_nodes: int = 1  # a cpuset or mempolicy can confine an OOM to some of them
    # Start times (/proc/PID/stat starttime, clock ticks since boot) of the processes
    # whose order a system-wide OOM's walk (for_each_process: creation order) decides:
    # read only for the candidates tied for the kill.
    start_times: Mapping[int, int] = field(default_factory=dict)
    # Sets of processes found to share one mm (kcmp KCMP_VM), each of two or more pids:
    # the kernel kills them all with whichever of them it kills. Looked for only among
    # the processes an OOM would kill or could choose.
    shared_mm: tuple[tuple[int, ...], ...] = ()
    # Processes whose sharing of their mm with others could not be checked (kcmp
    # refused: no ptrace access to them, or a kernel without kcmp).
    shared_mm_unknown: tuple[int, ...] = ()

    @property
    def page_kb(self) -> int:
        return max(self.page_size // 1024, 1)

    def to_dict(self) -> dict[str, Any]:
        data = plain_dict(self)
        data["tasks"] = [t._asdict() for t in self.tasks]
        data["cgroups"] = {path: cg.to_dict() for path, cg in sorted(self.cgroups.items())}
        data["start_times"] = {str(pid): t for pid, t in sorted(self.start_times.items())}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OomInputs:
        values = dict(data)
        values["tasks"] = tuple(OomTask(**t) for t in data["tasks"])
        values["cgroups"] = {
            normalize_cgroup(p): _cgroup_from_dict(cg) for p, cg in data.get("cgroups", {}).items()
        }
        values["start_times"] = {int(p): int(t) for p, t in data.get("start_times", {}).items()}
        values["shared_mm"] = tuple(tuple(g) for g in data.get("shared_mm", ()))
        values["shared_mm_unknown"] = tuple(data.get("shared_mm_unknown", ()))
        return cls(**values)


def _cgroup_from_dict(data: Mapping[str, Any]) -> OomCgroup:
    values = dict(data)
    if values.get("procs") is not None:
        values["procs"] = tuple(values["procs"])
    return OomCgroup(**values)


def _sysctl(name: str, default: int) -> int:
    text = read_text(f"/proc/sys/vm/{name}")
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _kb(text: str | None) -> int | None:
    """A memory.* size in bytes as kB; None for "max" or a missing file."""
    if text is None:
        return None
    text = text.strip()
    return None if text == "max" or not text else int(text) // 1024


def _procs(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(word) for word in text.split())
    except ValueError:
        return None


def _read_cgroup(directory: str, has_memory: bool, cgroup_id: int | None = None) -> OomCgroup:
    def read(name: str) -> str | None:
        return read_text(os.path.join(directory, name))

    events = read_memory_events(directory)
    oom_kill = None if events is None else events.get("oom_kill")
    return OomCgroup(
        memory_max_kb=_kb(read("memory.max")),
        swap_max_kb=_kb(read("memory.swap.max")),
        current_kb=_kb(read("memory.current")) or 0,
        swap_current_kb=_kb(read("memory.swap.current")) or 0,
        oom_group=(read("memory.oom.group") or "0").strip() == "1",
        has_memory_controller=has_memory,
        oom_kill=oom_kill,
        cgroup_id=cgroup_id,
        procs=_procs(read("cgroup.procs")),
    )


def _controllers(directory: str, name: str) -> set[str]:
    return set((read_text(os.path.join(directory, name)) or "").split())


def read_cgroups(mount: tuple[str, str]) -> dict[str, OomCgroup]:
    """Every cgroup of the v2 hierarchy below the mount, by path (see walk_cgroups)."""
    cgroups: dict[str, OomCgroup] = {}
    # Whether a cgroup's children have the memory controller, by the cgroup's path.
    children_memory: dict[str, bool] = {}
    for directory, path, cgroup_id in walk_cgroups(mount):
        parent = posixpath.dirname(path) if path != mount[0] else None
        if parent is None:
            has_memory = "memory" in _controllers(directory, "cgroup.controllers")
        else:
            has_memory = children_memory.get(parent, False)
        cgroups[path] = _read_cgroup(directory, has_memory, cgroup_id)
        children_memory[path] = "memory" in _controllers(directory, "cgroup.subtree_control")
    return cgroups


def _numa_nodes() -> int:
    try:
        names = os.listdir(_NODES)
    except OSError:
        return 1
    return max(sum(1 for n in names if n.startswith("node") and n[4:].isdigit()), 1)


def collect_inputs(backend: str | None = None) -> OomInputs:
    """The OOM model's inputs, read now: tasks from ``backend`` (default: the one in
    use), the rest from /proc and the cgroup v2 hierarchy."""
    chosen = get_backend(backend)
    tasks = tuple(chosen.oom_tasks())
    meminfo = read_meminfo()
    mountinfo = read_text(MOUNTINFO) or ""
    mount = cgroup2_mount(mountinfo)
    cgroups = read_cgroups(mount) if mount is not None else {}
    v2_memory = any(cg.has_memory_controller for cg in cgroups.values())
    v1 = v1_memory_in_use(mountinfo, read_text(_SELF_CGROUP) or "")
    mem_total = meminfo.get("MemTotal", 0)
    return OomInputs(
        tasks=tasks,
        cgroups=cgroups,
        mem_total_kb=mem_total,
        mem_available_kb=meminfo.get("MemAvailable", meminfo.get("MemFree", 0)),
        swap_total_kb=meminfo.get("SwapTotal", 0),
        swap_free_kb=meminfo.get("SwapFree", 0),
        page_size=mmap.PAGESIZE,
        swappiness=_sysctl("swappiness", 60),
        oom_kill_allocating_task=_sysctl("oom_kill_allocating_task", 0),
        panic_on_oom=_sysctl("panic_on_oom", 0),
        cgroup_v1_memory=v1 and not v2_memory,
        backend=chosen.name,
        numa_nodes=_numa_nodes(),
    )


def read_start_times(pids: Iterable[int]) -> dict[int, int]:
    """/proc/PID/stat's starttime of each process that is still there (clock ticks
    since boot; a process's name may hold spaces and parentheses, so the fields are
    counted after the last ")")."""
    times = {}
    for pid in pids:
        text = read_text(f"/proc/{int(pid)}/stat")
        if text is None:
            continue
        fields_ = text.rpartition(")")[2].split()
        # starttime is field 22; the fields after the name start at field 3
        try:
            times[pid] = int(fields_[19])
        except (IndexError, ValueError):
            continue
    return times


_KCMP_VM = 1
# kcmp(2)'s number: the syscall has no libc wrapper.
_SYS_KCMP = {"x86_64": 312, "aarch64": 272, "riscv64": 272, "ppc64le": 354, "s390x": 343}


def _kcmp_vm(pid1: int, pid2: int) -> bool | None:
    """Whether the two processes share one mm; None when the kernel would not say
    (no ptrace read access to both, no kcmp, or either gone)."""
    from ._libc import libc

    number = _SYS_KCMP.get(platform.machine())
    if number is None:
        return None
    ret = libc.syscall(
        ctypes.c_long(number),
        ctypes.c_long(pid1),
        ctypes.c_long(pid2),
        ctypes.c_long(_KCMP_VM),
        ctypes.c_ulong(0),
        ctypes.c_ulong(0),
    )
    if ret < 0:
        # a process gone meanwhile shares nothing any more
        return False if ctypes.get_errno() == errno.ESRCH else None
    return bool(ret == 0)


def find_shared_mm(
    tasks: Iterable[OomTask], pids: Iterable[int]
) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """The processes that share an mm with any of ``pids``, as sets of pids (each with
    two or more), and the pids whose sharing kcmp would not answer.

    Processes that share an mm show the same resident, swap and page-table figures (they
    are the mm's), so kcmp() is asked only about pairs whose figures are equal: one
    call per such pair, none for the rest. Figures read a moment apart from an mm that
    changes meanwhile can differ: such a sharer is missed."""
    by_figures: dict[tuple[int, int, int], list[int]] = {}
    for t in tasks:
        by_figures.setdefault((t.rss_kb, t.swap_kb, t.pgtables_kb), []).append(t.pid)
    figures = {pid: key for key, group in by_figures.items() for pid in group}
    groups: list[set[int]] = []
    unknown: set[int] = set()
    done: set[int] = set()
    for pid in pids:
        if pid in done or pid not in figures:
            continue
        done.add(pid)
        shared = {pid}
        for other in by_figures[figures[pid]]:
            if other == pid:
                continue
            same = _kcmp_vm(pid, other)
            if same is None:
                unknown.add(pid)
            elif same:
                shared.add(other)
        done.update(shared)
        if len(shared) > 1:
            groups.append(shared)
    return tuple(tuple(sorted(g)) for g in groups), tuple(sorted(unknown))
