"""Machinery of the real-OOM scenarios (tests/oom/test_oom_kills.py).

A scenario builds cgroups below /sys/fs/cgroup, starts *members* (Python processes
that join a cgroup, set their oom_score_adj, allocate and touch an exact amount, then
sleep on stdin), asks for the prediction, then starts a *pusher* that allocates 1 MiB
at a time until the OOM domain's oom_kill counter moves. The pusher has oom_score_adj
-1000, so it never competes with the members, and it stops at the first kill, so the
kernel chooses from the state the prediction saw. The evidence of what the kernel chose
is gathered three ways: which members ended by SIGKILL (their wait status), the
domain's oom_kill increment, and the "Killed process N" lines of the kernel log.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

from _support import MiB, subprocess_env

REPO = Path(__file__).resolve().parents[2]
CGROUP_ROOT = Path("/sys/fs/cgroup")
# Guards only: a member or pusher that hangs must fail its test, never the whole boot.
READY_TIMEOUT = 300
OOM_TIMEOUT = 900

# A member: join the cgroup first (so that everything it allocates from then on is
# charged there), set its own oom_score_adj (the test may have given it -1000 by
# inheritance), allocate and touch exactly SIZE bytes, report "ready TGID TID" (TID is
# the thread that holds the memory: the one the kernel log names), then sleep on stdin.
#   plain:         tamalloc.alloc(SIZE), every byte written
#   zombie-leader: the same from a second thread, after the main thread left with
#                  SYS_exit: /proc/TGID/status has no VmRSS, the mm is the thread's
#   sparse:        SIZE / 4 KiB pages, one per 2 MiB of a MAP_NORESERVE mapping, so
#                  that each touched page costs a page-table page too (VmPTE ~ VmRSS)
MEMBER_SCRIPT = r"""
import ctypes, mmap, os, sys, threading, time
cgroup, adj, size, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if cgroup:
    with open(cgroup + "/cgroup.procs", "w") as f:
        f.write(str(os.getpid()))
with open("/proc/self/oom_score_adj", "w") as f:
    f.write(str(adj))
import tamalloc
held = []

def hold(leader_gone):
    if mode == "sparse":
        stride = 2 << 20
        span = size // mmap.PAGESIZE * stride
        m = mmap.mmap(-1, span, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000)
        for offset in range(0, span, stride):
            m[offset] = 1
        held.append(m)
    else:
        buf = tamalloc.alloc(size)
        ctypes.memset(buf.address, 0x5A, size)
        held.append(buf)
    while leader_gone is not None and not leader_gone():
        time.sleep(0.05)
    print("ready", os.getpid(), threading.get_native_id(), flush=True)
    sys.stdin.read()
    os._exit(0)

if mode == "zombie-leader":
    tgid = os.getpid()

    def gone():
        with open(f"/proc/{tgid}/task/{tgid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"

    threading.Thread(target=hold, args=(gone,)).start()
    # ctypes drops the GIL for the call: the holder thread runs on after this one is gone
    ctypes.CDLL(None).syscall(60, 0)  # SYS_exit: this thread only
else:
    hold(None)
"""

# The pusher: unkillable (-1000) and in the domain, it allocates STEP bytes at a time,
# touching each page, until the oom_kill (or given) counter of EVENTS (the domain's
# memory.events, or /proc/vmstat for a system-wide OOM) moves past its start; then it
# reports how far it got and sleeps until the test kills it. Stopping at the first kill
# means the kernel chooses from the state the prediction saw. It may choose again before
# the pusher can look: the charge that triggered the kill retries at once, and 6.1's
# exit_mmap() sets MMF_OOM_SKIP (the victim no longer holds the OOM killer back) before
# tlb_finish_mmu() and free_pgtables() uncharge its last batch of pages and its page
# tables; a zombie leader is skipped by the cgroup's task walk as soon as its last thread
# starts exiting. The retry then kills the next in line; the test checks that choice too.
PUSHER_SCRIPT = r"""
import mmap, os, sys
cgroup, events, step, key = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if cgroup:
    with open(cgroup + "/cgroup.procs", "w") as f:
        f.write(str(os.getpid()))
with open("/proc/self/oom_score_adj", "w") as f:
    f.write("-1000")

def kills():
    with open(events) as f:
        for line in f:
            name, value = line.split()
            if name == key:
                return int(value)
    raise SystemExit(f"no {key} in {events}")

if events == "/proc/vmstat":
    # System-wide, reclaim evicts the interpreter's own text (9p page cache) and the
    # pusher refaults it at every step: minutes of thrashing under emulation before the
    # OOM. Locked, its code stays; the others sleep. It changes no one's points.
    import ctypes
    ctypes.CDLL(None).mlockall(1)  # MCL_CURRENT
base = kills()
chunk = b"\x01" * step
print("ready", os.getpid(), flush=True)
sys.stdin.readline()
held = []
while kills() == base:
    m = mmap.mmap(-1, step, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    m.write(chunk)
    held.append(m)
print("stopped", len(held) * step >> 20, kills() - base, flush=True)
sys.stdin.read()
"""

KILLED = re.compile(r"(Out of memory|Memory cgroup out of memory): Killed process (\d+) \(")
CONSTRAINT = re.compile(r"oom-kill:constraint=(\w+),.*?(?:oom_memcg=(\S+?),)?task_memcg=")
INVOKED = re.compile(r" invoked oom-killer: gfp_mask=")


def read_events(path: Path) -> int:
    """The oom_kill count of a memory.events (or /proc/vmstat)."""
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    raise AssertionError(f"no oom_kill line in {path}")


def _readline(proc: subprocess.Popen[str], timeout: float, what: str) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"{what}: nothing within {timeout:.0f} s"
    line = proc.stdout.readline()
    assert line, f"{what}: exited {proc.wait()} before reporting"
    return line


@dataclass
class Cgroups:
    """The cgroups of one scenario below /sys/fs/cgroup/NAME; removed at close()."""

    name: str
    made: list[Path] = field(default_factory=list)

    def path(self, rel: str) -> Path:
        return CGROUP_ROOT / self.name / rel if rel else CGROUP_ROOT / self.name

    def domain(self, rel: str) -> str:
        """The cgroup2 path of REL as the kernel prints it ("/NAME/a/b")."""
        return "/" + str(self.path(rel).relative_to(CGROUP_ROOT))

    def make(self, rel: str, settings: dict[str, str]) -> Path:
        """Create REL (its parents must exist), memory.swap.max 0, then SETTINGS
        ({"memory.max": "64M"})."""
        path = self.path(rel)
        if path.parent != CGROUP_ROOT:
            # children get the memory controller only if the parent hands it down; it can
            # only while no process sits in the parent (cgroup v2's no-internal-process rule)
            (path.parent / "cgroup.subtree_control").write_text("+memory")
        path.mkdir()
        self.made.append(path)
        # the guest has no swap; 0 keeps a limit from counting any in (memcg's totalpages)
        if (path / "memory.swap.max").exists():
            (path / "memory.swap.max").write_text("0")
        for key, value in settings.items():
            (path / key).write_text(value)
        return path

    def close(self) -> None:
        for path in reversed(self.made):
            # a cgroup stays busy until its exited tasks are released: a moment
            for _ in range(200):
                try:
                    path.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)


@dataclass
class Member:
    label: str
    cgroup: str  # relative to the scenario's cgroup ("" for itself); unused system-wide
    mib: int
    adj: int = 0
    mode: str = "plain"
    proc: subprocess.Popen[str] | None = None
    pid: int = 0  # tgid
    tid: int = 0  # the thread holding the memory


def start_members(members: list[Member], groups: Cgroups | None) -> None:
    """Start every member at once (Python starts slowly in the guest), wait until each
    holds its memory, and check that it sits where it should with the adj it should."""
    for m in members:
        target = "" if groups is None else str(groups.path(m.cgroup))
        m.proc = subprocess.Popen(
            [sys.executable, "-c", MEMBER_SCRIPT, target, str(m.adj), str(m.mib * MiB), m.mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )
    for m in members:
        assert m.proc is not None
        words = _readline(m.proc, READY_TIMEOUT, f"member {m.label}").split()
        assert words[0] == "ready", words
        m.pid, m.tid = int(words[1]), int(words[2])
        assert m.pid == m.proc.pid
        if groups is not None:
            cgroup = Path(f"/proc/{m.pid}/cgroup").read_text().strip()
            assert cgroup == f"0::{groups.domain(m.cgroup)}", (m.label, cgroup)
        adj = Path(f"/proc/{m.pid}/oom_score_adj").read_text()
        assert int(adj) == m.adj, (m.label, adj)


def move_process(member: Member, cgroup: Path) -> None:
    """Move MEMBER's process to CGROUP as `echo TGID > cgroup.procs` does, and check
    where its threads ended up: cgroup_migrate_add_task() skips an exiting task, so a
    zombie leader stays where it was (and /proc/TGID/cgroup, which shows the leader's,
    with it) while the thread holding the memory moves."""
    before = Path(f"/proc/{member.pid}/cgroup").read_text()
    (cgroup / "cgroup.procs").write_text(str(member.pid))
    moved = f"0::/{cgroup.relative_to(CGROUP_ROOT)}\n"
    assert Path(f"/proc/{member.pid}/task/{member.tid}/cgroup").read_text() == moved
    leader = Path(f"/proc/{member.pid}/cgroup").read_text()
    assert leader == (before if member.mode == "zombie-leader" else moved), (before, leader)


@dataclass
class Pusher:
    proc: subprocess.Popen[str]
    pushed_mib: int = 0
    kills_seen: int = 0


def start_pusher(cgroup: Path | None, events: Path, key: str = "oom_kill") -> Pusher:
    """The pusher, stopping when the KEY count of EVENTS moves: "oom_kill", or "oom" (an
    OOM, whether or not it killed) for a scenario where the OOM kills nobody."""
    proc = subprocess.Popen(
        [sys.executable, "-c", PUSHER_SCRIPT, str(cgroup or ""), str(events), str(MiB), key],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    assert _readline(proc, READY_TIMEOUT, "pusher").startswith("ready")
    return Pusher(proc)


def push_until_kill(pusher: Pusher) -> None:
    assert pusher.proc.stdin is not None
    pusher.proc.stdin.write("go\n")
    pusher.proc.stdin.flush()
    words = _readline(pusher.proc, OOM_TIMEOUT, "pusher (no OOM kill?)").split()
    assert words[0] == "stopped", words
    pusher.pushed_mib, pusher.kills_seen = int(words[1]), int(words[2])


def finish(members: list[Member], pusher: Pusher | None) -> dict[str, int]:
    """End every process; the members' wait statuses (negative: killed by that signal).

    A member the OOM killer chose has SIGKILL pending already, which wins over the EOF
    it is given here: its status is -SIGKILL whatever order things happen in, and the
    others exit 0."""
    if pusher is not None:
        with contextlib.suppress(ProcessLookupError):
            pusher.proc.kill()
        pusher.proc.wait()
    for m in members:
        if m.proc is not None and m.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                m.proc.stdin.close()
    statuses = {}
    for m in members:
        if m.proc is not None:
            try:
                statuses[m.label] = m.proc.wait(timeout=READY_TIMEOUT)
            except subprocess.TimeoutExpired:
                m.proc.kill()
                statuses[m.label] = m.proc.wait()
                raise
    return statuses


def kill_all(members: list[Member], pusher: Pusher | None) -> None:
    """Teardown after a failure: nothing of the scenario may outlive it."""
    procs = [m.proc for m in members if m.proc is not None]
    if pusher is not None:
        procs.append(pusher.proc)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()


@dataclass
class OomReport:
    """One OOM-killer report: the process it chose and every kill it made."""

    chosen: int | None  # "oom-kill:...,pid=N": the process (a zombie leader's tgid)
    killed_tids: list[int]  # "Killed process N": the thread that had the mm
    constraint: str | None
    oom_memcg: str | None


@dataclass
class LogEvidence:
    reports: list[OomReport]
    lines: list[str]  # from the first report on, for the record

    @property
    def killed_tids(self) -> list[int]:
        return [t for r in self.reports for t in r.killed_tids]


def parse_log(lines: list[str]) -> LogEvidence:
    reports: list[OomReport] = []
    for line in lines:
        if INVOKED.search(line):
            reports.append(OomReport(None, [], None, None))
        elif reports and (m := CONSTRAINT.search(line)):
            reports[-1].constraint, reports[-1].oom_memcg = m.group(1), m.group(2)
            chosen = re.search(r",pid=(\d+),", line)
            reports[-1].chosen = int(chosen.group(1)) if chosen else None
        elif m := KILLED.search(line):
            # a kill outside any report would be a bug of this parser or of the kernel
            assert reports, f"kill without an OOM report: {line}"
            reports[-1].killed_tids.append(int(m.group(2)))
    start = next((i for i, line in enumerate(lines) if INVOKED.search(line)), len(lines))
    return LogEvidence(reports, lines[start:])


def load_run_py() -> ModuleType:
    """vm/run.py, for its kernel-log check (the SPLAT patterns and --allow-oom)."""
    vm = str(REPO / "vm")
    if vm not in sys.path:
        sys.path.insert(0, vm)  # run.py imports its sibling layout.py
    spec = importlib.util.spec_from_file_location("tamalloc_vm_run", REPO / "vm" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cli_command() -> list[str]:
    """The installed `tamalloc` script (.venv/bin/tamalloc), else the module."""
    script = Path(sys.executable).parent / "tamalloc"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tamalloc"]


def skip_unless_real_oom_kills() -> None:
    """Skip the calling test module unless this is `make vm-oom-test`'s guest: real OOM
    kills need a guest of their own (whose log check accepts OOM reports) with cgroup2's
    memory controller on."""
    if os.environ.get("TAMALLOC_OOM_KILLS") != "1":
        pytest.skip(
            "real OOM kills: run by `make vm-oom-test` (a guest of its own, whose log check "
            "accepts OOM reports)",
            allow_module_level=True,
        )
    if os.environ.get("TAMALLOC_IN_VM") != "1":
        pytest.skip(
            "real OOM kills need the QEMU guest (TAMALLOC_IN_VM unset): run by `make vm-oom-test`",
            allow_module_level=True,
        )
    controllers = CGROUP_ROOT / "cgroup.subtree_control"
    if not controllers.exists() or "memory" not in controllers.read_text().split():
        pytest.skip(
            f"cgroup2 with the memory controller enabled is absent ({controllers}): "
            "vm/guest-init.sh mounts it, on a kernel with CONFIG_MEMCG",
            allow_module_level=True,
        )
