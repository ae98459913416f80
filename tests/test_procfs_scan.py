"""The procfs backend's scan of every process: its C implementation (the one
all_mem_stats uses when built) and its pure-Python one (used when no compiler was
found at install) must give the same results."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tamalloc
from _support import (
    Child,
    MiB,
    assert_memory_matches_status,
    proc_status,
    read_int,
    subprocess_env,
)
from tamalloc.backends import procfs

try:
    from tamalloc.backends import _procscan
except ImportError:
    _procscan = None  # type: ignore[assignment]
from tamalloc.errors import SKIPPED_IN_SCANS
from tamalloc.models import MemStats

NEEDS_C = "the C scanner was not built: `make venv` builds it (needs gcc and Python headers)"

# A process that names itself (through /proc/self/comm), then waits on stdin.
NAMED_CHILD = """
import sys
with open("/proc/self/comm", "w") as f:
    f.write(sys.argv[1])
print("ready", flush=True)
sys.stdin.read()
"""


def c_scan(
    pids: list[int] | None, skip: frozenset[int] = SKIPPED_IN_SCANS, threads: int = 1
) -> list[MemStats]:
    """The C scan, on one thread unless told."""
    assert _procscan is not None, NEEDS_C
    return _procscan.scan(pids, MemStats, skip, threads)


@pytest.fixture
def named_child() -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def spawn(name: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", NAMED_CHILD, name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        return proc

    yield spawn
    for proc in procs:
        proc.kill()
        proc.wait()


def test_the_c_scanner_is_built() -> None:
    # The test environment is made by `make venv`, which compiles it; without it
    # all_mem_stats is ~40% slower and the comparisons below would test nothing.
    assert procfs._c_scan is not None, NEEDS_C


def test_both_scans_agree_on_known_processes(
    spawn_child: Callable[..., Child], named_child: Callable[[str], subprocess.Popen[str]]
) -> None:
    small, big = spawn_child(), spawn_child(reserve=512 << 20, touch=32 << 20)
    escaped = named_child("a\nb\\c")  # status prints it as "a\\nb\\\\c"
    zombie = zombie_process()
    pids = [small.pid, big.pid, escaped.pid, zombie.pid, 2**22 + 1]  # no such pid: > pid_max
    with open(f"/proc/{small.pid}/oom_score_adj", "w") as f:
        f.write("345")

    in_c, in_python = c_scan(pids), procfs._scan(pids)
    # Several threads take the records 16 at a time: each pid 40 times gives them all
    # some, and the result must keep the order of pids.
    threaded = c_scan(pids * 40, threads=3)
    zombie.wait()

    assert in_c == in_python
    assert threaded == in_c * 40
    assert [s.pid for s in in_c] == pids[:3]
    assert in_c[2].name == "a\nb\\c"
    assert in_c[0].oom_score_adj == 345
    for stats in in_c:
        assert_memory_matches_status(stats, stats.pid)
        assert stats.oom_score == read_int(f"/proc/{stats.pid}/oom_score")
        assert type(stats) is MemStats


def zombie_process() -> subprocess.Popen[bytes]:
    """An exited child not yet reaped: its status has no memory lines."""
    proc = subprocess.Popen(["true"])
    deadline = time.monotonic() + 30
    while proc_status(proc.pid)["State"][0] != "Z":
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.01)
    return proc


def test_both_scans_agree_on_every_process() -> None:
    pids = procfs.list_pids()
    in_c = {s.pid: s for s in c_scan(pids)}
    in_threads = {s.pid: s for s in c_scan(pids, threads=2)}
    in_python = {s.pid: s for s in procfs._scan(pids)}
    # Only a process that started, ended or exec'd (a new name: sh became sed) between
    # the scans may differ; a real disagreement would show in most of them.
    both = in_c.keys() & in_python.keys() & in_threads.keys()
    assert len(both) >= 0.9 * max(len(in_c), len(in_python), len(in_threads))
    differ = [
        pid
        for pid in both
        if not (
            in_c[pid].name == in_python[pid].name == in_threads[pid].name
            and in_c[pid].oom_score_adj
            == in_python[pid].oom_score_adj
            == in_threads[pid].oom_score_adj
        )
    ]
    assert len(differ) <= 0.05 * len(both), [(in_c[p], in_python[p]) for p in differ]


def test_all_mem_stats_uses_the_c_scanner(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[int] | None] = []
    real = procfs._c_scan
    assert real is not None, NEEDS_C

    def counting(
        pids: list[int] | None, cls: type[MemStats], skip: frozenset[int], *rest: object
    ) -> list[MemStats]:
        calls.append(pids)
        return real(pids, cls, skip, *rest)

    monkeypatch.setattr(procfs, "_c_scan", counting)
    pids = [s.pid for s in tamalloc.all_mem_stats(backend="procfs")]
    assert calls == [None]  # the C scan lists /proc itself
    assert os.getpid() in pids
    assert pids == sorted(pids)


def test_the_c_scan_of_none_lists_proc_as_list_pids_does(child: Child) -> None:
    from_list = {s.pid for s in c_scan(procfs.list_pids())}
    from_none = c_scan(None)
    pids = [s.pid for s in from_none]
    assert pids == sorted(pids)
    assert child.pid in pids and os.getpid() in pids
    # The same processes, bar those that started or ended between the two scans.
    assert len(from_list ^ set(pids)) <= 0.1 * len(from_list)
    assert_memory_matches_status(from_none[pids.index(child.pid)], child.pid)


def test_without_the_c_scanner_the_python_scan_is_used(
    child: Child, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(procfs, "_c_scan", None)
    stats = {s.pid: s for s in tamalloc.all_mem_stats(backend="procfs")}
    assert_memory_matches_status(stats[child.pid], child.pid)


def test_an_errno_outside_the_skip_set_raises() -> None:
    missing = 2**22 + 1
    with pytest.raises(OSError) as info:
        c_scan([missing], skip=frozenset())
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == f"/proc/{missing}"


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_with_threads_the_first_failure_in_pids_order_is_raised(threads: int) -> None:
    # Two pids that fail, in different blocks of 16: whichever thread meets which
    # first, the error names the earlier one, as one thread would.
    first, second, me = 2**22 + 1, 2**22 + 2, os.getpid()
    pids = [me] * 40 + [first] + [me] * 40 + [second] + [me] * 40
    with pytest.raises(OSError) as info:
        c_scan(pids, skip=frozenset(), threads=threads)
    assert info.value.errno == errno.ENOENT
    assert info.value.filename == f"/proc/{first}"


def test_all_mem_stats_translates_an_unexpected_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args: object) -> list[MemStats]:
        raise OSError(errno.EIO, "Input/output error", "/proc/7")

    monkeypatch.setattr(procfs, "_c_scan", failing)
    with pytest.raises(OSError, match=r"^\[Errno 5\] /proc/7: Input/output error"):
        tamalloc.all_mem_stats(backend="procfs")


@pytest.mark.parametrize(
    "args",
    [
        (["1"], MemStats, SKIPPED_IN_SCANS),  # a pid that is not an int
        ([1], dict, SKIPPED_IN_SCANS),  # not a tuple type
        (1, MemStats, SKIPPED_IN_SCANS),  # not a sequence
        ([1], MemStats, None),  # no errno set
    ],
)
def test_c_scan_rejects_bad_arguments(args: tuple[object, object, object]) -> None:
    assert procfs._c_scan is not None, NEEDS_C
    with pytest.raises(TypeError):
        procfs._c_scan(*args)  # type: ignore[arg-type]


# Layouts the fast regex does not expect: a 4.x status (with VmPMD, without RssAnon)
# and a kernel thread's (no memory lines at all).
STATUS_4_9 = (
    b"Name:\tbash\nState:\tS (sleeping)\nTgid:\t42\nVmPeak:\t   22000 kB\n"
    b"VmSize:\t   21000 kB\nVmLck:\t       0 kB\nVmPin:\t       0 kB\nVmHWM:\t    5000 kB\n"
    b"VmRSS:\t    4000 kB\nVmData:\t    1000 kB\nVmStk:\t     132 kB\nVmExe:\t    1000 kB\n"
    b"VmLib:\t    2000 kB\nVmPTE:\t      60 kB\nVmPMD:\t      12 kB\nVmSwap:\t      30 kB\n"
    b"Threads:\t1\n"
)
STATUS_KTHREAD = b"Name:\tkworker/0:1\nState:\tI (idle)\nTgid:\t9\nThreads:\t1\n"


def test_python_parser_copes_with_other_layouts() -> None:
    assert procfs._status_re().search(STATUS_4_9) is None
    assert procfs._memory_fields(STATUS_4_9) == (21000, 4000, 0, 0, 0, 30)
    assert procfs._memory_fields(STATUS_KTHREAD) is None


def test_python_parser_fast_and_slow_paths_agree_on_live_processes() -> None:
    checked = 0
    for pid in procfs.list_pids():
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                status = f.read()
        except OSError:
            continue
        assert procfs._memory_fields(status) == procfs._parse_status_slow(status)
        checked += 1
    assert checked > 0


# A zombie leader: the main thread calls pthread_exit at once; the other thread names
# itself, maps and touches argv[1] bytes, says "ready" and lives until stdin closes.
ZOMBIE_LEADER_C = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

static size_t size;

static void *worker(void *arg)
{
	volatile char *mem;
	char buf[64];
	size_t i;

	(void)arg;
	prctl(PR_SET_NAME, "zl-worker");
	mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		_exit(2);
	for (i = 0; i < size; i += 4096)
		mem[i] = 1;
	printf("ready\n");
	fflush(stdout);
	while (read(0, buf, sizeof(buf)) > 0)
		;
	_exit(0);
}

int main(int argc, char **argv)
{
	pthread_t thread;

	size = argc > 1 ? strtoull(argv[1], NULL, 0) : 0;
	if (pthread_create(&thread, NULL, worker, NULL))
		return 1;
	pthread_exit(NULL);
}
"""
ZOMBIE_LEADER_NAME = "zombie_leader"  # the executable's name: the leader's comm
ZOMBIE_LEADER_TOUCH = 64 * MiB


@pytest.fixture(scope="module")
def zombie_leader_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("needs a C compiler (gcc) to build the zombie-leader program")
    tmp = tmp_path_factory.mktemp("zombie_leader")
    source, exe = tmp / "zombie_leader.c", tmp / ZOMBIE_LEADER_NAME
    source.write_text(ZOMBIE_LEADER_C)
    subprocess.run([compiler, "-O2", "-Wall", "-pthread", "-o", str(exe), str(source)], check=True)
    return exe


@pytest.fixture
def zombie_leader(zombie_leader_exe: Path) -> Iterator[int]:
    """The pid of a running zombie leader whose live thread has 64 MiB resident."""
    proc = subprocess.Popen(
        [str(zombie_leader_exe), str(ZOMBIE_LEADER_TOUCH)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        deadline = time.monotonic() + 30
        while proc_status(proc.pid)["State"][0] != "Z":
            assert time.monotonic() < deadline, "the main thread never exited"
            time.sleep(0.01)
        yield proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def live_thread_status_kb(pid: int) -> dict[str, int]:
    """The kB fields of the status of the one thread of ``pid`` other than its leader."""
    (tid,) = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
    fields = {}
    with open(f"/proc/{pid}/task/{tid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if value.strip().endswith(" kB"):
                fields[key] = int(value.split()[0])
    return fields


def assert_zombie_leader_stats(stats: MemStats, pid: int) -> None:
    thread = live_thread_status_kb(pid)
    assert (stats.pid, stats.name) == (pid, ZOMBIE_LEADER_NAME)  # not the thread's name
    assert (
        stats.reserved_kb,
        stats.committed_kb,
        stats.anon_kb,
        stats.file_kb,
        stats.shmem_kb,
        stats.swap_kb,
    ) == (
        thread["VmSize"],
        thread["VmRSS"],
        thread["RssAnon"],
        thread["RssFile"],
        thread["RssShmem"],
        thread["VmSwap"],
    )
    assert stats.anon_kb >= ZOMBIE_LEADER_TOUCH // 1024
    assert stats.oom_score == read_int(f"/proc/{pid}/oom_score")
    assert stats.oom_score_adj == read_int(f"/proc/{pid}/oom_score_adj")


def test_a_zombie_leader_has_no_memory_lines_of_its_own(zombie_leader: int) -> None:
    # What the scans work around (checked on Linux 6.18): the leader's own status has
    # no Vm*/Rss* lines; Threads says the process lives on.
    status = proc_status(zombie_leader)
    assert "VmSize" not in status and "VmRSS" not in status
    assert int(status["Threads"]) == 2
    assert live_thread_status_kb(zombie_leader)["RssAnon"] >= ZOMBIE_LEADER_TOUCH // 1024


def test_both_scans_report_a_zombie_leader_with_its_memory(zombie_leader: int) -> None:
    in_c, in_python = c_scan([zombie_leader]), procfs._scan([zombie_leader])
    assert in_c == in_python
    assert c_scan([zombie_leader] * 40, threads=2) == in_c * 40
    assert len(in_c) == 1
    assert_zombie_leader_stats(in_c[0], zombie_leader)


def test_all_mem_stats_lists_a_zombie_leader(
    zombie_leader: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_c = {s.pid: s for s in tamalloc.all_mem_stats(backend="procfs")}
    monkeypatch.setattr(procfs, "_c_scan", None)
    in_python = {s.pid: s for s in tamalloc.all_mem_stats(backend="procfs")}
    assert_zombie_leader_stats(with_c[zombie_leader], zombie_leader)
    assert_zombie_leader_stats(in_python[zombie_leader], zombie_leader)


def test_mem_stats_of_a_zombie_leader_gives_its_memory(zombie_leader: int) -> None:
    assert_zombie_leader_stats(tamalloc.mem_stats(zombie_leader, backend="procfs"), zombie_leader)


def test_total_mem_stats_counts_a_zombie_leader(
    zombie_leader: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(procfs, "list_pids", lambda: [zombie_leader])
    total = tamalloc.total_mem_stats(backend="procfs")
    thread = live_thread_status_kb(zombie_leader)
    assert (total.processes, total.reserved_kb, total.committed_kb, total.swap_kb) == (
        1,
        thread["VmSize"],
        thread["VmRSS"],
        thread["VmSwap"],
    )
