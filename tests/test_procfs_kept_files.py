"""The C scan's files kept open from one full scan to the next (hold): the same
results as files opened afresh, whatever happens to the processes, the fd numbers
and the caller in between."""

from __future__ import annotations

import fcntl
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from _support import (
    Child,
    assert_memory_matches_status,
    read_between_equal_statuses,
    read_int,
    run_python,
    stopped,
    subprocess_env,
)
from tamalloc.errors import SKIPPED_IN_SCANS
from tamalloc.models import MemStats

try:
    from tamalloc.backends import _procscan
except ImportError:
    pytest.skip("the C scanner was not built: `make venv` builds it", allow_module_level=True)


def held_scan() -> dict[int, MemStats]:
    return {s.pid: s for s in _procscan.scan(None, MemStats, SKIPPED_IN_SCANS, 0, True)}


def kept_for(pid: int) -> dict[str, int]:
    """The kept files of process pid, by name, from where each fd points."""
    found = {}
    for fd in _procscan.kept_fds():
        target = os.readlink(f"/proc/self/fd/{fd}")
        prefix = f"/proc/{pid}/"
        if target.startswith(prefix):
            found[target[len(prefix) :]] = fd
    return found


@pytest.fixture(autouse=True)
def room_to_keep() -> Iterator[None]:
    """Nothing kept before or after, and a soft limit on open files with room to keep
    some (the default of 1024 has none: above half of it, nothing is kept)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 16384 if hard == resource.RLIM_INFINITY else min(16384, hard)
    if wanted < 2048:
        pytest.skip(f"the hard limit on open files ({hard}) leaves no room to keep files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    assert _procscan.release()
    yield
    assert _procscan.release()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_kept_files_give_what_new_ones_give(spawn_child: Callable[..., Child]) -> None:
    small, big = spawn_child(), spawn_child(reserve=256 << 20, touch=16 << 20)
    with open(f"/proc/{small.pid}/oom_score_adj", "w") as f:
        f.write("321")
    held_scan()
    assert set(kept_for(big.pid)) == {"status", "oom_score", "oom_score_adj"}
    # Stopped, the children cannot move their memory between the two scans and the
    # reads of /proc they are compared with.
    with stopped(small.pid), stopped(big.pid):
        from_kept = held_scan()  # reads the files kept by the first
        fresh = {s.pid: s for s in _procscan.scan(None, MemStats, SKIPPED_IN_SCANS, 0, False)}
        for child in (small, big):
            assert from_kept[child.pid] == fresh[child.pid]
            assert_memory_matches_status(from_kept[child.pid], child.pid)
            assert from_kept[child.pid].oom_score == read_int(f"/proc/{child.pid}/oom_score")
    assert from_kept[small.pid].oom_score_adj == 321
    # A kept file is generated anew at each read: a change shows at the next scan.
    with open(f"/proc/{small.pid}/oom_score_adj", "w") as f:
        f.write("654")
    assert held_scan()[small.pid].oom_score_adj == 654


def test_kept_fds_sit_high_and_close_on_exec() -> None:
    held_scan()
    kept = _procscan.kept_fds()
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert len(kept) >= 3
    assert min(kept) >= max(1024, min(soft // 2, 65536))
    assert len(kept) <= soft // 4
    for fd in kept:
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    # The caller's next fd still takes a low number.
    with open(os.devnull) as f:
        assert f.fileno() < 1024
    assert _procscan.release()
    for fd in kept:
        with pytest.raises(OSError):
            os.fstat(fd)


def run_json(code: str) -> Any:
    """What Python code prints as JSON, run in a new interpreter (module state fresh)."""
    return json.loads(run_python(code, check=True).stdout)


def test_nothing_is_kept_under_a_low_fd_limit() -> None:
    code = (
        "import json, resource\n"
        "from tamalloc.backends import _procscan\n"
        "from tamalloc.errors import SKIPPED_IN_SCANS\n"
        "from tamalloc.models import MemStats\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))\n"
        "runs = [_procscan.scan(None, MemStats, SKIPPED_IN_SCANS, 0, True) for _ in range(2)]\n"
        "print(json.dumps([len(runs[1]), _procscan.kept_fds()]))\n"
    )
    scanned, kept = run_json(code)
    assert scanned > 0
    assert kept == []


def test_the_files_of_an_exited_process_are_closed(spawn_child: Callable[..., Child]) -> None:
    child = spawn_child()
    held_scan()
    fds = kept_for(child.pid)
    assert fds
    child.proc.kill()
    child.proc.wait()
    assert child.pid not in held_scan()
    assert kept_for(child.pid) == {}
    for fd in fds.values():
        # Closed, or since taken by another process's kept file: not this one's.
        if fd in _procscan.kept_fds():
            assert not os.readlink(f"/proc/self/fd/{fd}").startswith(f"/proc/{child.pid}/")


SLEEPER = "import sys; print('ready', flush=True); sys.stdin.read()"


def spawn_at(pid: int, name: str) -> subprocess.Popen[str] | None:
    """A process named name with pid pid (through ns_last_pid), or None when another
    process took the number first."""
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(pid - 1))
    named = f"open('/proc/self/comm', 'w').write({name!r}); {SLEEPER}"
    proc = subprocess.Popen(
        [sys.executable, "-c", named],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    if proc.pid != pid:
        proc.kill()
        proc.wait()
        return None
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc


def test_a_reused_pid_reads_the_new_process() -> None:
    if os.geteuid() != 0:
        pytest.skip("reusing a pid on purpose needs root (ns_last_pid; runs in `make vm-test`)")
    for _ in range(20):
        first = subprocess.Popen(
            [sys.executable, "-c", SLEEPER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )
        assert first.stdout is not None and first.stdout.readline() == "ready\n"
        pid = first.pid
        held_scan()
        assert kept_for(pid)
        first.kill()
        first.wait()
        second = spawn_at(pid, "tamalloc-reused")
        if second is not None:
            break
    else:
        pytest.fail("could not get the same pid twice in 20 tries")
    try:
        # Stopped, the new interpreter cannot move its memory between the scan and
        # the status it is compared with.
        with stopped(pid):
            scanned, status = read_between_equal_statuses(pid, held_scan)
        record = scanned[pid]
        assert record.name == "tamalloc-reused"
        assert_memory_matches_status(record, pid, status)
        # Its files are the new process's now, and kept for the next scan.
        assert set(kept_for(pid)) == {"status", "oom_score", "oom_score_adj"}
        assert held_scan()[pid].name == "tamalloc-reused"
    finally:
        second.kill()
        second.wait()


def test_a_kept_number_the_caller_reused_is_neither_read_nor_closed(
    spawn_child: Callable[..., Child],
) -> None:
    child = spawn_child()
    held_scan()
    fd = kept_for(child.pid)["status"]
    os.close(fd)  # as a caller closing every fd it did not open would
    with tempfile.TemporaryFile() as mine:
        mine.write(b"Name:\tnot-a-status\nVmSize:\t1 kB\n")
        mine.flush()
        os.dup2(mine.fileno(), fd)
        with stopped(child.pid):
            scanned, status = read_between_equal_statuses(child.pid, held_scan)
        record = scanned[child.pid]
        assert record.name != "not-a-status"
        assert_memory_matches_status(record, child.pid, status)
        assert os.pread(fd, 64, 0).startswith(b"Name:\tnot-a-status")  # still the caller's
        assert fd not in _procscan.kept_fds()
        os.close(fd)


def test_a_forked_child_closes_the_kept_files_not_the_parent() -> None:
    held_scan()
    kept = _procscan.kept_fds()
    assert kept
    import tamalloc.backends.procfs  # noqa: F401  (registers the at-fork handler)

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        open_in_child = [fd for fd in kept if _is_open(fd)]
        os.write(write_end, json.dumps([_procscan.kept_fds(), open_in_child]).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        in_child, open_in_child = json.loads(f.read())
    os.waitpid(pid, 0)
    assert in_child == []
    assert open_in_child == []
    assert _procscan.kept_fds() == kept
    assert all(_is_open(fd) for fd in kept)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_all_mem_stats_keeps_files_from_its_second_scan() -> None:
    code = (
        "import json, tamalloc\n"
        "from tamalloc.backends import _procscan\n"
        "counts = []\n"
        "for _ in range(3):\n"
        "    tamalloc.all_mem_stats(backend='procfs')\n"
        "    counts.append(len(_procscan.kept_fds()))\n"
        "print(json.dumps(counts))\n"
    )
    once, twice, thrice = run_json(code)
    assert once == 0  # a one-shot caller keeps nothing open
    assert twice > 0
    assert thrice > 0


KEPT_KIND = re.compile(r"/proc/\d+/(status|oom_score|oom_score_adj)")


@pytest.fixture
def many_sleepers() -> Iterator[None]:
    """300 more processes, so that a scan keeps ~900 files and takes milliseconds."""
    procs = [subprocess.Popen(["sleep", "600"]) for _ in range(300)]
    yield
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def _proc_files_open_here() -> int:
    """How many of this process's fds are a process's status or OOM file."""
    found = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the fd of the listing itself, closed by now
            continue
        found += KEPT_KIND.fullmatch(target) is not None
    return found


@pytest.mark.parametrize("threads", [1, 4])
def test_a_child_forked_during_a_scan_keeps_none_of_its_files(
    many_sleepers: None,
    threads: int,
) -> None:
    """fork() from a second thread while the main one scans (its kept files then in
    the scan's job, and, with workers, in detached threads that may outlive the call):
    no child may hold any of them, nor a file a scan had open for a moment."""
    import tamalloc.backends.procfs  # noqa: F401  (registers the at-fork handler)

    assert _proc_files_open_here() == 0
    forks = 200
    leaked: list[int] = []
    done = threading.Event()

    def fork_repeatedly() -> None:
        try:
            for _ in range(forks):
                read_end, write_end = os.pipe()
                pid = os.fork()
                if pid == 0:
                    os.write(write_end, str(_proc_files_open_here()).encode())
                    os._exit(0)
                os.close(write_end)
                with os.fdopen(read_end) as f:
                    leaked.append(int(f.read()))
                assert os.waitpid(pid, 0)[1] == 0
        finally:
            done.set()

    forker = threading.Thread(target=fork_repeatedly)
    forker.start()
    scans = 0
    while not done.is_set():
        _procscan.scan(None, MemStats, SKIPPED_IN_SCANS, threads, True)
        scans += 1
    forker.join()
    assert len(leaked) == forks
    assert scans > 1
    for _ in range(1000):  # detached workers may still have the kept files a moment
        if _procscan.kept_fds():
            break
        time.sleep(0.01)
    assert len(_procscan.kept_fds()) > 300  # the scans did keep files
    assert sum(leaked) == 0, f"{sum(leaked)} fds leaked into {sum(map(bool, leaked))} children"


# Python source: the soft open-files limit raised to 16384, or to the hard limit where
# that is lower (the guest's is 4096), so that files are kept at all.
RAISE_NOFILE = (
    "import resource\n"
    "_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE,"
    " (16384 if _hard == resource.RLIM_INFINITY else min(16384, _hard), _hard))\n"
)


def test_forks_during_scans_with_tracemalloc_on_do_not_hang(many_sleepers: None) -> None:
    """A fork waits for the scan's threads to put their fds away; none of them may wait
    for the GIL the forking thread holds meanwhile (tracemalloc's hooks of Python's raw
    allocator take it): the process must finish, not hang."""
    code = (
        "import os, resource, threading, tracemalloc\n"
        "from tamalloc.backends import _procscan\n"
        "import tamalloc.backends.procfs\n"
        "from tamalloc.errors import SKIPPED_IN_SCANS\n"
        "from tamalloc.models import MemStats\n"
        f"{RAISE_NOFILE}"
        "tracemalloc.start()\n"
        "done = threading.Event()\n"
        "def forker():\n"
        "    for _ in range(100):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            os._exit(0)\n"
        "        os.waitpid(pid, 0)\n"
        "    done.set()\n"
        "thread = threading.Thread(target=forker)\n"
        "thread.start()\n"
        "while not done.is_set():\n"
        "    _procscan.scan(None, MemStats, SKIPPED_IN_SCANS, 4, True)\n"
        "thread.join()\n"
        "print('done')\n"
    )
    run = run_python(code, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "done\n"


PAGE = os.sysconf("SC_PAGESIZE")


def modelled_cost(fd: int) -> int | None:
    """What a kept file is counted as: 512 bytes, and for a seq_file (status,
    oom_score) the buffer the kernel keeps for it, a page doubled until the text fits;
    None when its process has exited since the scan (the length is then unknown)."""
    target = os.readlink(f"/proc/self/fd/{fd}")
    if target.endswith("/oom_score_adj"):
        return 512
    try:
        length = len(os.pread(fd, 1 << 20, 0))
    except ProcessLookupError:
        return None
    buffer = PAGE
    while buffer <= length:
        buffer *= 2
    return 512 + buffer


def assert_counted_as_modelled() -> None:
    """kept_bytes() is the sum of the kept files' modelled costs; a file whose process
    exited since the scan (another test's, a compiler's) counts as at least a page."""
    costs = [modelled_cost(fd) for fd in _procscan.kept_fds()]
    known = sum(cost for cost in costs if cost is not None)
    gone = costs.count(None)
    assert known + gone * (512 + PAGE) <= _procscan.kept_bytes() <= known + gone * (512 + 8 * PAGE)


def budget_scan(budget: int) -> dict[int, MemStats]:
    """A held scan within budget, on one thread: threads racing for the last room may
    each be refused, which keeps the bound but leaves more of it unused."""
    return {s.pid: s for s in _procscan.scan(None, MemStats, SKIPPED_IN_SCANS, 1, True, budget)}


@pytest.mark.parametrize("budget", [0, 5000, 20_000, 100_000, 1 << 20])
def test_kept_files_stay_within_the_byte_budget(many_sleepers: None, budget: int) -> None:
    for _ in range(3):
        assert len(budget_scan(budget)) > 300
    kept = _procscan.kept_fds()
    assert _procscan.kept_bytes() <= budget
    assert_counted_as_modelled()
    # Each process keeps its status first, a page and more: at most that many.
    statuses = [fd for fd in kept if os.readlink(f"/proc/self/fd/{fd}").endswith("/status")]
    assert len(statuses) <= budget // (512 + PAGE)
    # The budget is used, not ignored: with ~400 processes, less than one process's
    # worth (a status, an oom_score and their buffers) is left unused.
    assert budget - _procscan.kept_bytes() < 2 * (512 + 2 * PAGE)
    # Every process file open here is a kept one: nothing over the budget stays open.
    assert _proc_files_open_here() == len(kept)


def test_threads_keep_within_the_budget_together(many_sleepers: None) -> None:
    for _ in range(5):
        _procscan.scan(None, MemStats, SKIPPED_IN_SCANS, 4, True, 100_000)
    # Detached workers may still hold files a moment after the scan returned: wait
    # until every /proc file open here is a kept one (a leak never gets there).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        not _procscan.kept_fds() or _proc_files_open_here() != len(_procscan.kept_fds())
    ):
        time.sleep(0.01)
    assert 0 < _procscan.kept_bytes() <= 100_000
    assert_counted_as_modelled()
    assert _proc_files_open_here() == len(_procscan.kept_fds())


def test_a_lowered_budget_closes_what_no_longer_fits(many_sleepers: None) -> None:
    budget_scan(1 << 20)
    budget_scan(1 << 20)
    before = _procscan.kept_bytes()
    assert before > 900_000
    budget_scan(64 << 10)
    assert 0 < _procscan.kept_bytes() <= 64 << 10
    assert _proc_files_open_here() == len(_procscan.kept_fds())
    budget_scan(0)
    assert _procscan.kept_fds() == []
    assert _proc_files_open_here() == 0


def test_a_long_status_is_counted_with_its_bigger_buffer() -> None:
    if os.geteuid() != 0:
        pytest.skip("setgroups needs root (runs in `make vm-test`)")
    groups = list(range(100000, 102000))  # a Groups line of ~14 kB: a 16 kB buffer
    proc = subprocess.Popen(
        [sys.executable, "-c", SLEEPER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        preexec_fn=lambda: os.setgroups(groups),
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        held_scan()
        held_scan()
        status = kept_for(proc.pid)["status"]
        assert len(os.pread(status, 1 << 20, 0)) > 2 * PAGE
        assert modelled_cost(status) == 512 + 4 * PAGE
        assert_counted_as_modelled()
    finally:
        proc.kill()
        proc.wait()


def test_the_procfs_backend_keeps_files_within_its_budget() -> None:
    from tamalloc.backends.procfs import ProcfsBackend

    backend = ProcfsBackend(kept_bytes="40k")
    for _ in range(3):
        backend.all_mem_stats()
    assert 0 < _procscan.kept_bytes() <= 40 << 10
    with pytest.raises(ValueError, match="kept_bytes"):
        ProcfsBackend(kept_bytes="lots")
    with pytest.raises(ValueError, match="kept_bytes"):
        ProcfsBackend(kept_bytes=-1)


def test_the_budget_from_the_environment() -> None:
    code = (
        "import json, tamalloc\n"
        "from tamalloc.backends import _procscan\n"
        "for _ in range(3):\n"
        "    tamalloc.all_mem_stats(backend='procfs')\n"
        "print(json.dumps([_procscan.kept_bytes(), len(_procscan.kept_fds())]))\n"
    )
    for value, most in (("24k", 24 << 10), ("0", 0), (None, _procscan.KEPT_BYTES_DEFAULT)):
        env = subprocess_env()
        env.pop("TAMALLOC_KEPT_BYTES", None)
        if value is not None:
            env["TAMALLOC_KEPT_BYTES"] = value
        run = subprocess.run(
            [
                sys.executable,
                "-c",
                RAISE_NOFILE + code,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        )
        kept_bytes, fds = json.loads(run.stdout)
        assert kept_bytes <= most
        assert (fds > 0) == (most > 0)
    bad = run_python(code, TAMALLOC_KEPT_BYTES="-5")
    assert bad.returncode != 0
    assert "$TAMALLOC_KEPT_BYTES" in bad.stderr
    # The CLI says so in one line, as it does of a bad $TAMALLOC_BACKEND.
    cli = subprocess.run(
        [sys.executable, "-m", "tamalloc", "stats", "--top", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=subprocess_env(TAMALLOC_BACKEND="procfs", TAMALLOC_KEPT_BYTES="lots"),
    )
    assert cli.returncode != 0
    assert cli.stdout == ""
    assert cli.stderr.count("\n") == 1
    assert "$TAMALLOC_KEPT_BYTES: invalid size: 'lots'" in cli.stderr
    assert "internal error" not in cli.stderr
