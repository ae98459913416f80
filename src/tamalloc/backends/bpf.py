"""The bpf backend: a BPF task iterator (Linux 5.8+) reads every process in one pass.

``_bpf/memstats.bpf.c``, compiled by clang at install, is a CO-RE program: libbpf
relocates its field accesses against the running kernel's BTF, so one object runs on
kernels whose structures differ. ``_bpfiter`` (C, libbpf) either opens the iterator
that ``tamalloc bpf pin`` left in bpffs (well under a millisecond) or loads and attaches
the object (20-70 ms: libbpf parses the kernel's BTF), once per process; it returns a
pass's records as bytes and decodes them into the records the other backends return
(pages to kB with this machine's page size, the OOM score as ``proc_oom_score()``
computes it from the same inputs the kernel weighs).

Which commands use it unasked is decided in :mod:`tamalloc.backends` (a pinned iterator:
every caller that may open it; a loaded one: the long-running exporter only).
"""

from __future__ import annotations

import errno
import functools
import mmap
import os
import stat
import struct
from typing import TYPE_CHECKING

from ..errors import BpfUnavailable, TamallocError
from ..models import MemStats, OomTask, TotalMemStats
from ..system import read_meminfo, read_overcommit_memory
from .base import BackendName

if TYPE_CHECKING:
    from .procfs import ProcfsBackend

# A str, not a Path: pathlib (and the modules it loads) would be most of what choosing
# a pinned bpf costs a one-shot command's start.
OBJECT = os.path.join(os.path.dirname(__file__), "_bpf", "memstats.bpf.o")
BTF = "/sys/kernel/btf/vmlinux"
MIN_KERNEL = (5, 8)  # the task iterator
# Where `tamalloc bpf pin` pins the iterator: a directory of root's alone (0700) on
# bpffs, one pin (0600) per build of the object (see pin_name()).
PIN_DIR = "/sys/fs/bpf/tamalloc"
PIN_PREFIX = "memstats-"

# struct tam_bpf_rec of _bpf/memstats.h: pid, flags, oom_score_adj, pad, comm[16],
# total_vm, anon, file, shmem, swap (pages), pgtables (bytes), cgroup_id. The decoding
# is _bpfiter's (C); this describes the layout for the tests and the pin's name.
RECORD = struct.Struct("<IIiI16s7Q")
THREAD = 0x01
NO_MM = 0x02
OOM_SKIP = 0x04
OOM_ORIGIN = 0x08
VFORK = 0x10
EXITING = 0x20
OOM_VICTIM = 0x40
GLOBAL_INIT = 0x80

_PAGE = mmap.PAGESIZE
_PAGE_KB = _PAGE // 1024


def _kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a release string such as 6.18.0-1-amd64; (0, 0) if none."""
    parts = release.split(".", 2)
    if len(parts) < 2:
        return (0, 0)
    minor = ""
    for char in parts[1]:
        if not char.isdigit():
            break
        minor += char
    if not parts[0].isdigit() or not minor or not parts[0].isascii() or not minor.isascii():
        return (0, 0)
    return (int(parts[0]), int(minor))


@functools.cache
def _static_reason() -> str | None:
    """What no privilege can change: the build, the kernel's version and BTF."""
    try:
        from . import _bpfiter  # noqa: F401
    except ImportError:
        return (
            "its loader tamalloc.backends._bpfiter was not built at install"
            " (needs libbpf-dev and a C compiler)"
        )
    if not os.path.isfile(OBJECT):
        return f"{os.path.basename(OBJECT)} was not built at install (needs clang)"
    release = os.uname().release
    if _kernel_version(release) < MIN_KERNEL:
        return f"kernel {release} is older than 5.8 (no BPF task iterator)"
    if not os.path.exists(BTF):
        return f"the kernel has no BTF ({BTF}: CONFIG_DEBUG_INFO_BTF)"
    return None


@functools.cache
def pin_name() -> str:
    """This build's pin: the record's size and a hash of the object in the name, so
    that a pin left by another build (another record layout or program) is never opened
    as ours."""
    from . import _bpfiter

    return f"{PIN_PREFIX}{RECORD.size}-{_bpfiter.file_tag(OBJECT)}"


@functools.cache
def pinned_reason() -> str | None:
    """Why this process cannot use a pinned iterator (None: it opened one and read()
    now uses it). Cheap: no load, a few system calls."""
    reason = _static_reason()
    if reason is not None:
        return reason
    from . import _bpfiter

    try:
        name = pin_name()
        _bpfiter.open_pinned(PIN_DIR, name)
    except OSError as err:
        if err.errno == errno.ENOENT and _others_pinned():
            # An upgrade leaves the old build's pin: say so rather than "no such file".
            return (
                f"only another tamalloc build's iterator is pinned in {PIN_DIR}"
                " (`tamalloc bpf pin` replaces it)"
            )
        return f"no usable pin at {PIN_DIR}/{PIN_PREFIX}*: {err.strerror or err}"
    return None


def _others_pinned() -> bool:
    try:
        return bool(_pins(PIN_DIR))
    except OSError:
        return False


@functools.cache
def unavailable_reason() -> str | None:
    """Why the backend cannot run here, or None when it can: it then uses the pinned
    iterator if there is one this process may open, else it loaded the program (the
    first call pays for the load, once per process)."""
    reason = _static_reason()
    if reason is not None:
        return reason
    if pinned_reason() is None:
        return None
    return _load()


def _load() -> str | None:
    from . import _bpfiter

    try:
        _bpfiter.load(OBJECT)
    except OSError as err:
        if err.errno in (errno.EPERM, errno.EACCES):
            return (
                "bpf() was denied: it needs root or CAP_BPF + CAP_PERFMON, and"
                " kernel.unprivileged_bpf_disabled or lockdown may forbid it"
            )
        return str(err.strerror or err)
    return None


def how_opened() -> str:
    """Whether the available backend uses a pinned iterator or loaded its own."""
    return "pinned" if pinned_reason() is None else "loaded"


def _read_pass() -> bytes:
    from . import _bpfiter  # made ready by unavailable_reason()

    return _bpfiter.read()


def _total_pages() -> int:
    """totalram_pages() + total_swap_pages, as proc_oom_score() weighs against."""
    meminfo = read_meminfo()
    return (meminfo.get("MemTotal", 0) + meminfo.get("SwapTotal", 0)) // max(_PAGE_KB, 1)


class BpfBackend:
    name: BackendName = "bpf"

    def __init__(self) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise BpfUnavailable(reason)
        from . import _bpfiter

        self._c = _bpfiter

    def all_mem_stats(self) -> list[MemStats]:
        return self._c.mem_stats(self._c.read(), MemStats, _total_pages(), _PAGE)

    def mem_stats(self, pid: int) -> MemStats:
        """From a pass; a pid the pass does not show as a process with memory (a thread
        id, a kernel thread, a zombie, no such process) is answered by /proc, which says
        which of these it is."""
        for stats in self.all_mem_stats():
            if stats.pid == pid:
                return stats
        return self._procfs().mem_stats(pid)

    def total_mem_stats(self) -> TotalMemStats:
        processes, reserved, committed, swap = self._c.totals(self._c.read(), _PAGE)
        meminfo = read_meminfo()
        return TotalMemStats(
            processes=processes,
            reserved_kb=reserved,
            committed_kb=committed,
            swap_kb=swap,
            committed_as_kb=meminfo.get("Committed_AS", 0),
            commit_limit_kb=meminfo.get("CommitLimit", 0),
            mem_total_kb=meminfo.get("MemTotal", 0),
            overcommit_memory=read_overcommit_memory(),
        )

    def oom_tasks(self) -> list[OomTask]:
        from .kernel import _cgroup_paths_by_id  # the kernel backend's: ids the same

        rows = self._c.oom_rows(self._c.read(), _total_pages(), _PAGE)
        paths = _cgroup_paths_by_id()
        return [
            OomTask(
                pid=pid,
                name=name,
                cgroup=paths.get(cgroup_id),
                rss_kb=rss_kb,
                swap_kb=swap_kb,
                pgtables_kb=pgtables_kb,
                oom_score=score,
                oom_score_adj=adj,
                unkillable=unkillable,
                oom_victim=victim,
                oom_origin=origin,
                exiting=exiting,
            )
            for (
                pid,
                name,
                cgroup_id,
                rss_kb,
                swap_kb,
                pgtables_kb,
                score,
                adj,
                unkillable,
                victim,
                origin,
                exiting,
            ) in rows
        ]

    def map_anonymous(self, size: int, huge: bool) -> tuple[int, mmap.mmap | None]:
        """As the procfs backend: a stock kernel has no tamalloc syscall."""
        return self._procfs().map_anonymous(size, huge)

    @staticmethod
    def _procfs() -> ProcfsBackend:
        return _procfs_instance()


@functools.cache
def _procfs_instance() -> ProcfsBackend:
    from .procfs import ProcfsBackend

    return ProcfsBackend()


class PinError(TamallocError):
    """`tamalloc bpf pin` or `unpin` cannot do what was asked; the message says why."""


def _pin_dir_problem(path: str) -> str | None:
    """Why an existing pin directory is not one to trust, or None: it must be a real
    directory (not a symlink) of root's that no one else may write."""
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        return f"{path} is not a directory"
    if info.st_uid != 0 or info.st_mode & 0o077:
        return f"{path} is not root's alone (owner {info.st_uid}, mode {info.st_mode & 0o7777:o})"
    return None


def _pins(directory: str) -> list[str]:
    """The names in ``directory`` that tamalloc pinned (any build's)."""
    return sorted(name for name in os.listdir(directory) if name.startswith(PIN_PREFIX))


def pin() -> str:
    """Load the iterator and pin it (root only) where every later process finds it;
    the pins of other builds go. Returns the path."""
    reason = _static_reason()
    if reason is not None:
        raise BpfUnavailable(reason)
    if os.geteuid() != 0:
        raise PinError("pinning needs root: the pin shows every process to whoever opens it")
    try:
        os.mkdir(PIN_DIR, 0o700)
    except FileExistsError:
        pass
    except OSError as err:
        raise PinError(
            f"cannot make {PIN_DIR}: {err.strerror} (is bpffs mounted at"
            f" {os.path.dirname(PIN_DIR)}? mount -t bpf bpf {os.path.dirname(PIN_DIR)})"
        ) from None
    problem = _pin_dir_problem(PIN_DIR)
    if problem is not None:
        raise PinError(f"refusing to pin: {problem}")
    reason = _load()
    if reason is not None:
        raise BpfUnavailable(reason)
    from . import _bpfiter

    name = pin_name()
    path = f"{PIN_DIR}/{name}"
    for old in _pins(PIN_DIR):  # ours too: a pin is replaced, not reused
        os.unlink(f"{PIN_DIR}/{old}")
    try:
        _bpfiter.pin(path)
        os.chmod(path, 0o600, follow_symlinks=False)
        _bpfiter.check_pinned(PIN_DIR, name)
    except OSError as err:
        raise PinError(f"cannot pin at {path}: {err.strerror or err}") from None
    return path


def unpin() -> list[str]:
    """Remove every tamalloc pin (any build's) and the directory when it is left
    empty. Returns the paths removed; none is not an error."""
    try:
        problem = _pin_dir_problem(PIN_DIR)
    except FileNotFoundError:
        return []
    except OSError as err:
        raise PinError(f"cannot look at {PIN_DIR}: {err.strerror}") from None
    if problem is not None:
        raise PinError(f"refusing to unpin: {problem}")
    removed = []
    try:
        for name in _pins(PIN_DIR):
            os.unlink(f"{PIN_DIR}/{name}")
            removed.append(f"{PIN_DIR}/{name}")
        if not os.listdir(PIN_DIR):
            os.rmdir(PIN_DIR)
    except OSError as err:
        raise PinError(f"cannot unpin: {err.strerror}: {err.filename}") from None
    return removed
