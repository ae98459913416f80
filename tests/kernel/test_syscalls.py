"""The three syscalls called raw, checked against /proc (patched kernel only)."""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import shutil
import subprocess
import sys
import threading

import pytest

from _support import (
    Child,
    assert_memory_matches_status,
    meminfo_kb,
    proc_status,
    read_int,
    status_kb,
)
from tamalloc import abi
from tamalloc._libc import PAGE_SIZE, libc

pytestmark = pytest.mark.usefixtures("require_kernel")

MiB = 1 << 20
GiB = 1 << 30
# 6.1 caches RSS counter updates per thread and flushes them every 64 faults.
RSS_LAG_PAGES_PER_THREAD = 64
ULONG_MAX = (1 << 64) - 1
KERNEL_ADDRESS = 0xFFFF_FFFF_FFFF_F000
NO_SUCH_PID = 0x3FFF_FFFF

MemRecords = abi.TamallocMemStats


def call(nr: int, *args: object) -> int:
    """Return the syscall's result, or -errno."""
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(nr), *args)
    return -ctypes.get_errno() if result == -1 else result


def sys_tamalloc(size: int, flags: int = 0) -> int:
    return call(abi.NR_TAMALLOC, ctypes.c_ulong(size), ctypes.c_ulong(flags))


def sys_get_mem_stats(pid: int, buf: object, size: int, count: int, flags: int = 0) -> int:
    return call(
        abi.NR_GET_MEM_STATS,
        ctypes.c_int(pid),
        buf,
        ctypes.c_uint(size),
        ctypes.c_uint(count),
        ctypes.c_uint(flags),
    )


def sys_get_total_mem_stats(buf: object, size: int, flags: int = 0) -> int:
    return call(abi.NR_GET_TOTAL_MEM_STATS, buf, ctypes.c_uint(size), ctypes.c_uint(flags))


def one(pid: int) -> MemRecords:
    record = MemRecords()
    assert sys_get_mem_stats(pid, ctypes.byref(record), ctypes.sizeof(record), 1) == 1
    return record


def every(headroom: int = 256) -> list[MemRecords]:
    count = sys_get_mem_stats(0, None, ctypes.sizeof(MemRecords), 0)
    assert count > 0
    records = (MemRecords * (count + headroom))()
    written = sys_get_mem_stats(0, records, ctypes.sizeof(MemRecords), len(records))
    assert written > 0
    return list(records[:written])


def total() -> abi.TamallocTotalMemStats:
    record = abi.TamallocTotalMemStats()
    assert sys_get_total_mem_stats(ctypes.byref(record), ctypes.sizeof(record)) == 0
    return record


def oom_score(pid: int) -> int:
    return read_int(f"/proc/{pid}/oom_score")


def rss_pages() -> int:
    """Resident anonymous pages: file pages come and go as the interpreter runs."""
    return status_kb(os.getpid())["RssAnon"] * 1024 // PAGE_SIZE


class Mapping:
    """A tamalloc() mapping seen through a ctypes array, unmapped on exit."""

    def __init__(self, size: int, flags: int = 0) -> None:
        self.address = sys_tamalloc(size, flags)
        assert self.address > 0, f"tamalloc failed: {os.strerror(-self.address)}"
        self.size = size
        self.bytes = (ctypes.c_ubyte * size).from_address(self.address)

    def __enter__(self) -> Mapping:
        return self

    def __exit__(self, *exc: object) -> None:
        assert libc.munmap(ctypes.c_void_p(self.address), ctypes.c_size_t(self.size)) == 0


# --- tamalloc() ----------------------------------------------------------------------


def test_tamalloc_gigabyte_is_lazy_and_zero() -> None:
    np = pytest.importorskip("numpy")
    before = rss_pages()
    with Mapping(GiB) as m:
        assert m.address % PAGE_SIZE == 0
        assert rss_pages() - before < 64, "reserving 1 GiB must not make it resident"
        view = np.frombuffer(m.bytes, dtype=np.uint8)
        # Reading maps the shared zero page: every byte is 0 and nothing is charged.
        assert not view.any()
        assert rss_pages() - before < 256
        written = 1000
        view[: written * PAGE_SIZE : PAGE_SIZE] = ord("x")
        grown = rss_pages() - before
        assert written - RSS_LAG_PAGES_PER_THREAD <= grown <= written + 256
        assert view[(written - 1) * PAGE_SIZE] == ord("x")
        assert view[written * PAGE_SIZE] == 0


def test_tamalloc_first_write_sees_zero_bytes() -> None:
    with Mapping(64 * PAGE_SIZE) as m:
        for page in range(64):
            offset = page * PAGE_SIZE + page  # a different byte in every page
            assert m.bytes[offset] == 0
            m.bytes[offset] = 0x5A
        assert all(m.bytes[p * PAGE_SIZE + p] == 0x5A for p in range(64))


def test_tamalloc_rounds_up_to_whole_pages() -> None:
    address = sys_tamalloc(1)
    assert address > 0
    last = (ctypes.c_ubyte * PAGE_SIZE).from_address(address)
    last[PAGE_SIZE - 1] = 7
    assert last[PAGE_SIZE - 1] == 7
    assert libc.munmap(ctypes.c_void_p(address), ctypes.c_size_t(PAGE_SIZE)) == 0


def thp_enabled() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except FileNotFoundError:
        return False


def anon_huge_kb(address: int) -> int:
    """AnonHugePages of the smaps entry that holds address."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and ":" not in head:
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start <= address < end
            elif inside and head == "AnonHugePages:":
                return int(line.split()[1])
    raise AssertionError(f"no smaps entry holds {address:#x}")


def test_tamalloc_huge_is_aligned_and_backed_by_thp() -> None:
    with Mapping(8 * MiB, abi.TAMALLOC_HUGE) as m:
        assert m.address % (2 * MiB) == 0
        for offset in range(0, m.size, PAGE_SIZE):
            m.bytes[offset] = 1
        if not thp_enabled():
            pytest.skip("transparent hugepages are disabled in this kernel")
        assert anon_huge_kb(m.address) >= 2048


@pytest.mark.parametrize(
    ("size", "flags", "err"),
    [
        (0, 0, errno.EINVAL),
        (PAGE_SIZE, 0x2, errno.EINVAL),
        (PAGE_SIZE, ULONG_MAX, errno.EINVAL),
        (ULONG_MAX, 0, errno.ENOMEM),
        (ULONG_MAX - PAGE_SIZE + 2, 0, errno.ENOMEM),
        (1 << 62, 0, errno.ENOMEM),
        (1 << 62, abi.TAMALLOC_HUGE, errno.ENOMEM),
    ],
)
def test_tamalloc_errors(size: int, flags: int, err: int) -> None:
    assert sys_tamalloc(size, flags) == -err


def in_child(code: str, *wrapper: str) -> str:
    """Run Python code in a child (optionally under a wrapper command); its stdout."""
    env = {**os.environ, "TAMALLOC_BACKEND": "kernel"}
    return subprocess.run(
        [*wrapper, sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout


def test_tamalloc_respects_rlimit_as() -> None:
    out = in_child(
        "import resource, tamalloc\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "try:\n    tamalloc.alloc(2 << 30)\nexcept MemoryError:\n    print('ENOMEM')\n"
    )
    assert out.strip() == "ENOMEM"


# --- get_mem_stats() -----------------------------------------------------------------


def test_one_process_matches_proc_status(child: Child) -> None:
    record = one(child.pid)
    assert record.pid == child.pid
    assert record.comm.decode() == proc_status(child.pid)["Name"]
    assert_memory_matches_status(record, child.pid)
    assert record.pgtables_kb == status_kb(child.pid)["VmPTE"]
    assert record.oom_score == oom_score(child.pid)
    assert record.size == ctypes.sizeof(MemRecords)


def test_self_reserved_tracks_a_new_mapping() -> None:
    before = one(os.getpid()).reserved_kb
    with Mapping(256 * MiB):
        assert one(os.getpid()).reserved_kb - before == 256 * 1024


@pytest.mark.parametrize("adj", [-1000, -500, 0, 500, 1000])
def test_oom_score_follows_oom_score_adj(child: Child, adj: int) -> None:
    with open(f"/proc/{child.pid}/oom_score_adj", "w") as f:
        f.write(str(adj))
    record = one(child.pid)
    assert record.oom_score_adj == adj
    assert record.oom_score == oom_score(child.pid)
    if adj == -1000:
        assert record.oom_score == 0


def test_every_process_matches_proc() -> None:
    records = every()
    pids = [r.pid for r in records]
    assert pids == sorted(pids) and len(set(pids)) == len(pids)
    assert os.getpid() in pids
    listed = 0
    for record in records:
        try:
            fields = status_kb(record.pid)
            score = oom_score(record.pid)
            threads = int(proc_status(record.pid)["Threads"])
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited since the call
        listed += 1
        assert record.reserved_kb == fields["VmSize"], record.comm
        lag_kb = RSS_LAG_PAGES_PER_THREAD * threads * PAGE_SIZE // 1024
        assert abs(record.committed_kb - fields["VmRSS"]) <= lag_kb, record.comm
        assert record.oom_score == score, record.comm
    assert listed >= 2


def test_every_user_process_is_listed_and_no_kernel_thread() -> None:
    user, kernel = set(), set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                has_mm = "VmSize" in proc_status(int(entry))
            except FileNotFoundError:
                continue
            (user if has_mm else kernel).add(int(entry))
    records = {r.pid for r in every()}
    assert kernel, "a running kernel always has kernel threads"
    assert not records & kernel
    still_running = {p for p in user - records if os.path.exists(f"/proc/{p}")}
    assert not still_running, "user processes missing from the list"


def test_kernel_thread_gives_zero_memory() -> None:
    record = one(2)  # kthreadd
    assert record.comm == b"kthreadd"
    assert (record.reserved_kb, record.committed_kb, record.swap_kb) == (0, 0, 0)
    assert record.oom_score == oom_score(2) == 0


def test_thread_id_resolves_to_its_process() -> None:
    got: list[MemRecords] = []
    ready = threading.Event()

    def worker() -> None:
        got.append(one(threading.get_native_id()))
        ready.set()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert ready.is_set()
    assert got[0].pid == os.getpid()
    assert sum(1 for r in every() if r.pid == os.getpid()) == 1


def test_count_query_and_too_small_buffer(child: Child) -> None:
    size = ctypes.sizeof(MemRecords)
    needed = sys_get_mem_stats(0, None, size, 0)
    assert needed >= 2
    small = (MemRecords * 1)()
    assert sys_get_mem_stats(0, small, size, 1) == -errno.EOVERFLOW
    assert sys_get_mem_stats(child.pid, None, size, 0) == 1


def test_larger_record_is_zero_filled_at_its_stride(child: Child) -> None:
    stride = ctypes.sizeof(MemRecords) + 40
    count = sys_get_mem_stats(0, None, stride, 0) + 64
    buf = (ctypes.c_ubyte * (stride * count))(*([0xFF] * (stride * count)))
    written = sys_get_mem_stats(0, buf, stride, count)
    assert written >= 2
    pids = []
    for i in range(written):
        base = i * stride
        record = MemRecords.from_buffer_copy(bytes(buf[base : base + ctypes.sizeof(MemRecords)]))
        pids.append(record.pid)
        assert bytes(buf[base + ctypes.sizeof(MemRecords) : base + stride]) == bytes(40)
    assert child.pid in pids


@pytest.mark.parametrize(
    ("pid", "buf", "size", "count", "flags", "err"),
    [
        (-1, "ok", 88, 1, 0, errno.EINVAL),
        (-(2**31), "ok", 88, 1, 0, errno.EINVAL),
        ("self", "ok", 88, 1, 1, errno.EINVAL),
        ("self", "ok", 0, 1, 0, errno.EINVAL),
        ("self", "ok", 87, 1, 0, errno.EINVAL),
        ("self", "ok", 4097, 1, 0, errno.EINVAL),
        ("self", "ok", 88, 0, 0, errno.EINVAL),
        (NO_SUCH_PID, "ok", 88, 1, 0, errno.ESRCH),
        ("self", None, 88, 1, 0, errno.EFAULT),
        ("self", "unmapped", 88, 1, 0, errno.EFAULT),
        ("self", "kernel", 88, 1, 0, errno.EFAULT),
        (0, None, 88, 1, 0, errno.EFAULT),
        (0, "kernel", 88, 4096, 0, errno.EFAULT),
        (0, "unmapped", 88, 4096, 0, errno.EFAULT),
    ],
)
def test_get_mem_stats_errors(
    unmapped: int, pid: object, buf: object, size: int, count: int, flags: int, err: int
) -> None:
    pointer = user_pointer(buf, MemRecords(), unmapped)
    target = os.getpid() if pid == "self" else pid
    assert sys_get_mem_stats(target, pointer, size, count, flags) == -err


def user_pointer(kind: object, record: ctypes.Structure, unmapped: int) -> object:
    """The pointer an error case passes: to a real record, NULL, unmapped or kernel."""
    return {
        "ok": ctypes.byref(record),
        None: None,
        "unmapped": ctypes.c_void_p(unmapped),
        "kernel": ctypes.c_void_p(KERNEL_ADDRESS),
    }[kind]


@pytest.fixture
def unmapped() -> int:
    """An address that was mapped a moment ago and no longer is."""
    area = mmap.mmap(-1, PAGE_SIZE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(area))
    area.close()
    return address


# --- get_total_mem_stats() -----------------------------------------------------------


def test_totals_equal_the_sum_of_the_records() -> None:
    size = ctypes.sizeof(MemRecords)
    capacity = sys_get_mem_stats(0, None, size, 0) + 256
    first, second = (MemRecords * capacity)(), (MemRecords * capacity)()
    summed = abi.TamallocTotalMemStats()
    # Anything may allocate between two calls; accept a moment when nothing did.
    for _ in range(50):
        n1 = sys_get_mem_stats(0, first, size, capacity)
        assert sys_get_total_mem_stats(ctypes.byref(summed), ctypes.sizeof(summed)) == 0
        n2 = sys_get_mem_stats(0, second, size, capacity)
        if n1 == n2 and bytes(first)[: n1 * size] == bytes(second)[: n2 * size]:
            break
    else:
        pytest.fail("the process table never held still across three calls")
    records = first[:n1]
    assert summed.processes == n1
    assert summed.reserved_kb == sum(r.reserved_kb for r in records)
    assert summed.committed_kb == sum(r.committed_kb for r in records)
    assert summed.swap_kb == sum(r.swap_kb for r in records)


def test_totals_carry_the_meminfo_figures() -> None:
    summed = total()
    info = meminfo_kb()
    assert summed.mem_total_kb == info["MemTotal"]
    assert summed.commit_limit_kb == info["CommitLimit"]
    # Committed_AS moves with every mapping anyone makes.
    assert abs(summed.committed_as_kb - info["Committed_AS"]) < 64 * 1024
    with open("/proc/sys/vm/overcommit_memory") as f:
        assert summed.overcommit_memory == int(f.read())
    assert summed.size == ctypes.sizeof(abi.TamallocTotalMemStats)


def test_tamalloc_is_not_charged_to_committed_as() -> None:
    before = total().committed_as_kb
    with Mapping(4 * GiB):
        after = total().committed_as_kb
    assert after - before < 1024 * 1024, "MAP_NORESERVE memory must not be charged"


@pytest.mark.parametrize(
    ("buf", "size", "flags", "err"),
    [
        ("ok", 64, 1, errno.EINVAL),
        ("ok", 0, 0, errno.EINVAL),
        ("ok", 63, 0, errno.EINVAL),
        ("ok", 4097, 0, errno.EINVAL),
        (None, 64, 0, errno.EFAULT),
        ("kernel", 64, 0, errno.EFAULT),
        ("unmapped", 64, 0, errno.EFAULT),
    ],
)
def test_get_total_mem_stats_errors(
    unmapped: int, buf: object, size: int, flags: int, err: int
) -> None:
    pointer = user_pointer(buf, abi.TamallocTotalMemStats(), unmapped)
    assert sys_get_total_mem_stats(pointer, size, flags) == -err


# --- pid namespaces ------------------------------------------------------------------

NAMESPACE_PROBE = """
import json, os, tamalloc
print(json.dumps({
    "pids": [s.pid for s in tamalloc.all_mem_stats()],
    "proc": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "processes": tamalloc.total_mem_stats().processes,
}))
"""


def test_pid_namespace_sees_only_its_own_processes() -> None:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare(1) from util-linux is not installed")
    if os.geteuid() != 0:
        pytest.skip("creating a pid namespace needs root (runs inside make vm-test)")
    seen = json.loads(in_child(NAMESPACE_PROBE, unshare, "--pid", "--fork", "--mount-proc"))
    # Inside: the python process is pid 1 and alone; the host's processes are invisible.
    assert seen["pids"] == [1]
    assert seen["proc"] == [1]
    assert seen["processes"] == 1
    assert len(every()) > 1
