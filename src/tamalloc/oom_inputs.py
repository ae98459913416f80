"""The OOM model's inputs (:class:`OomInputs`, :class:`OomCgroup`) and their reading
from the running system (all the I/O of :mod:`tamalloc.oom`): the backend's tasks,
/proc/meminfo, the vm sysctls and the cgroup v2 tree, found through
/proc/self/mountinfo wherever it is mounted."""

from __future__ import annotations

import mmap
import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, fields
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

    @property
    def page_kb(self) -> int:
        return max(self.page_size // 1024, 1)

    def to_dict(self) -> dict[str, Any]:
        data = plain_dict(self)
        data["tasks"] = [t._asdict() for t in self.tasks]
        data["cgroups"] = {path: cg.to_dict() for path, cg in sorted(self.cgroups.items())}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OomInputs:
        values = dict(data)
        values["tasks"] = tuple(OomTask(**t) for t in data["tasks"])
        values["cgroups"] = {
            normalize_cgroup(p): OomCgroup(**cg) for p, cg in data.get("cgroups", {}).items()
        }
        return cls(**values)


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


def _read_cgroup(directory: str, has_memory: bool) -> OomCgroup:
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
    )


def _controllers(directory: str, name: str) -> set[str]:
    return set((read_text(os.path.join(directory, name)) or "").split())


def read_cgroups(mount: tuple[str, str]) -> dict[str, OomCgroup]:
    """Every cgroup of the v2 hierarchy below the mount, by path (see walk_cgroups)."""
    cgroups: dict[str, OomCgroup] = {}
    # Whether a cgroup's children have the memory controller, by the cgroup's path.
    children_memory: dict[str, bool] = {}
    for directory, path, _ in walk_cgroups(mount):
        parent = posixpath.dirname(path) if path != mount[0] else None
        if parent is None:
            has_memory = "memory" in _controllers(directory, "cgroup.controllers")
        else:
            has_memory = children_memory.get(parent, False)
        cgroups[path] = _read_cgroup(directory, has_memory)
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
