"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MiB = 1 << 20
GiB = 1 << 30
T = TypeVar("T")


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for child Pythons: finds the package even when not installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env.pop("TAMALLOC_BACKEND", None)
    env.pop("NO_COLOR", None)
    env.update(extra)
    return env


# A child with a known allocation: RESERVE bytes mapped (MAP_NORESERVE), the first
# TOUCH bytes written, then it sits on stdin so its memory stays still.
CHILD_SCRIPT = """
import mmap, sys
reserve, touch = int(sys.argv[1]), int(sys.argv[2])
mem = mmap.mmap(-1, reserve, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000)
for offset in range(0, touch, mmap.PAGESIZE):
    mem[offset] = 1
print("ready", flush=True)
sys.stdin.read()
"""


# A child that names itself (prctl PR_SET_NAME: any bytes but NUL, 15 at most, as any
# process may), optionally raises its oom_score_adj (so that `tamalloc oom` lists it
# first), then sits on stdin.
NAMED_CHILD_SCRIPT = """
import ctypes, sys
name, adj = bytes.fromhex(sys.argv[1]), sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(15, ctypes.c_char_p(name), 0, 0, 0) != 0:  # PR_SET_NAME
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME)")
if adj:
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write(adj)
print("ready", flush=True)
sys.stdin.read()
"""


@contextmanager
def named_child(name: bytes, *, oom_score_adj: int | None = None) -> Iterator[int]:
    """A process called ``name`` (its comm) for the block; its pid."""
    adj = "" if oom_score_adj is None else str(oom_score_adj)
    proc = subprocess.Popen(
        [sys.executable, "-c", NAMED_CHILD_SCRIPT, name.hex(), adj],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n", "the child could not rename itself"
        with open(f"/proc/{proc.pid}/comm", "rb") as f:
            assert f.read() == name + b"\n"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@dataclass
class Child:
    proc: subprocess.Popen[str]
    reserve: int
    touch: int

    @property
    def pid(self) -> int:
        return self.proc.pid


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def status_kb(pid: int) -> dict[str, int]:
    """The kB fields of /proc/PID/status as ints."""
    return {k: int(v.split()[0]) for k, v in proc_status(pid).items() if v.endswith(" kB")}


def _kernel_version() -> tuple[int, int]:
    found = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(found[1]), int(found[2])) if found else (0, 0)


KERNEL_VERSION = _kernel_version()
_CPUS = os.cpu_count() or 1
# The slack one RSS counter of the bpf backend may have against /proc/PID/status, in kB.
# Since 6.2 each RSS counter is a percpu_counter; the iterator reads its approximate
# count, as get_mm_counter() and so /proc/PID/oom_score do. Since 6.16 status shows the
# per-CPU sum (get_mm_counter_sum()), which a BPF program cannot compute (docs/bpf.md):
# each CPU may hold back less than percpu_counter_batch = max(32, 2 * CPUs) pages. Up
# to 6.15 both read the same counter (on <= 6.1, the same atomic): exactly equal.
BPF_STATUS_SLACK_KB = (
    _CPUS * max(32, 2 * _CPUS) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    if KERNEL_VERSION >= (6, 16)
    else 0
)


def status_slack_kb(backend: str | None) -> int:
    """How far ``backend``'s RSS counters may be from /proc/PID/status's (0: exactly)."""
    return BPF_STATUS_SLACK_KB if backend == "bpf" else 0


def assert_memory_matches_status(
    record: object, pid: int, status: dict[str, int] | None = None, backend: str | None = None
) -> None:
    """The memory fields of a MemStats or of a raw tamalloc_mem_stats record (they share
    the field names) against /proc/PID/status (read now, or ``status`` as read): exactly,
    or within ``status_slack_kb(backend)`` for each RSS counter (three for VmRSS)."""
    status = status_kb(pid) if status is None else status
    got = {name: getattr(record, name) for name in _STATUS_FIELDS}
    want = {name: status[key] for name, key in _STATUS_FIELDS.items()}
    slack = status_slack_kb(backend)
    if slack:
        assert got["reserved_kb"] == want["reserved_kb"]
        for name in _STATUS_FIELDS:
            within = 3 * slack if name == "committed_kb" else slack
            assert abs(got[name] - want[name]) <= within, (name, got[name], want[name])
    else:
        assert got == want
    assert got["committed_kb"] == got["anon_kb"] + got["file_kb"] + got["shmem_kb"]


def assert_rss_kb(got: int, want: int, backend: str | None, counters: int = 1) -> None:
    """An RSS figure (the sum of ``counters`` counters) against /proc's: exactly, or
    within the bpf backend's slack on 6.16+ (see BPF_STATUS_SLACK_KB)."""
    assert abs(got - want) <= counters * status_slack_kb(backend), (got, want)


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    """Our child ``pid`` stopped (SIGSTOP) for the block: it runs no instruction, so
    it neither touches nor allocates memory meanwhile."""
    os.kill(pid, signal.SIGSTOP)
    try:
        _, status = os.waitpid(pid, os.WUNTRACED)  # returns once it is stopped
        assert os.WIFSTOPPED(status), status
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def read_between_equal_statuses(pid: int, read: Callable[[], T]) -> tuple[T, dict[str, int]]:
    """``read()`` and the kB fields of /proc/PID/status that held before and after it,
    for an exact comparison. Call it on a stopped process: even then the kernel may
    move its memory (reclaim, swap, khugepaged), so a read whose surrounding statuses
    differ is done again, a bounded number of times."""
    for _ in range(100):
        before = status_kb(pid)
        value = read()
        after = status_kb(pid)
        if before == after:
            return value, after
    raise AssertionError(f"process {pid}'s memory kept changing while stopped")


_STATUS_FIELDS = {
    "reserved_kb": "VmSize",
    "committed_kb": "VmRSS",
    "anon_kb": "RssAnon",
    "file_kb": "RssFile",
    "shmem_kb": "RssShmem",
    "swap_kb": "VmSwap",
}


def meminfo_kb() -> dict[str, int]:
    """/proc/meminfo as {field: value}, read here rather than through the package."""
    with open("/proc/meminfo") as f:
        return {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in f)}


def read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read())


def run_python(
    code: str, *, timeout: float = 60, check: bool = False, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -c CODE`` in a new interpreter (module state fresh) with this work
    tree's package, output captured as text."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        env=subprocess_env(**env),
        stdin=subprocess.DEVNULL,
    )


# Run as root after the child's imports (nobody may not read the interpreter's files):
# a private mount namespace with /proc mounted hidepid=2, then user nobody.
_HIDEPID_NOBODY = """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, MS_REC, MS_PRIVATE = 0x20000, 1 << 14, 1 << 18
if libc.unshare(CLONE_NEWNS) != 0:
    print(json.dumps({"skip": os.strerror(ctypes.get_errno())})); raise SystemExit
if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
    raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
if libc.mount(b"proc", b"/proc", b"proc", 0, b"hidepid=2") != 0:
    raise OSError(ctypes.get_errno(), "mount -t proc -o hidepid=2")
os.setgroups([]); os.setgid(65534); os.setuid(65534)
"""


def run_as_nobody_under_hidepid(imports: str, body: str, **env: str) -> Any:
    """What ``body`` prints as JSON when run as nobody under a /proc mounted hidepid=2
    (``imports`` run first, as root); skips where no mount namespace can be had."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a private mount namespace (runs in `make vm-test`)")
    run = run_python(imports + _HIDEPID_NOBODY + body, timeout=120, **env)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    if isinstance(seen, dict) and "skip" in seen:
        pytest.skip(f"unshare(CLONE_NEWNS) refused here: {seen['skip']}")
    return seen


def run_cli(
    *args: str, timeout: float = 60, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m tamalloc ARGS`` in a subprocess, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "tamalloc", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=subprocess_env(**env),
        stdin=subprocess.DEVNULL,
    )


def assert_clean_error(result: subprocess.CompletedProcess[str], status: int) -> str:
    """Exit ``status`` with exactly one line on stderr and no traceback."""
    assert result.returncode == status, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("tamalloc: error: ")
    return lines[0]


def run_on_pty(*args: str, columns: int = 160, **env: str) -> str:
    """Run the command with a colour terminal of ``columns`` columns as stdout; what it
    wrote there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    # TERM is set because the caller's may be "dumb" (it is in the VM), which means
    # no colour whatever stdout is.
    env = {"TERM": "xterm-256color", **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tamalloc", *args],
        stdout=slave,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=subprocess_env(COLUMNS=str(columns), LINES="50", **env),
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    return b"".join(chunks).decode(errors="replace")


class KernelLog:
    """The kernel log records written since construction (via /dev/kmsg)."""

    def __init__(self) -> None:
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def new_lines(self) -> list[str]:
        lines = []
        while True:
            try:
                record = os.read(self.fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:  # records overwritten while we were away
                continue
            if not record:
                break
            lines.append(record.decode(errors="replace").split(";", 1)[-1].rstrip("\n"))
        return lines

    def close(self) -> None:
        os.close(self.fd)


# A process held at PTRACE_EVENT_EXIT: argv CGROUP SIZE; the child joins CGROUP (if not
# empty), touches SIZE bytes, stops for its tracer (this script) and calls exit_group();
# do_exit() stops it at PTRACE_EVENT_EXIT with the group exit begun (SIGNAL_GROUP_EXIT,
# not yet PF_EXITING) and its mm still held: task_will_free_mem() is true, as the OOM
# killer would find it. The tracer prints "ready CHILD", lets it finish on EOF and
# prints "exited STATUS".
EXIT_STOP_SCRIPT = r"""
import ctypes, os, signal, sys
cgroup, size = sys.argv[1], int(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
TRACEME, CONT, SETOPTIONS, O_TRACEEXIT, EVENT_EXIT = 0, 7, 0x4200, 0x40, 6
child = os.fork()
if child == 0:
    if cgroup:
        with open(cgroup + "/cgroup.procs", "w") as f:
            f.write(str(os.getpid()))
    if size:
        import tamalloc
        buf = tamalloc.alloc(size)
        ctypes.memset(buf.address, 0x5A, size)
    libc.ptrace(TRACEME, 0, None, None)
    os.kill(os.getpid(), signal.SIGSTOP)
    os._exit(0)
_, status = os.waitpid(child, 0)
assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGSTOP, status
assert libc.ptrace(SETOPTIONS, child, None, O_TRACEEXIT) == 0, ctypes.get_errno()
assert libc.ptrace(CONT, child, None, None) == 0, ctypes.get_errno()
_, status = os.waitpid(child, 0)
assert os.WIFSTOPPED(status) and status >> 8 == signal.SIGTRAP | EVENT_EXIT << 8, status
print("ready", child, flush=True)
sys.stdin.read()
libc.ptrace(CONT, child, None, None)
_, status = os.waitpid(child, 0)
print("exited", os.waitstatus_to_exitcode(status), flush=True)
"""
