"""The cgroup v2 filesystem: where it is mounted (from /proc/self/mountinfo), its
directories and their ids, and cgroup paths as /proc/PID/cgroup writes them. A data
source below the backends (the kernel backend names cgroups by id) and the OOM model's
inputs (:mod:`tamalloc.oom_inputs`)."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator

MOUNTINFO = "/proc/self/mountinfo"
ROOT = "/"


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
