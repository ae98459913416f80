"""The /proc backend: works on any Linux, reads as few files per process as it can.

Per process it reads ``status`` (one read gives the name and every memory field:
VmSize, VmRSS, RssAnon, RssFile, RssShmem, VmSwap), then ``oom_score`` and
``oom_score_adj``. ``statm`` would be smaller but lacks the anon/file/shmem split and
swap, and ``comm`` is already in ``status``, so three reads is the minimum that fills
every MemStats field. Kernel threads are recognised by a ``status`` without VmSize and
cost one read. A zombie leader (main thread gone, other threads alive) has no memory
lines either but says Threads > 1: its memory is read from a live thread's status.

The scan of every process runs in C (``_procscan``, from ``_procscan_c/``: 9 system
calls a process, on one thread per CPU when there are many processes) where that was
compiled at install, and in ``_scan`` here otherwise; both give the same results.
"""

from __future__ import annotations

import errno
import mmap
import os
import re

from ..errors import (
    SKIPPED_IN_SCANS,
    NoSuchProcess,
    exception_for_errno,
    raise_errno,
    translate_os_errors,
)
from ..models import MemStats, OomTask, TotalMemStats
from ..oom_score import OOM_SCORE_ADJ_MIN, badness, proc_score
from ..process_visibility import procfs_hides_nothing
from ..sizes import parse_size
from .base import BackendName

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

_c_scan: Callable[..., list[MemStats]] | None
try:
    from ._procscan import KEPT_BYTES_DEFAULT, forget_in_child
    from ._procscan import scan as _c_scan
except ImportError:  # installed without a C compiler: _scan below does the same
    _c_scan = None
    KEPT_BYTES_DEFAULT = 0  # nothing is kept without it
else:
    # The fds were closed in the child by the C scan's own pthread_atfork handler;
    # this frees the memory of scans that other threads had running at the fork.
    os.register_at_fork(after_in_child=forget_in_child)

# The kernel memory (bytes) the files kept open between scans may pin: about 9.5 KiB
# a process (see the README), 8 MiB unless set here or by the backend's argument.
KEPT_BYTES_ENV = "TAMALLOC_KEPT_BYTES"

_PROC = "/proc"
_full_scans = 0  # all_mem_stats() calls in this process
_READ_CHUNK = 4096
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC

# The patterns are compiled where first used (by re's own cache): compiling them all
# with the module was half a millisecond of every command's start-up, and the C scan
# uses none of them.
#
# The status fields MemStats needs, in its order. _status_re() expects the layout every
# kernel since 4.15 prints (one regex is several times faster than splitting lines);
# _parse_status_slow copes with any other.
_STATUS_KEYS = (b"VmSize", b"VmRSS", b"RssAnon", b"RssFile", b"RssShmem", b"VmSwap")
_LINE = rb"[^\n]*\n"
_STATUS = (
    rb"\nVmSize:\s*(\d+) kB\n"
    + _LINE * 3
    + rb"VmRSS:\s*(\d+) kB\nRssAnon:\s*(\d+) kB\nRssFile:\s*(\d+) kB\nRssShmem:\s*(\d+) kB\n"
    + _LINE * 5
    + rb"VmSwap:\s*(\d+)"
)
_TGID = rb"\nTgid:\s*(\d+)"
_THREADS = rb"\nThreads:\s*(\d+)"
_UID = rb"\nUid:\s*(\d+)\s+(\d+)"
# status escapes "\n" and "\\" in Name (fs/proc/array.c); comm itself is raw bytes.
_NAME_ESCAPE = r"\\([n\\])"


def _status_re() -> re.Pattern[bytes]:
    return re.compile(_STATUS)


def _read_rest(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _read(path: str) -> bytes:
    fd = os.open(path, _OPEN_FLAGS)
    try:
        data = os.read(fd, _READ_CHUNK)
        if len(data) == _READ_CHUNK:  # rare: e.g. a status with a very long Groups line
            data += _read_rest(fd)
        return data
    finally:
        os.close(fd)


def _name(status: bytes) -> str:
    name = status[6 : status.find(b"\n")].decode("utf-8", "replace")  # after b"Name:\t"
    return _unescape_name(name) if "\\" in name else name


def _unescape_name(name: str) -> str:
    return re.sub(_NAME_ESCAPE, lambda m: "\n" if m[1] == "n" else "\\", name)


# (reserved, committed, anon, file, shmem, swap) in kB
_Memory = tuple[int, int, int, int, int, int]


def _parse_status_slow(status: bytes) -> _Memory | None:
    fields: dict[bytes, int] = {}
    for line in status.split(b"\n"):
        key, sep, value = line.partition(b":")
        if sep and key in _STATUS_KEYS:
            fields[key] = int(value.split()[0])
    if b"VmSize" not in fields:
        return None
    reserved, committed, anon, file_, shmem, swap = (fields.get(k, 0) for k in _STATUS_KEYS)
    return reserved, committed, anon, file_, shmem, swap


def _memory_fields(status: bytes) -> _Memory | None:
    """The memory fields of a status; None for no mm (a kernel thread or a zombie has
    no VmSize)."""
    match = _status_re().search(status)
    if match is None:
        return _parse_status_slow(status)
    reserved, committed, anon, file_, shmem, swap = map(int, match.groups())
    return reserved, committed, anon, file_, shmem, swap


def _leaderless_memory(base: str, pid: int, status: bytes) -> _Memory | None:
    """The memory of a process whose main thread is gone while others live (a zombie
    leader, after pthread_exit): its own status has no memory lines but says Threads
    > 1, and the first other thread in ``task/`` whose status has them gives them (the
    mm is the process's). None when no live thread has any. Only statuses without
    memory lines come here, so the common path pays nothing. Mirrors ``read_leaderless``
    in _procscan_c/scan.c: listing ``task/`` may raise OSError, a thread that exits
    meanwhile is passed over."""
    found = _live_thread_status(base, pid, status)
    return None if found is None else found[1]


def _live_thread_status(base: str, pid: int, status: bytes) -> tuple[bytes, _Memory] | None:
    """For a zombie leader (see _leaderless_memory): the status of a live thread, which
    carries the process's memory lines, and those lines parsed."""
    threads = re.search(_THREADS, status)
    if threads is None or int(threads[1]) < 2:
        return None
    for name in os.listdir(base + "task"):
        if not name.isdigit() or int(name) == pid:
            continue
        try:
            thread_status = _read(f"{base}task/{name}/status")
        except OSError:
            continue
        memory = _memory_fields(thread_status)
        if memory is not None:
            return thread_status, memory
    return None


# What oom_badness() weighs, from status: VmRSS, VmSwap, VmPTE (kB).
_OOM_KEYS = (b"VmRSS", b"VmSwap", b"VmPTE")
_CGROUP2_PREFIX = b"0::"
PROC_PID_INIT_INO = 0xEFFFFFFC  # include/linux/proc_ns.h: the init pid namespace's inode
_PF_KTHREAD = 0x00200000


def _oom_fields(status: bytes) -> tuple[int, int, int] | None:
    """VmRSS, VmSwap, VmPTE; None without VmRSS: no mm (a kernel thread, or a zombie
    leader whose memory lines are in a live thread's status)."""
    values: dict[bytes, int] = {}
    for line in status.split(b"\n"):
        key, sep, value = line.partition(b":")
        if sep and key in _OOM_KEYS:
            values[key] = int(value.split()[0])
    if b"VmRSS" not in values:
        return None
    return values[b"VmRSS"], values.get(b"VmSwap", 0), values.get(b"VmPTE", 0)


def _cgroup2_path(text: bytes) -> str | None:
    """The cgroup v2 path of a /proc/PID/cgroup ("0::/a/b"); None without that line."""
    for line in text.split(b"\n"):
        if line.startswith(_CGROUP2_PREFIX):
            return line[len(_CGROUP2_PREFIX) :].decode("utf-8", "replace") or "/"
    return None


def proc_is_init_pid_ns() -> bool:
    """Whether this /proc shows the init pid namespace, where pid 1 is the global init
    the OOM killer never picks (a container's pid 1 is killable). Its pid 1's namespace
    inode says so when readable; else kthreadd, a kernel thread seen only there, as pid 2.
    """
    try:
        return os.stat(f"{_PROC}/1/ns/pid").st_ino == PROC_PID_INIT_INO
    except OSError:
        pass
    try:
        stat = _read(f"{_PROC}/2/stat")
    except OSError:
        return False
    after_comm = stat[stat.rfind(b")") + 2 :].split()
    return len(after_comm) > 6 and bool(int(after_comm[6]) & _PF_KTHREAD)


def _scan(
    pids: list[int],
    *,
    _open: Callable[..., int] = os.open,
    _read_fd: Callable[[int, int], bytes] = os.read,
    _close: Callable[[int], None] = os.close,
    _search: Callable[[bytes], re.Match[bytes] | None] | None = None,
    _new: Callable[..., MemStats] = tuple.__new__,
) -> list[MemStats]:
    """MemStats of every process in ``pids`` that has memory, skipping those that
    vanish or hide during the scan: ``_procscan.scan`` in Python, for installs without
    it. One status and two OOM reads a process are the floor, so the rest is kept to
    as few Python operations as it can be (reads inlined, globals bound as defaults,
    the tuple built without the NamedTuple's Python-level __new__): each counts
    measurably at ~20 µs a process."""
    result: list[MemStats] = []
    append = result.append
    search = _search or _status_re().search
    for pid in pids:
        base = f"{_PROC}/{pid}/"
        try:
            fd = _open(base + "status", _OPEN_FLAGS)
            try:
                status = _read_fd(fd, _READ_CHUNK)
                if len(status) == _READ_CHUNK:
                    status += _read_rest(fd)
            finally:
                _close(fd)
            match = search(status)
            if match is not None:
                reserved, committed, anon, file_, shmem, swap = map(int, match.groups())
            else:
                memory = _parse_status_slow(status) or _leaderless_memory(base, pid, status)
                if memory is None:
                    continue  # a kernel thread or zombie: no memory to report
                reserved, committed, anon, file_, shmem, swap = memory
            fd = _open(base + "oom_score", _OPEN_FLAGS)
            try:
                oom_score = int(_read_fd(fd, 32))
            finally:
                _close(fd)
            fd = _open(base + "oom_score_adj", _OPEN_FLAGS)
            try:
                oom_score_adj = int(_read_fd(fd, 32))
            finally:
                _close(fd)
        except OSError as err:
            _skip_vanished(err, pid)
            continue
        name = status[6 : status.find(b"\n")].decode("utf-8", "replace")  # after "Name:\t"
        append(
            _new(
                MemStats,
                (
                    pid,
                    _unescape_name(name) if "\\" in name else name,
                    reserved,
                    committed,
                    committed / reserved * 100 if reserved else 0.0,  # models.committed_pct
                    anon,
                    file_,
                    shmem,
                    swap,
                    oom_score,
                    oom_score_adj,
                ),
            )
        )
    return result


def _skip_vanished(err: OSError, pid: int) -> None:
    """During a scan, a process that exited (or is hidden from us) is left out; any
    other error is raised as the package's exception."""
    if err.errno not in SKIPPED_IN_SCANS:
        raise exception_for_errno(err.errno, pid=pid) if err.errno else err from err


def list_pids() -> list[int]:
    """Process ids in /proc (thread-group ids only: threads are not listed)."""
    return sorted(int(name) for name in os.listdir(_PROC) if name.isdigit())


def process_uid(pid: int) -> int:
    """Effective uid of ``pid`` (as ``ps -u`` filters), from its status."""
    with translate_os_errors(pid=pid):
        match = re.search(_UID, _read(f"{_PROC}/{pid}/status"))
    if match is None:
        raise NoSuchProcess(pid)
    return int(match[2])


def kept_bytes_budget(value: int | str | None = None) -> int:
    """The byte budget of kept files: ``value`` (bytes, or a size such as "8M"; 0
    keeps nothing), else ``$TAMALLOC_KEPT_BYTES``, else the C scan's default.
    Raises ValueError for anything else."""
    origin = "kept_bytes"
    if value is None:
        value = os.environ.get(KEPT_BYTES_ENV, "").strip() or None
        origin = f"${KEPT_BYTES_ENV}"
    if value is None:
        return KEPT_BYTES_DEFAULT
    if value in (0, "0"):
        return 0
    try:
        return parse_size(value)
    except ValueError as err:
        raise ValueError(f"{origin}: {err}") from None


class ProcfsBackend:
    """``kept_bytes``: the budget of the files a repeated full scan keeps open (see
    :func:`kept_bytes_budget`), decided here so that a bad one is an error at once
    (the CLI resolves its backend before running)."""

    name: BackendName = "procfs"

    def __init__(self, kept_bytes: int | str | None = None) -> None:
        self.kept_bytes = kept_bytes_budget(kept_bytes)

    def mem_stats(self, pid: int) -> MemStats:
        base = f"{_PROC}/{pid}/"
        with translate_os_errors(pid=pid):
            status = _read(base + "status")
            memory = _memory_fields(status) or _leaderless_memory(base, pid, status)
            oom_score = int(_read(base + "oom_score"))
            oom_score_adj = int(_read(base + "oom_score_adj"))
            # A thread id stands for its process, as in the syscall: the process's id
            # and its (the leader's) name; memory and OOM figures are per process.
            found = re.search(_TGID, status)
            tgid = int(found[1]) if found else pid
            name = _name(status if tgid == pid else _read(f"{_PROC}/{tgid}/status"))
        # No memory fields: a kernel thread or zombie, which has no memory but is a
        # process (a zombie leader's memory comes from a live thread, its name stays the
        # leader's).
        memory = memory or (0, 0, 0, 0, 0, 0)
        return MemStats.build(tgid, name, *memory, oom_score, oom_score_adj)

    def all_mem_stats(self) -> list[MemStats]:
        global _full_scans
        if _c_scan is None:
            return _scan(list_pids())
        # A caller that scans again (the exporter, a loop) gets the C scan's files
        # kept open from one scan to the next, about a third less CPU time each;
        # one that scans once keeps none. Only where hidepid hides nothing: a kept
        # file must show no more than opening it anew would.
        hold = _full_scans > 0 and procfs_hides_nothing()
        _full_scans += 1
        try:
            # None: lists /proc
            return _c_scan(None, MemStats, SKIPPED_IN_SCANS, 0, hold, self.kept_bytes)
        except OSError as err:
            raise exception_for_errno(err.errno or errno.EIO, what=err.filename) from err

    def total_mem_stats(self) -> TotalMemStats:
        processes = reserved = committed = swap = 0
        for pid in list_pids():
            base = f"{_PROC}/{pid}/"
            try:
                status = _read(base + "status")
                memory = _memory_fields(status) or _leaderless_memory(base, pid, status)
            except OSError as err:
                _skip_vanished(err, pid)
                continue
            if memory is not None:
                processes += 1
                reserved += memory[0]
                committed += memory[1]
                swap += memory[5]
        # Imported here, as in oom_tasks: the module (and the six records of the
        # system-wide figures it loads) is half a millisecond that `tamalloc stats`,
        # which calls neither, would pay at every start.
        from ..system import read_meminfo, read_overcommit_memory

        meminfo = read_meminfo()
        overcommit = read_overcommit_memory()
        return TotalMemStats(
            processes=processes,
            reserved_kb=reserved,
            committed_kb=committed,
            swap_kb=swap,
            committed_as_kb=meminfo.get("Committed_AS", 0),
            commit_limit_kb=meminfo.get("CommitLimit", 0),
            mem_total_kb=meminfo.get("MemTotal", 0),
            overcommit_memory=overcommit,
        )

    def oom_tasks(self) -> list[OomTask]:
        """Every user process as oom_badness() weighs it. Plain Python: only `tamalloc
        oom` needs it. Unkillable also covers MMF_OOM_SKIP and vfork, which /proc shows
        only as an oom_score of 0 where the badness of the fields read says more."""
        from ..system import read_meminfo

        meminfo = read_meminfo()
        page_kb = max(mmap.PAGESIZE // 1024, 1)
        total_pages = (meminfo.get("MemTotal", 0) + meminfo.get("SwapTotal", 0)) // page_kb
        init_ns = proc_is_init_pid_ns()
        tasks = []
        for pid in list_pids():
            base = f"{_PROC}/{pid}/"
            try:
                status = _read(base + "status")
                fields = _oom_fields(status)
                if fields is None:
                    found = _live_thread_status(base, pid, status)
                    fields = _oom_fields(found[0]) if found is not None else None
                if fields is None:
                    continue  # a kernel thread or zombie: no mm, never an OOM candidate
                oom_score = int(_read(base + "oom_score"))
                adj = int(_read(base + "oom_score_adj"))
                cgroup = _cgroup2_path(_read(base + "cgroup"))
            except OSError as err:
                _skip_vanished(err, pid)
                continue
            rss, swap, pte = fields
            expected = proc_score(
                badness(rss // page_kb, swap // page_kb, pte // page_kb, adj, total_pages),
                total_pages,
            )
            unkillable = (
                adj == OOM_SCORE_ADJ_MIN
                or (pid == 1 and init_ns)
                or (oom_score == 0 and expected > 0)
            )
            tasks.append(
                OomTask(
                    pid=pid,
                    name=_name(status),
                    cgroup=cgroup,
                    rss_kb=rss,
                    swap_kb=swap,
                    pgtables_kb=pte,
                    oom_score=oom_score,
                    oom_score_adj=adj,
                    unkillable=unkillable,
                    oom_victim=False,
                )
            )
        return tasks

    def map_anonymous(self, size: int, huge: bool) -> tuple[int, mmap.mmap | None]:
        """mmap private anonymous MAP_NORESERVE; huge: 2 MiB aligned + MADV_HUGEPAGE."""
        # Imported here, not with the module: ctypes was a fifth of a bare Python's
        # start-up in every command that scans, and alloc() calls this only for huge
        # buffers (a plain one is made in buffer.py), where a µs is nothing.
        import ctypes

        from .. import _libc

        if not huge:
            # The mmap module is the cheapest way to call mmap(2) from Python (ctypes
            # costs ~1 µs a call more); the object then owns the mapping, and closing
            # it is the munmap(2).
            try:
                owner = mmap.mmap(-1, size, flags=_libc.MAP_PRIVATE_ANON_NORESERVE)
            except OSError as exc:  # not a `with` block: this path is timed in µs
                raise_errno(exc.errno or errno.ENOMEM, what=f"cannot allocate {size} bytes")
            return ctypes.addressof(ctypes.c_char.from_buffer(owner)), owner
        # Over-map by one huge page so that an aligned start fits, then trim both ends.
        length = _libc.page_round_up(size)
        span = length + _libc.HUGE_PAGE_SIZE
        raw: int | None = _libc.mmap(
            None, span, _libc.PROT_READ_WRITE, _libc.MAP_PRIVATE_ANON_NORESERVE, -1, 0
        )
        if raw is None or raw == _libc.MAP_FAILED:
            raise_errno(ctypes.get_errno(), what=f"cannot allocate {size} bytes")
        start = _libc.page_round_up(raw, _libc.HUGE_PAGE_SIZE)
        head, tail = start - raw, raw + span - (start + length)
        # Trimming splits the mapping and can fail at the map count limit (ENOMEM):
        # then give everything back rather than return a half-trimmed mapping.
        if head and _libc.munmap(raw, head):
            err = ctypes.get_errno()
            _libc.munmap(raw, span)
            raise_errno(err, what=f"cannot allocate {size} bytes")
        if tail and _libc.munmap(start + length, tail):
            err = ctypes.get_errno()
            _libc.munmap(start, length + tail)  # the head is gone already
            raise_errno(err, what=f"cannot allocate {size} bytes")
        # Best effort, as the syscall's flag: without THP support madvise says EINVAL
        # and the memory is still valid, just in small pages.
        _libc.madvise(start, length, _libc.MADV_HUGEPAGE)
        return start, None
