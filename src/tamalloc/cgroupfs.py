"""The cgroup v2 filesystem: where it is mounted (from /proc/self/mountinfo), its
directories and their ids, cgroup paths as /proc/PID/cgroup writes them, and the
counters of a cgroup's memory.events and of pressure stall information (memory.pressure,
/proc/pressure/memory). A data source below the backends (the kernel backend names
cgroups by id), the OOM model's inputs (:mod:`tamalloc.oom_inputs`) and the exporter.

What these files say is taken as hostile (a container may own a delegated subtree and
name its cgroups; a file may be truncated, or of a cgroup removed meanwhile): a
number that is not plain ASCII decimal is skipped, one beyond the kernel's 64 bits is
saturated, and an unreadable file is None, never an exception."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator

MOUNTINFO = "/proc/self/mountinfo"
ROOT = "/"
PRESSURE_MEMORY = "/proc/pressure/memory"
# The kernel's counters are unsigned long (memory.events) or u64 (PSI totals).
COUNTER_MAX = 2**64 - 1
# The events of memory.events (Documentation/admin-guide/cgroup-v2.rst), in its order;
# any other key is left out, so that a file cannot make up label values.
MEMORY_EVENTS = ("low", "high", "max", "oom", "oom_kill", "oom_group_kill")
PRESSURE_KINDS = ("some", "full")
# Each of these files is a few lines; more is not the kernel's.
_SMALL_FILE = 4096


def normalize_cgroup(path: str) -> str:
    """A cgroup path as /proc/PID/cgroup writes it: "/", "/a/b" (no trailing slash)."""
    path = posixpath.normpath("/" + path.strip())
    return "/" + path.lstrip("/")


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def read_small(path: str, limit: int = _SMALL_FILE) -> str | None:
    """The first ``limit`` bytes of a kernel file, or None when it cannot be read (absent,
    its cgroup removed, PSI disabled: EOPNOTSUPP)."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit)
    except OSError:
        return None
    return data.decode("ascii", "replace")


def parse_counter(text: str) -> int | None:
    """A kernel counter: ASCII decimal digits only (int() would also take "+1", "1_0",
    spaces and other scripts' digits), saturated at COUNTER_MAX; None otherwise."""
    if not text or not text.isascii() or not text.isdigit():
        return None
    # Digits beyond COUNTER_MAX's 20 saturate without building a huge int.
    return COUNTER_MAX if len(text) > 20 else min(int(text), COUNTER_MAX)


def parse_memory_events(text: str) -> dict[str, int]:
    """``{event: count}`` of a memory.events text ("oom_kill 3" lines), the known events
    only; a malformed line is skipped, and a repeated event keeps its first count."""
    events: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or parts[0] not in MEMORY_EVENTS or parts[0] in events:
            continue
        value = parse_counter(parts[1])
        if value is not None:
            events[parts[0]] = value
    return events


def read_memory_events(directory: str) -> dict[str, int] | None:
    """The memory.events counters of the cgroup at ``directory`` (its own and its
    descendants' events); None when the file cannot be read."""
    text = read_small(os.path.join(directory, "memory.events"))
    return None if text is None else parse_memory_events(text)


def parse_pressure(text: str) -> dict[str, int]:
    """``{"some": µs, "full": µs}``: the ``total=`` stall times of a PSI file
    ("some avg10=0.00 avg60=0.00 avg300=0.00 total=123"); a malformed line is skipped,
    a repeated kind keeps its first."""
    totals: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0] not in PRESSURE_KINDS or fields[0] in totals:
            continue
        kind = fields[0]
        for field in fields[1:]:
            key, sep, value = field.partition("=")
            if sep and key == "total":
                total = parse_counter(value)
                if total is not None:
                    totals[kind] = total
                break
    return totals


def read_pressure(path: str = PRESSURE_MEMORY) -> dict[str, int] | None:
    """The PSI totals of ``path`` (default the system's memory pressure; a cgroup's
    is its directory's memory.pressure), in microseconds; None when unreadable."""
    text = read_small(path)
    return None if text is None else parse_pressure(text)


def cgroup_directory(mount: tuple[str, str], path: str) -> str | None:
    """The directory of cgroup ``path`` under ``mount`` (root, mount point); None when
    the path is not below the mount's root, or holds U+FFFD, which may stand for any
    bytes that are not UTF-8 in a name (see walk_cgroups): a guess could read another
    cgroup's files."""
    root, point = mount
    path = normalize_cgroup(path)
    if "\ufffd" in path:
        return None
    if root != ROOT:
        if path != root and not path.startswith(root + "/"):
            return None
        path = path[len(root) :] or "/"
    return point if path == ROOT else os.path.join(point, path.lstrip("/"))


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
    text = read_text(MOUNTINFO) if mountinfo is None else mountinfo
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


def walk_cgroups(mount: tuple[str, str]) -> Iterator[tuple[str, str, int]]:
    """(directory, path, id) of every cgroup of the v2 hierarchy below the mount, each
    parent before its children. The path is the one /proc/PID/cgroup gives (the mount's
    root joined with the directory below the mount point); the id, the one the kernel
    reports, is the directory's inode number, which readdir gives without a stat.
    A name that is not UTF-8 (whoever owns a delegated subtree chooses its names) has
    its bad bytes replaced by U+FFFD in the path, as /proc/PID/cgroup's are by the procfs
    backend: a path is then text that every consumer can encode (a metric label), and
    the same cgroup has the same path from either source."""
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
                    name = os.fsencode(entry.name).decode("utf-8", "replace")
                    stack.append((entry.path, f"{path.rstrip('/')}/{name}", entry.inode()))
            except OSError:
                continue
