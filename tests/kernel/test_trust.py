"""Issue 8's findings on the syscalls, each as a test (patched kernel only).

Who may see which process (vm.tamalloc_stats_restrict), processes whose main thread
has exited, thread ids, and the record size the kernel reports. The records are
decoded here by their C offsets, independently of ``tamalloc.abi``, so that a wrong
mirror in the package cannot make these tests agree with it.
"""

from __future__ import annotations

import codecs
import ctypes
import errno
import os
import struct
import subprocess
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from _support import status_kb
from tamalloc._libc import libc

pytestmark = pytest.mark.usefixtures("require_kernel")

NR_GET_MEM_STATS = 549
NR_GET_TOTAL_MEM_STATS = 550
RECORD_SIZE = 88
TOTAL_SIZE_VER0 = 64
TOTAL_SIZE_VER1 = 72
NOBODY = 65534
RESTRICT = Path("/proc/sys/vm/tamalloc_stats_restrict")
MiB = 1 << 20
# 6.1 flushes a thread's RSS counter updates every 64 page faults.
RSS_LAG_KB = 2 * 64 * 4


class Record(NamedTuple):
    pid: int
    size: int
    comm: str
    reserved_kb: int
    committed_kb: int
    oom_score: int


class Totals(NamedTuple):
    processes: int
    size: int
    some_hidden: int  # -1 when the record asked for ends before it


def _errno_or(result: int) -> int:
    return -ctypes.get_errno() if result == -1 else result


def _decode(raw: bytes) -> Record:
    pid, oom_score, _adj, size = struct.unpack_from("=iiiI", raw, 0)
    comm = raw[16:32].split(b"\0", 1)[0].decode()
    reserved_kb, committed_kb = struct.unpack_from("=QQ", raw, 32)
    return Record(pid, size, comm, reserved_kb, committed_kb, oom_score)


def get_one(pid: int, size: int = RECORD_SIZE) -> Record | int:
    """The record of ``pid``, or -errno."""
    buf = ctypes.create_string_buffer(size)
    ctypes.set_errno(0)
    ret = _errno_or(
        libc.syscall(
            ctypes.c_long(NR_GET_MEM_STATS),
            ctypes.c_int(pid),
            buf,
            ctypes.c_uint(size),
            ctypes.c_uint(1),
            ctypes.c_uint(0),
        )
    )
    return _decode(buf.raw) if ret == 1 else ret


def get_all() -> list[Record]:
    count = libc.syscall(
        ctypes.c_long(NR_GET_MEM_STATS),
        ctypes.c_int(0),
        None,
        ctypes.c_uint(RECORD_SIZE),
        ctypes.c_uint(0),
        ctypes.c_uint(0),
    )
    assert count > 0
    count += 64
    buf = ctypes.create_string_buffer(RECORD_SIZE * count)
    ctypes.set_errno(0)
    written = _errno_or(
        libc.syscall(
            ctypes.c_long(NR_GET_MEM_STATS),
            ctypes.c_int(0),
            buf,
            ctypes.c_uint(RECORD_SIZE),
            ctypes.c_uint(count),
            ctypes.c_uint(0),
        )
    )
    assert written >= 0, os.strerror(-written)
    return [_decode(buf.raw[i * RECORD_SIZE : (i + 1) * RECORD_SIZE]) for i in range(written)]


def get_totals(size: int = TOTAL_SIZE_VER1) -> tuple[Totals, bytes]:
    buf = ctypes.create_string_buffer(b"\xff" * size, size)
    ctypes.set_errno(0)
    ret = _errno_or(
        libc.syscall(
            ctypes.c_long(NR_GET_TOTAL_MEM_STATS), buf, ctypes.c_uint(size), ctypes.c_uint(0)
        )
    )
    assert ret == 0, os.strerror(-ret)
    processes = struct.unpack_from("=Q", buf.raw, 0)[0]
    (size_field,) = struct.unpack_from("=I", buf.raw, 60)
    some_hidden = struct.unpack_from("=Q", buf.raw, 64)[0] if size >= TOTAL_SIZE_VER1 else -1
    return Totals(processes, size_field, some_hidden), buf.raw


def as_nobody(check: str) -> None:
    """Run ``check`` (Python source using this module's helpers) in a child that has
    dropped to user nobody; it fails the test with its message if an assert fails."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery from here on
        os.close(read)
        message = b""
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            exec(check, globals())
        except BaseException as err:
            message = f"{type(err).__name__}: {err}".encode() or b"failed"
        os.write(write, message)
        os._exit(1 if message else 0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        message = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and not message, message or f"child status {status}"


@pytest.fixture
def restrict() -> Iterator[Path]:
    """The sysctl, restored to its value at the start of the test."""
    assert RESTRICT.exists(), "vm.tamalloc_stats_restrict missing"
    before = RESTRICT.read_text()
    yield RESTRICT
    RESTRICT.write_text(before)


def test_restrict_defaults_to_one_and_takes_only_zero_or_one(restrict: Path) -> None:
    assert restrict.read_text().strip() == "1"
    for bad in ("2", "-1"):
        with pytest.raises(OSError) as err:
            restrict.write_text(bad)
        assert err.value.errno == errno.EINVAL
    assert restrict.read_text().strip() == "1"


def test_nobody_sees_only_its_own_processes(restrict: Path) -> None:
    restrict.write_text("1")
    root_view = get_all()
    assert 1 in {r.pid for r in root_view}
    assert get_totals()[0].some_hidden == 0
    as_nobody(
        textwrap.dedent("""
        assert get_one(1) == -errno.ESRCH, get_one(1)
        mine = get_all()
        assert [r.pid for r in mine] == [os.getpid()], [r.pid for r in mine]
        totals = get_totals()[0]
        assert totals.processes == 1, totals
        assert totals.some_hidden == 1, totals  # a flag, not a count
        me = get_one(os.getpid())
        assert not isinstance(me, int) and me.pid == os.getpid(), me
    """)
    )


def test_sysctl_zero_shows_every_process_to_nobody(restrict: Path) -> None:
    restrict.write_text("0")
    as_nobody(
        textwrap.dedent("""
        one = get_one(1)
        assert not isinstance(one, int) and one.pid == 1, one
        assert 1 in {r.pid for r in get_all()}
        assert get_totals()[0].some_hidden == 0
    """)
    )


def _nobody_view() -> dict[str, object]:
    """Everything about hidden processes that nobody can read: the raw record of
    get_total_mem_stats but for its memory sums (those of nobody's own processes, which
    move with the probe's own allocations) and the system-wide /proc/meminfo figures
    (public anyway); the library's totals and visibility; the exporter's visibility
    metrics and process count."""
    import tamalloc
    from tamalloc.exporter.collector import MemoryCollector

    _totals, raw = get_totals()
    library_total = tamalloc.total_mem_stats(backend="kernel")
    seen = tamalloc.visibility(backend="kernel")
    metrics = {
        sample.name: sample.value
        for family in MemoryCollector(backend="kernel").collect()
        for sample in family.samples
        if "hidden" in sample.name
        or "visible" in sample.name
        or sample.name == "tamalloc_processes"
    }
    return {
        "raw processes, size and the VER1 tail": (raw[0:8], raw[56:64], raw[64:]),
        "library total": (library_total.processes, library_total.some_hidden),
        "library visibility": (repr(seen), seen.describe(library_total.processes)),
        "exporter": metrics,
    }


def test_nobody_cannot_follow_a_root_process_start_and_exit(restrict: Path) -> None:
    # Issue 16: a count of hidden processes let nobody follow root's processes one by
    # one. Nobody reads everything it can before root starts a process, while it runs,
    # and after it has been reaped: all of it must be the same each time.
    restrict.write_text("1")
    # As root first: every lazy import is done before nobody cannot read the venv.
    _nobody_view()
    codecs.lookup("ascii")  # process_visibility reads the sysctl as ascii
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # nobody; no pytest machinery from here on
        os.close(to_child_w)
        os.close(to_parent_r)
        message = b""
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            views = []
            for _step in range(3):
                views.append(_nobody_view())
                os.write(to_parent_w, b"r")
                os.read(to_child_r, 1)
            for name in views[0]:
                before, running, after = (view[name] for view in views)
                assert before == running == after, (name, before, running, after)
            assert views[0]["raw processes, size and the VER1 tail"][2] == struct.pack("=Q", 1)
        except BaseException as err:
            message = f"{type(err).__name__}: {err}".encode() or b"failed"
        os.write(to_parent_w, b"M" + message)
        os._exit(1 if message else 0)
    os.close(to_child_r)
    os.close(to_parent_w)
    with os.fdopen(to_parent_r, "rb") as from_child:

        def child_has_read() -> bool:
            return from_child.read(1) == b"r"  # else "M" and the child's failure

        if child_has_read():  # before
            root_process = subprocess.Popen(["sleep", "600"])
            os.write(to_child_w, b"g")
            ready = child_has_read()  # while it runs
            root_process.kill()
            root_process.wait()
            if ready:
                os.write(to_child_w, b"g")
                if child_has_read():  # after it has been reaped
                    os.write(to_child_w, b"g")
                    from_child.read(1)
        message = from_child.read().decode()
    os.close(to_child_w)
    _, status = os.waitpid(pid, 0)
    assert status == 0 and not message, message or f"child status {status}"


def test_thread_id_reports_the_process_under_its_name() -> None:
    ready = threading.Event()
    done = threading.Event()
    tids: list[int] = []

    def worker() -> None:
        libc.prctl(15, b"renamed-thread", 0, 0, 0)  # PR_SET_NAME
        tids.append(threading.get_native_id())
        ready.set()
        done.wait(30)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert ready.wait(30)
        record = get_one(tids[0])
        assert not isinstance(record, int), os.strerror(-record)
        assert record.pid == os.getpid()
        assert record.comm == Path("/proc/self/comm").read_text().strip()
        assert record.comm != "renamed-thread"
    finally:
        done.set()
        thread.join()


def test_records_report_the_kernels_size() -> None:
    # The kernel fills min(its record, the caller's): a VER0 caller gets its 88 bytes.
    kernel_record = 104  # VER1: + cgroup_id, oom_flags, pad
    for size in (RECORD_SIZE, RECORD_SIZE + 8, kernel_record, 4096):
        record = get_one(os.getpid(), size)
        assert not isinstance(record, int)
        assert record.size == min(size, kernel_record), size
    totals, _ = get_totals(TOTAL_SIZE_VER1 + 16)
    assert totals.size == TOTAL_SIZE_VER1
    # A caller of the first layout gets that much, and nothing written past it.
    old, raw = get_totals(TOTAL_SIZE_VER0)
    assert old.size == TOTAL_SIZE_VER0
    assert old.processes > 0
    assert len(raw) == TOTAL_SIZE_VER0


ZOMBIE_LEADER_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static size_t len;

static void *worker(void *arg)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	(void)arg;
	if (p == MAP_FAILED)
		exit(2);
	memset(p, 1, len);
	printf("%d\n", gettid());
	fflush(stdout);
	pause();
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t thread;

	len = strtoul(argv[1], NULL, 0);
	if (pthread_create(&thread, NULL, worker, NULL))
		return 1;
	pthread_exit(NULL);
}
"""


class ZombieLeader(NamedTuple):
    pid: int
    tid: int
    touched_kb: int


@pytest.fixture(scope="module")
def zombie_leader_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("zombie_leader")
    source = directory / "zombie_leader.c"
    source.write_text(ZOMBIE_LEADER_C)
    binary = directory / "zombie_leader"
    build = subprocess.run(
        ["gcc", "-Wall", "-Werror", "-pthread", str(source), "-o", str(binary)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    return binary


@pytest.fixture
def zombie_leader(zombie_leader_binary: Path) -> Iterator[ZombieLeader]:
    touched = 48 * MiB
    proc = subprocess.Popen(
        [str(zombie_leader_binary), str(touched)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        tid = int(proc.stdout.readline())
        # The leader has gone once its status says so (it may lag the thread's print).
        for _ in range(1000):
            if Path(f"/proc/{proc.pid}/status").read_text().find("State:\tZ") >= 0:
                break
            threading.Event().wait(0.01)
        else:
            pytest.fail("the leader never became a zombie")
        yield ZombieLeader(proc.pid, tid, touched // 1024)
    finally:
        proc.kill()
        proc.wait()


def test_zombie_leader_keeps_its_memory(zombie_leader: ZombieLeader) -> None:
    thread_status = status_kb(zombie_leader.tid)
    record = get_one(zombie_leader.pid)
    assert not isinstance(record, int), os.strerror(-record)
    assert record.pid == zombie_leader.pid
    assert record.comm == "zombie_leader"
    assert record.committed_kb >= zombie_leader.touched_kb
    assert abs(record.committed_kb - thread_status["VmRSS"]) <= RSS_LAG_KB
    assert record.reserved_kb == thread_status["VmSize"]
    oom_score = int(Path(f"/proc/{zombie_leader.pid}/oom_score").read_text())
    assert record.oom_score == oom_score
    listed = {r.pid: r for r in get_all()}
    assert zombie_leader.pid in listed
    assert listed[zombie_leader.pid].committed_kb >= zombie_leader.touched_kb


@pytest.mark.parametrize("backend", ["kernel", "procfs"])
def test_zombie_leader_on_both_backends(zombie_leader: ZombieLeader, backend: str) -> None:
    import tamalloc

    one = tamalloc.get_backend(backend).mem_stats(zombie_leader.pid)
    assert one.committed_kb >= zombie_leader.touched_kb
    assert one.name == "zombie_leader"
    listed = {s.pid: s for s in tamalloc.get_backend(backend).all_mem_stats()}
    assert zombie_leader.pid in listed
    assert listed[zombie_leader.pid].committed_kb >= zombie_leader.touched_kb
