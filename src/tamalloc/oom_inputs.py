"""Reading the OOM model's inputs from the running system (all the I/O of
:mod:`tamalloc.oom`): the backend's tasks, /proc/meminfo, the vm sysctls and the cgroup
v2 tree, found through /proc/self/mountinfo wherever it is mounted."""

from __future__ import annotations

import mmap
import os
import posixpath
from collections.abc import Iterator

from .backends import get_backend
from .oom import ROOT, OomCgroup, OomInputs
from .system import read_meminfo

_MOUNTINFO = "/proc/self/mountinfo"
_SELF_CGROUP = "/proc/self/cgroup"
_NODES = "/sys/devices/system/node"


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _sysctl(name: str, default: int) -> int:
    text = _read_text(f"/proc/sys/vm/{name}")
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _unescape_mount(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def _mounts(mountinfo: str) -> list[tuple[str, str, str, str]]:
    """(root, mount point, fstype, super options) of every mount."""
    out = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        parts, tail = left.split(), right.split()
        if sep and len(parts) >= 5 and len(tail) >= 3:
            out.append((_unescape_mount(parts[3]), _unescape_mount(parts[4]), tail[0], tail[2]))
    return out


def cgroup2_mount(mountinfo: str | None = None) -> tuple[str, str] | None:
    """(root within the hierarchy, mount point) of the cgroup v2 mount; a mount of the
    whole hierarchy is preferred to one of a subtree."""
    text = _read_text(_MOUNTINFO) if mountinfo is None else mountinfo
    found = [(root, point) for root, point, fstype, _ in _mounts(text or "") if fstype == "cgroup2"]
    found.sort(key=lambda m: m[0] != ROOT)
    return found[0] if found else None


def v1_memory_in_use(mountinfo: str, self_cgroup: str) -> bool:
    """Whether a cgroup v1 memory hierarchy is mounted or holds this process."""
    for _, _, fstype, options in _mounts(mountinfo):
        if fstype == "cgroup" and "memory" in options.split(","):
            return True
    for line in self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[0] != "0" and "memory" in parts[1].split(","):
            return True
    return False


def _kb(text: str | None) -> int | None:
    """A memory.* size in bytes as kB; None for "max" or a missing file."""
    if text is None:
        return None
    text = text.strip()
    return None if text == "max" or not text else int(text) // 1024


def _read_cgroup(directory: str, has_memory: bool) -> OomCgroup:
    def read(name: str) -> str | None:
        return _read_text(os.path.join(directory, name))

    oom_kill = None
    events = read("memory.events")
    if events is not None:
        for line in events.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                oom_kill = int(value)
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
    return set((_read_text(os.path.join(directory, name)) or "").split())


def walk_cgroups(mount: tuple[str, str]) -> Iterator[tuple[str, str, int]]:
    """(directory, path, id) of every cgroup of the v2 hierarchy below the mount, each
    parent before its children. The path is the one /proc/PID/cgroup gives (the mount's
    root joined with the directory below the mount point); the id, the one the kernel
    reports, is the directory's inode number, which readdir gives without a stat."""
    root, point = mount
    try:
        stack = [(point, root, os.stat(point).st_ino)]
    except OSError:
        return
    while stack:
        directory, path, ino = stack.pop()
        yield directory, path, ino
        try:
            entries = list(os.scandir(directory))
        except OSError:  # removed meanwhile, or not ours to list
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, f"{path.rstrip('/')}/{entry.name}", entry.inode()))
            except OSError:
                continue


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
    mountinfo = _read_text(_MOUNTINFO) or ""
    mount = cgroup2_mount(mountinfo)
    cgroups = read_cgroups(mount) if mount is not None else {}
    v2_memory = any(cg.has_memory_controller for cg in cgroups.values())
    v1 = v1_memory_in_use(mountinfo, _read_text(_SELF_CGROUP) or "")
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
