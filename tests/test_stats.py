"""mem_stats / all_mem_stats / total_mem_stats on each backend, checked against /proc
and psutil with a child process whose allocation is known."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest

import tamalloc
from _support import (
    Child,
    MiB,
    assert_memory_matches_status,
    assert_rss_kb,
    meminfo_kb,
    proc_status,
    read_between_equal_statuses,
    read_int,
    stopped,
)
from tamalloc import MemStats, NoSuchProcess
from tamalloc.models import FIELD_NAMES


def test_child_matches_proc_status(backend: str, child: Child) -> None:
    # issue 16, item 12: the child, still running, moved its memory between the two
    # reads (it was reading stdin). Stopped, and read between two equal statuses, it
    # is compared exactly.
    with stopped(child.pid):
        stats, status = read_between_equal_statuses(
            child.pid, lambda: tamalloc.mem_stats(child.pid, backend=backend)
        )
    assert stats.pid == child.pid
    assert stats.name == proc_status(child.pid)["Name"]
    assert_memory_matches_status(stats, child.pid, status, backend)
    assert stats.committed_pct == pytest.approx(stats.committed_kb / stats.reserved_kb * 100)


def test_a_busy_child_matches_proc_status_when_stopped(backend: str) -> None:
    # The same comparison for a child whose memory grows all the time: read as the
    # test above reads, it matches exactly; read while it runs, it would not.
    busy = subprocess.Popen([sys.executable, "-c", _BUSY_CHILD], stdout=subprocess.PIPE)
    try:
        assert busy.stdout is not None and busy.stdout.readline() == b"ready\n"
        for _ in range(20):
            with stopped(busy.pid):
                stats, status = read_between_equal_statuses(
                    busy.pid, lambda: tamalloc.mem_stats(busy.pid, backend=backend)
                )
            assert_memory_matches_status(stats, busy.pid, status, backend)
    finally:
        busy.kill()
        busy.wait()


# Touches a new page of a large mapping, then unmaps and starts again, without end.
_BUSY_CHILD = """
import mmap
print("ready", flush=True)
while True:
    mem = mmap.mmap(-1, 64 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for offset in range(0, len(mem), mmap.PAGESIZE):
        mem[offset] = 1
    mem.close()
"""


def test_child_allocation_is_visible(backend: str, spawn_child: Callable[..., Child]) -> None:
    small = tamalloc.mem_stats(spawn_child(reserve=MiB, touch=MiB).pid, backend=backend)
    big = tamalloc.mem_stats(spawn_child(reserve=128 * MiB, touch=32 * MiB).pid, backend=backend)
    # Same program, different mapping: the differences are the allocation itself.
    assert big.reserved_kb - small.reserved_kb == pytest.approx(127 * 1024, abs=2048)
    assert big.anon_kb - small.anon_kb == pytest.approx(31 * 1024, abs=2048)


def test_child_agrees_with_psutil(backend: str, child: Child) -> None:
    psutil = pytest.importorskip("psutil")
    stats = tamalloc.mem_stats(child.pid, backend=backend)
    proc = psutil.Process(child.pid)
    info = proc.memory_info()
    assert stats.reserved_kb * 1024 == info.vms
    assert info.rss % 1024 == 0
    assert_rss_kb(stats.committed_kb, info.rss // 1024, backend, counters=3)
    assert stats.name == proc.name()
    assert child.pid in {s.pid for s in tamalloc.all_mem_stats(backend=backend)}


@pytest.mark.parametrize("adj", [-500, 0, 500, 1000])
def test_oom_score_matches_proc_after_setting_adj(backend: str, child: Child, adj: int) -> None:
    try:
        with open(f"/proc/{child.pid}/oom_score_adj", "w") as f:
            f.write(str(adj))
    except PermissionError:
        assert adj < 0  # raising it is always allowed
        pytest.skip("lowering oom_score_adj needs CAP_SYS_RESOURCE")
    stats = tamalloc.mem_stats(child.pid, backend=backend)
    assert stats.oom_score_adj == adj
    assert stats.oom_score == read_int(f"/proc/{child.pid}/oom_score")
    if adj == 1000:
        assert stats.oom_score >= 1333  # (1000 + 1000) * 2/3 at least


def test_own_process(backend: str) -> None:
    me = tamalloc.mem_stats(os.getpid(), backend=backend)
    with open("/proc/self/comm") as f:
        assert me.name == f.read().rstrip("\n")
    assert me.reserved_kb > 0
    assert 0 < me.committed_kb <= me.reserved_kb


def test_thread_id_resolves_to_its_process(backend: str) -> None:
    tids: list[int] = []
    stop = threading.Event()

    def worker() -> None:
        tids.append(threading.get_native_id())
        stop.wait(30)

    thread = threading.Thread(target=worker, name="tamalloc-test")
    thread.start()
    try:
        while not tids:
            stop.wait(0.01)
        stats = tamalloc.mem_stats(tids[0], backend=backend)
        assert tids[0] != os.getpid()
        assert stats.pid == os.getpid()
        assert stats.reserved_kb > 0
    finally:
        stop.set()
        thread.join()


def test_kernel_thread_has_no_memory(backend: str) -> None:
    kthread = next((pid for pid in (2, 3, 4, 5) if _is_kernel_thread(pid)), None)
    if kthread is None:
        pytest.skip("no kernel thread visible in this pid namespace")
    stats = tamalloc.mem_stats(kthread, backend=backend)
    assert (stats.reserved_kb, stats.committed_kb, stats.swap_kb) == (0, 0, 0)
    assert stats.committed_pct == 0
    assert kthread not in {s.pid for s in tamalloc.all_mem_stats(backend=backend)}


def _is_kernel_thread(pid: int) -> bool:
    try:
        return "VmSize" not in proc_status(pid) and proc_status(pid).get("State", "")[:1] != "Z"
    except OSError:
        return False


def test_all_processes_sorted_unique_and_complete(backend: str, child: Child) -> None:
    stats = tamalloc.all_mem_stats(backend=backend)
    pids = [s.pid for s in stats]
    assert pids == sorted(set(pids))
    assert {os.getpid(), child.pid} <= set(pids)
    assert all(isinstance(s, MemStats) and s.reserved_kb > 0 for s in stats)
    # Every user process in /proc is listed (give or take ones that came or went).
    user = {pid for pid in _proc_pids() if "VmSize" in _status_or_empty(pid)}
    assert len(user ^ set(pids)) <= max(5, len(user) // 10)


def _proc_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _status_or_empty(pid: int) -> dict[str, str]:
    try:
        return proc_status(pid)
    except OSError:
        return {}


def _free_pid() -> int:
    """A pid within 1..pid_max that no process has now (the highest free one)."""
    taken = set(_proc_pids())
    return next(p for p in range(read_int("/proc/sys/kernel/pid_max"), 1, -1) if p not in taken)


def test_no_such_process(backend: str) -> None:
    missing = _free_pid()
    with pytest.raises(NoSuchProcess, match=str(missing)) as info:
        tamalloc.mem_stats(missing, backend=backend)
    assert info.value.pid == missing


@pytest.mark.parametrize("pid", [0, -1])
def test_invalid_pid(backend: str, pid: int) -> None:
    with pytest.raises(ValueError, match="invalid pid"):
        tamalloc.mem_stats(pid, backend=backend)


@pytest.mark.parametrize("pid", ["pid_max + 1", 2**22 + 1, 2**32 + 1, 2**63])
def test_pid_above_pid_max_is_a_value_error(backend: str, pid: int | str) -> None:
    # 2**32 + 1 wraps to 1 in a C int: it must never report init.
    if pid == "pid_max + 1":
        pid = read_int("/proc/sys/kernel/pid_max") + 1
    assert isinstance(pid, int)
    with pytest.raises(ValueError, match="pid_max"):
        tamalloc.mem_stats(pid, backend=backend)


def test_pid_max_falls_back_to_the_kernel_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import tamalloc.stats

    assert tamalloc.stats.pid_max() == read_int("/proc/sys/kernel/pid_max")
    monkeypatch.setattr(tamalloc.stats, "_PID_MAX_PATH", "/nonexistent/pid_max")
    assert tamalloc.stats.pid_max() == 2**22
    with pytest.raises(ValueError, match="pid_max"):
        tamalloc.mem_stats(2**32 + 1, backend="procfs")


def test_total_matches_meminfo_and_the_process_list(backend: str, child: Child) -> None:
    # Other processes come and go (CI may be building a kernel), so compare with
    # readings taken just before and just after, with a little slack.
    before_list, before_info = tamalloc.all_mem_stats(backend=backend), meminfo_kb()
    total = tamalloc.total_mem_stats(backend=backend)
    after_list, after_info = tamalloc.all_mem_stats(backend=backend), meminfo_kb()

    def within(value: int, a: int, b: int, slack: float = 0.1) -> bool:
        return min(a, b) * (1 - slack) - 3 <= value <= max(a, b) * (1 + slack) + 3

    assert total.mem_total_kb == before_info["MemTotal"]
    assert total.commit_limit_kb == before_info["CommitLimit"]
    assert within(total.committed_as_kb, before_info["Committed_AS"], after_info["Committed_AS"])
    assert total.overcommit_memory == read_int("/proc/sys/vm/overcommit_memory")
    assert total.overcommit_mode in ("heuristic", "always", "never")
    assert within(total.processes, len(before_list), len(after_list), slack=0)
    for field in ("reserved_kb", "committed_kb"):
        sums = [sum(getattr(s, field) for s in listed) for listed in (before_list, after_list)]
        assert within(getattr(total, field), *sums), field
    assert total.reserved_kb >= child.reserve // 1024


def test_to_dict_has_exactly_the_field_names(child: Child) -> None:
    stats = tamalloc.mem_stats(child.pid, backend="procfs")
    assert (
        tuple(stats.to_dict())
        == FIELD_NAMES
        == (
            "pid",
            "name",
            "reserved_kb",
            "committed_kb",
            "committed_pct",
            "anon_kb",
            "file_kb",
            "shmem_kb",
            "swap_kb",
            "oom_score",
            "oom_score_adj",
        )
    )


def test_procfs_status_name_escapes_are_undone() -> None:
    from tamalloc.backends.procfs import _name

    assert _name(b"Name:\ta\\nb\\\\c\nUmask:\t0022\n") == "a\nb\\c"


def test_thread_id_gives_the_process_name(backend: str) -> None:
    # issue 8: for a thread id both backends report the group leader's name, not the
    # thread's own (here renamed so that the two differ).
    tids: list[int] = []
    stop = threading.Event()

    def worker() -> None:
        tids.append(threading.get_native_id())
        stop.wait(30)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        while not tids:
            stop.wait(0.01)
        with open(f"/proc/self/task/{tids[0]}/comm", "w") as f:
            f.write("tm-worker")
        with open(f"/proc/self/task/{tids[0]}/comm") as f:
            assert f.read().strip() == "tm-worker"
        stats = tamalloc.mem_stats(tids[0], backend=backend)
        assert stats.pid == os.getpid()
        assert stats.name == proc_status(os.getpid())["Name"] != "tm-worker"
    finally:
        stop.set()
        thread.join()
