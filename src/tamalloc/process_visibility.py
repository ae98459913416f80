"""Whether the caller sees every process, and if not, why.

A list of processes must never be silently short. Two things hide processes:

- the kernel backend: the syscalls show an unprivileged caller only the processes it
  may ptrace-read while ``vm.tamalloc_stats_restrict`` is 1 (the default); the kernel
  says in ``tamalloc_total_mem_stats.some_hidden`` whether it left any out, never how
  many (a count would let the caller follow other users' process starts and exits);
- the procfs backend: ``/proc`` mounted with ``hidepid`` hides (or locks) other
  users' processes from whoever lacks the right; /proc gives no count of them.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple
else:  # the same class without importing typing: see _records
    from ._records import NamedTuple

RESTRICT_SYSCTL = "vm.tamalloc_stats_restrict"
_RESTRICT_PATH = "/proc/sys/vm/tamalloc_stats_restrict"
_MOUNTINFO_PATH = "/proc/self/mountinfo"
# hidepid values that hide (2, 4) or lock (1) other users' processes; 0/off hides none.
_HIDING = frozenset({"1", "2", "4", "noaccess", "invisible", "ptraceable"})


class Visibility(NamedTuple):
    """What the caller of a backend can see.

    ``some_hidden`` says whether user processes are left out of lists and totals:
    False when none are, True when at least one is, None when some may be but nothing
    says. It is never a count: neither the kernel nor /proc tells how many processes
    are hidden. ``reason`` says why processes are hidden and what would show them;
    None when nothing hides any.
    """

    some_hidden: bool | None
    reason: str | None

    @property
    def complete(self) -> bool:
        """True when the caller sees every process."""
        return self.reason is None or self.some_hidden is False

    def describe(self, visible: int) -> str | None:
        """One sentence for a person who was shown ``visible`` processes; None when the
        list is complete."""
        if self.complete:
            return None
        noun = "process" if visible == 1 else "processes"
        if self.some_hidden is None:
            return f"{visible} {noun} shown; others may be hidden from you: {self.reason}"
        return f"{visible} {noun} shown; others are hidden from you: {self.reason}"


EVERYTHING = Visibility(some_hidden=False, reason=None)


def kernel_visibility(some_hidden: bool | None) -> Visibility:
    """From ``some_hidden`` of get_total_mem_stats (None from a kernel older than the
    flag, which restricted nothing either)."""
    if not some_hidden:
        return EVERYTHING if some_hidden is False else Visibility(None, reason=None)
    setting = _read_first_line(_RESTRICT_PATH)
    value = f"={setting}" if setting else ""
    return Visibility(
        some_hidden=True,
        reason=f"{RESTRICT_SYSCTL}{value}; run as root or use --backend procfs to see what"
        " /proc shows",
    )


def kernel_hidden_pid_hint(pid: int) -> str | None:
    """Why the kernel backend may have called ``pid`` absent (ESRCH) though /proc lists
    it: the restriction hides it from this caller. None when that cannot be the cause."""
    if os.geteuid() == 0 or _read_first_line(_RESTRICT_PATH) in (None, "0"):
        return None
    if not os.path.exists(f"/proc/{pid}"):
        return None
    return (
        f"/proc lists it, so it may be hidden from you ({RESTRICT_SYSCTL}=1; run as root"
        " or use --backend procfs)"
    )


def procfs_visibility() -> Visibility:
    """From the ``hidepid`` option of the /proc mount and the caller's privileges."""
    options = _proc_options()
    if options is None:
        return EVERYTHING  # no mountinfo: nothing to go by, and /proc is then the default
    hidepid = options.get("hidepid")
    if hidepid is None or hidepid not in _HIDING or _sees_all(options.get("gid")):
        return EVERYTHING
    return Visibility(
        some_hidden=None,
        reason=f"/proc is mounted hidepid={hidepid}, which hides other users' processes"
        " (run as root to see them)",
    )


def procfs_hides_nothing() -> bool:
    """True when /proc is mounted without a hiding ``hidepid``: every process's
    files may be opened by anyone, whoever the caller or the process becomes."""
    options = _proc_options()
    return options is not None and options.get("hidepid") not in _HIDING


def _proc_options() -> dict[str, str] | None:
    try:
        with open(_MOUNTINFO_PATH, encoding="utf-8", errors="replace") as f:
            return proc_mount_options(f.read())
    except OSError:
        return None


def _sees_all(gid: str | None) -> bool:
    # Root passes hidepid's ptrace check; so does a member of the mount's gid= group.
    if os.geteuid() == 0:
        return True
    return gid is not None and gid.isdigit() and int(gid) in {os.getegid(), *os.getgroups()}


def proc_mount_options(mountinfo: str) -> dict[str, str]:
    """The super-block options of the procfs mounted on /proc (the last such mount in
    ``/proc/self/mountinfo``, the one that path resolves to); {} if there is none."""
    found: dict[str, str] = {}
    for line in mountinfo.splitlines():
        pre, sep, post = line.partition(" - ")
        fields, tail = pre.split(), post.split()
        # Fields: id parent major:minor root mount-point ...; after " - ": type source opts.
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        if fields[4] == "/proc" and tail[0] == "proc":
            found = {}
            for option in tail[2].split(","):
                key, _, value = option.partition("=")
                found[key] = value
    return found


def _read_first_line(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.readline().strip() or None
    except OSError:
        return None
