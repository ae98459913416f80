"""The bpf backend (a BPF task iterator) against /proc, process by process.

Runs as root on a kernel with BTF (5.8+) where the backend was built; elsewhere every
test skips, saying why, except in the VM (6.1 + BTF), where bpf must run: a failure.

On 6.2+ the kernel keeps each RSS counter as a percpu_counter. The iterator reads its
approximate count, as get_mm_counter() and so /proc/PID/oom_score do (compared exactly
below). Since 6.16 /proc/PID/status shows the per-CPU sum (get_mm_counter_sum()), which
the program cannot compute (see bpf.py): there the status fields are compared within
the per-CPU slack the percpu_counter allows (_support.BPF_STATUS_SLACK_KB), exactly on
other kernels (on 6.1, the guest's, the counters are the atomics status reads).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

import tamalloc
from _support import (
    BPF_STATUS_SLACK_KB,
    EXIT_STOP_SCRIPT,
    Child,
    MiB,
    assert_clean_error,
    assert_memory_matches_status,
    named_child,
    read_between_equal_statuses,
    read_int,
    run_cli,
    stopped,
)
from tamalloc import cgroupfs
from tamalloc.backends import bpf, get_backend
from tamalloc.errors import NoSuchProcess
from tamalloc.models import MemStats, OomTask
from test_procfs_scan import (  # noqa: F401  (fixtures)
    ZOMBIE_LEADER_NAME,
    ZOMBIE_LEADER_TOUCH,
    live_thread_status_kb,
    zombie_leader,
    zombie_leader_exe,
)

pytestmark = pytest.mark.bpf  # conftest: skip where bpf cannot run, fail in the VM

SLACK_KB = BPF_STATUS_SLACK_KB


def _raw_records() -> dict[int, tuple[int | bytes, ...]]:
    """The leaders' records of a pass, undecoded."""
    records = bpf.RECORD.iter_unpack(bpf._read_pass())
    return {rec[0]: rec for rec in records if not rec[1] & bpf.THREAD}  # type: ignore[misc]


def _by_pid(items: list[MemStats] | list[OomTask]) -> dict[int, MemStats | OomTask]:
    return {item.pid: item for item in items}


def assert_status_fields(stats: MemStats, status: dict[str, int]) -> None:
    """MemStats against a status: VmSize exactly; the RSS counters exactly, or within
    the per-CPU slack where status sums the CPUs (see the module's note)."""
    assert_memory_matches_status(stats, stats.pid, status, "bpf")


def test_record_layout_matches_the_header() -> None:
    header = (Path(bpf.__file__).parent / "_bpf" / "memstats.h").read_text()
    body = header[header.index("struct tam_bpf_rec {") : header.index("};")]
    sizes = {"__u32": 4, "__s32": 4, "__u64": 8}
    size = sum(sizes[m[1]] for m in re.finditer(r"\n\s*(__[us]\d\d) \w+;", body))
    size += 16 if "comm[TAM_BPF_COMM_LEN]" in body else 0
    assert size == bpf.RECORD.size == 88
    data = bpf._read_pass()
    assert data and len(data) % bpf.RECORD.size == 0


def test_every_field_of_stopped_children(spawn_child: Callable[..., Child]) -> None:
    children = [spawn_child(reserve=(32 + 16 * i) * MiB, touch=(4 + 8 * i) * MiB) for i in range(3)]
    backend = get_backend("bpf")
    for child in children:
        with stopped(child.pid):
            (stats, tasks), status = read_between_equal_statuses(
                child.pid, lambda: (backend.all_mem_stats(), backend.oom_tasks())
            )
            oom_score = read_int(f"/proc/{child.pid}/oom_score")
            adj = read_int(f"/proc/{child.pid}/oom_score_adj")
        mine = _by_pid(stats)[child.pid]
        assert isinstance(mine, MemStats)
        assert mine.name == Path(f"/proc/{child.pid}/comm").read_text().rstrip("\n")
        assert_status_fields(mine, status)
        assert mine.anon_kb >= child.touch // 1024
        assert (mine.oom_score, mine.oom_score_adj) == (oom_score, adj)
        task = _by_pid(tasks)[child.pid]
        assert isinstance(task, OomTask)
        assert task.pgtables_kb == status["VmPTE"]
        assert (task.oom_score, task.oom_score_adj, task.unkillable) == (oom_score, adj, False)
        assert task.cgroup == _proc_cgroup(child.pid)


def _proc_cgroup(pid: int) -> str | None:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


# Raising oom_score_adj needs no privilege; lowering it (-1000) needs CAP_SYS_RESOURCE.
@pytest.mark.parametrize("adj", [0, 1, 700, 1000])
def test_oom_score_and_adj_exactly(adj: int) -> None:
    with named_child(b"adj", oom_score_adj=adj) as pid, stopped(pid):
        stats = _by_pid(get_backend("bpf").all_mem_stats())[pid]
        tasks = _by_pid(get_backend("bpf").oom_tasks())
        assert (stats.oom_score, stats.oom_score_adj) == (read_int(f"/proc/{pid}/oom_score"), adj)
    task = tasks[pid]
    assert isinstance(task, OomTask)
    assert not task.unkillable
    assert task.oom_score == stats.oom_score


def test_cgroup_id_is_the_cgroup_directory_inode(spawn_child: Callable[..., Child]) -> None:
    mount = cgroupfs.cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup v2 hierarchy mounted")
    _root, point = mount
    child = spawn_child(reserve=8 * MiB, touch=MiB)
    directory = Path(point) / f"tamalloc-bpf-{uuid.uuid4().hex[:8]}"
    try:
        directory.mkdir()
        (directory / "cgroup.procs").write_text(str(child.pid))
    except OSError as err:
        pytest.skip(f"cannot make a cgroup to move a child into: {err}")
    try:
        record = _raw_records()[child.pid]
        assert record[11] == directory.stat().st_ino
        task = _by_pid(get_backend("bpf").oom_tasks())[child.pid]
        assert isinstance(task, OomTask)
        assert task.cgroup == _proc_cgroup(child.pid) != "/"
    finally:
        child.proc.kill()
        child.proc.wait()
        directory.rmdir()


@pytest.mark.parametrize(
    "name",
    [b"\x01\x02\x1b[31m", b"tab\there\nnl", b"back\\slash", b"\xff\xfe bad utf8", b"x" * 15],
)
def test_hostile_names_as_procfs_gives_them(name: bytes) -> None:
    with named_child(name) as pid:
        got = _by_pid(get_backend("bpf").all_mem_stats())[pid].name
        assert got == get_backend("procfs").mem_stats(pid).name
        assert got == name.decode("utf-8", "replace")


def test_zombie_leader_read_through_its_live_thread(zombie_leader: int) -> None:  # noqa: F811
    records = bpf._read_pass()
    flags = [rec[1] for rec in bpf.RECORD.iter_unpack(records) if rec[0] == zombie_leader]
    assert flags and flags[0] & bpf.NO_MM  # the leader, then its thread
    assert any(f & bpf.THREAD for f in flags)
    backend = get_backend("bpf")
    stats = _by_pid(backend.all_mem_stats())[zombie_leader]
    assert isinstance(stats, MemStats)
    assert stats.name == ZOMBIE_LEADER_NAME  # the leader's comm, not the thread's
    assert stats.anon_kb >= ZOMBIE_LEADER_TOUCH // 1024 - SLACK_KB
    assert_status_fields(stats, live_thread_status_kb(zombie_leader))
    assert stats.oom_score == read_int(f"/proc/{zombie_leader}/oom_score")
    assert zombie_leader in _by_pid(backend.oom_tasks())


# A vfork child that does not exec: it prints its pid and waits on stdin, on its parent's
# mm, while the parent is blocked in vfork(). oom_badness() skips it (in_vfork()).
VFORK_C = r"""
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	char buf[16];
	pid_t pid = vfork();

	if (pid == 0) {
		char line[32];
		int n = snprintf(line, sizeof(line), "%d\n", (int)getpid());

		write(1, line, n);
		while (read(0, buf, sizeof(buf)) > 0)
			;
		_exit(0);
	}
	return pid < 0;
}
"""


def test_vfork_child_is_unkillable_as_the_kernel_says(tmp_path: Path) -> None:
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.skip("needs a C compiler (gcc) to build the vfork program")
    (tmp_path / "vfork.c").write_text(VFORK_C)
    exe = tmp_path / "vforker"
    subprocess.run([compiler, "-O2", "-o", str(exe), str(tmp_path / "vfork.c")], check=True)
    proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        tasks = _by_pid(get_backend("bpf").oom_tasks())
        stats = _by_pid(get_backend("bpf").all_mem_stats())
        assert read_int(f"/proc/{child}/oom_score") == 0
        task = tasks[child]
        assert isinstance(task, OomTask)
        assert task.unkillable and task.oom_score == 0 == stats[child].oom_score
        parent = tasks[proc.pid]  # blocked in vfork(), on the same mm: killable
        assert isinstance(parent, OomTask)
        assert not parent.unkillable
        assert parent.oom_score == read_int(f"/proc/{proc.pid}/oom_score") > 0
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def test_mem_stats_of_one_pid(spawn_child: Callable[..., Child]) -> None:
    child = spawn_child(reserve=16 * MiB, touch=2 * MiB)
    backend = get_backend("bpf")
    with stopped(child.pid):
        one = backend.mem_stats(child.pid)
        everyone = _by_pid(backend.all_mem_stats())
    assert one == everyone[child.pid]
    # A pid the pass does not show as a process is /proc's to answer: no such process.
    with pytest.raises(NoSuchProcess):
        backend.mem_stats(2**22 + 1)  # above pid_max


def test_a_zombie_process_is_left_out() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # a zombie, not reaped
    try:
        assert proc.pid not in _by_pid(get_backend("bpf").all_mem_stats())
        assert proc.pid not in _by_pid(get_backend("procfs").all_mem_stats())
    finally:
        proc.wait()


def _churn(stop: threading.Event) -> None:
    while not stop.is_set():
        procs = [subprocess.Popen(["/bin/true"]) for _ in range(8)]
        for proc in procs:
            proc.wait()


def test_processes_exiting_mid_scan_give_no_garbage(spawn_child: Callable[..., Child]) -> None:
    steady = spawn_child(reserve=16 * MiB, touch=2 * MiB)
    stop = threading.Event()
    churn = threading.Thread(target=_churn, args=(stop,))
    churn.start()
    try:
        for _ in range(300):
            data = bpf._read_pass()
            assert len(data) % bpf.RECORD.size == 0
            stats = get_backend("bpf").all_mem_stats()
            pids = [s.pid for s in stats]
            assert len(pids) == len(set(pids))
            assert steady.pid in pids
            for s in stats:
                assert s.pid > 0 and s.reserved_kb >= 0 and "\0" not in s.name
                assert 0 <= s.oom_score <= 2000 and -1000 <= s.oom_score_adj <= 1000
    finally:
        stop.set()
        churn.join()


def _hidden_from_root(pid: int) -> bool:
    """A process that even root may not inspect (here: the sandbox's init, whose exe
    link root cannot read). The task iterator does not show such a pid 1 on this host,
    while an unshared pid 1 it shows (test_pid_namespace_numbering)."""
    try:
        os.readlink(f"/proc/{pid}/exe")
    except PermissionError:
        return True
    except OSError:
        return False
    return False


def test_process_set_agrees_with_procfs() -> None:
    before = {s.pid for s in get_backend("procfs").all_mem_stats()}
    mine = {s.pid for s in get_backend("bpf").all_mem_stats()}
    after = {s.pid for s in get_backend("procfs").all_mem_stats()}
    steady = {pid for pid in before & after if not _hidden_from_root(pid)}
    assert steady <= mine
    # Any other pid the pass saw was a process that came and went between the scans.
    for pid in mine - (before | after):
        assert not os.path.exists(f"/proc/{pid}"), pid


def test_pid_namespace_numbering() -> None:
    script = (
        "import os\nfrom tamalloc.backends import get_backend\n"
        "print(os.getpid(), sorted(s.pid for s in get_backend('bpf').all_mem_stats()))"
    )
    result = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0 and "unshare" in result.stderr:
        pytest.skip(f"cannot make a pid namespace: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1 [1]"


_AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]


def test_forced_without_privilege_is_one_line_error() -> None:
    result = subprocess.run(
        [*_AS_NOBODY, sys.executable, "-m", "tamalloc", "--backend", "bpf", "stats"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(bpf.__file__).parents[2])},
    )
    if "Permission denied" in result.stderr and "tamalloc: error" not in result.stderr:
        pytest.skip(f"nobody cannot run this checkout: {result.stderr.strip()[:200]}")
    line = assert_clean_error(result, 1)
    assert "bpf backend cannot run" in line and "CAP_BPF" in line


def test_cap_bpf_and_cap_perfmon_suffice() -> None:
    """What the exporter's systemd unit documents: an unprivileged user with CAP_BPF and
    CAP_PERFMON (ambient) runs the backend."""
    caps = ["--inh-caps=-all,+bpf,+perfmon", "--ambient-caps=+bpf,+perfmon"]
    script = (
        "from tamalloc.backends import get_backend; print(len(get_backend('bpf').all_mem_stats()))"
    )
    result = subprocess.run(
        [*_AS_NOBODY[:-1], *caps, sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(bpf.__file__).parents[2])},
    )
    if "Operation not permitted" in result.stderr and "setpriv" in result.stderr:
        pytest.skip(f"cannot grant CAP_BPF/CAP_PERFMON here: {result.stderr.strip()[:200]}")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 0


def test_version_says_bpf_in_use() -> None:
    result = run_cli("--backend", "bpf", "--version")
    assert result.returncode == 0, result.stderr
    assert "backend: bpf;" in result.stdout and "bpf: in use" in result.stdout
    result = run_cli("--version", TAMALLOC_BACKEND="procfs")
    assert "bpf: available, not pinned" in result.stdout or "bpf: pinned" in result.stdout


@pytest.mark.parametrize("huge", [False, True])
def test_alloc_on_bpf_maps_as_procfs(huge: bool) -> None:
    buf = tamalloc.alloc("4M", huge=huge, backend="bpf")
    try:
        assert (buf.backend, len(buf), buf[0], buf[len(buf) - 1]) == ("bpf", 4 * MiB, 0, 0)
        buf[0] = 7
        assert buf[0] == 7
    finally:
        buf.close()


def _oom_task(pid: int) -> OomTask:
    (task,) = [t for t in get_backend("bpf").oom_tasks() if t.pid == pid]
    return task


def test_a_process_in_its_group_exit_is_exiting_as_the_oom_killer_sees_it() -> None:
    """EXITING is task_will_free_mem(): a process stopped in its exit with its memory
    still held is exiting; running ones (this test's process, the tracer) are not."""
    tracer = subprocess.Popen(
        [sys.executable, "-c", EXIT_STOP_SCRIPT, "", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert tracer.stdout is not None and tracer.stdin is not None
        words = tracer.stdout.readline().split()
        assert words[:1] == ["ready"], words
        exiting = _oom_task(int(words[1]))
        assert exiting.exiting is True, exiting
        assert exiting.oom_origin is False
        assert _oom_task(os.getpid()).exiting is False
        assert _oom_task(tracer.pid).exiting is False
    finally:
        if tracer.stdin is not None:
            tracer.stdin.close()
        tracer.wait(timeout=30)
