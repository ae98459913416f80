"""The bpf backend's task iterator under the storm (issue 17, item 5).

While tests/stress/storm.c makes processes and threads come and go (fork/_exit, vfork,
exec, zombie leaders, exit_group from a thread, pid numbers wrapping through a small
pid_max), three threads here read the iterator without pause:

- whole passes, every record checked on its own (known flags, a NUL-terminated name,
  memory within what the machine and the address space can hold, page tables in whole
  pages, a cgroup) and against the pass (leaders in increasing pid order, as the
  iterator walks task ids, each once);
- the backend's answers from passes (all_mem_stats, oom_tasks, total_mem_stats);
- interrupted passes: an iterator opened on the same link (BPF_ITER_CREATE), read a
  random few bytes at a time, closed part way; what was read must be whole, valid
  records.

The short form (`make vm-test`) reads at least 1,000 whole and 1,000 interrupted passes
and 200 decoded ones; TAMALLOC_STRESS=long (`make stress`) 20,000 and 4,000. Runs as
root in the guest (the storm needs the syscalls, the iterator BTF); elsewhere the file
is skipped. The kernel log must stay clean (the campaign's no_splat, and vm/run.py
--check-log for the boot).
"""

from __future__ import annotations

import ctypes
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from stress_support import IN_VM, LONG, RUN_TIMEOUT, build, libc, run

from _support import meminfo_kb, subprocess_env

if not IN_VM:
    pytest.skip("runs inside the VM: make vm-test", allow_module_level=True)

pytestmark = [pytest.mark.usefixtures("require_kernel"), pytest.mark.bpf]

from test_stress_campaign import SEED, STORM_PID_MAX, no_splat  # noqa: E402, F401  (no_splat: the fixture)

from tamalloc.backends import bpf, get_backend  # noqa: E402  (after the VM check)

PASSES = 20_000 if LONG else 1_000
# The decoding thread shares the GIL with the others: a fifth as many of its passes
# (in the guest it managed one for every 12 whole passes).
DECODED = PASSES // 5
STORM_PROCESSES = 1_000 if LONG else 100  # a storm run; runs follow each other
KILLED_READERS = 50 if LONG else 5  # Python and a program load each: slow in the guest
SYS_BPF = 321  # x86_64, as the guest
BPF_ITER_CREATE = 33
PID_MAX_LIMIT = 4 * 1024 * 1024
TASK_SIZE_PAGES = (1 << 47) // bpf._PAGE  # x86_64 user address space, 4-level tables
KNOWN_FLAGS = (
    bpf.THREAD
    | bpf.NO_MM
    | bpf.OOM_SKIP
    | bpf.OOM_ORIGIN
    | bpf.VFORK
    | bpf.EXITING
    | bpf.OOM_VICTIM
    | bpf.GLOBAL_INIT
    | 0x100  # TAM_BPF_NO_PGTABLES (memstats.h): a kernel without pgtables_bytes
)


class Invalid(AssertionError):
    pass


def check_records(data: bytes, ram_pages: int) -> tuple[int, int]:
    """Every record of ``data`` valid on its own and within the pass; (records, thread
    records standing in for a zombie leader)."""
    if len(data) % bpf.RECORD.size:
        raise Invalid(f"{len(data)} bytes: not whole records")
    last_leader = 0
    threads = 0
    records = list(bpf.RECORD.iter_unpack(data))
    for rec in records:
        pid, flags, adj, pad, comm, vm, anon, file_, shmem, swap, pgtables, cgroup = rec
        where = f"record {rec!r}"
        if not 0 < pid <= PID_MAX_LIMIT or pad or flags & ~KNOWN_FLAGS:
            raise Invalid(where)
        if comm[-1] != 0 or not -1000 <= adj <= 1000 or cgroup == 0:
            raise Invalid(where)
        if flags & bpf.NO_MM:
            # a leader without mm: nothing of memory, and not a thread's record
            if flags & bpf.THREAD or (vm, anon, file_, shmem, swap, pgtables) != (0,) * 6:
                raise Invalid(where)
        else:
            if not 0 < vm <= TASK_SIZE_PAGES or pgtables % bpf._PAGE:
                raise Invalid(where)
            if max(anon, file_, shmem, swap) > ram_pages or pgtables > ram_pages * bpf._PAGE:
                raise Invalid(where)
        if flags & bpf.THREAD:
            threads += 1
            continue
        # The iterator walks task ids upwards and a leader's id is its pid: leaders come
        # in increasing order, each once, across the read()s of a pass.
        if pid <= last_leader:
            raise Invalid(f"{where} after leader {last_leader}")
        last_leader = pid
    return len(records), threads


def iter_link_fd() -> int:
    """The fd of the task iterator's link that _bpfiter made (loaded by the backend)."""
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
            info = Path(f"/proc/self/fdinfo/{name}").read_text()
        except OSError:
            continue
        if target == "anon_inode:bpf_link" and re.search(r"target_name:\s+task\b", info):
            return int(name)
    raise AssertionError("no task iterator link among this process's fds")


def iter_create(link_fd: int) -> int:
    attr = (ctypes.c_uint32 * 2)(link_fd, 0)  # union bpf_attr's iter_create
    fd = libc.syscall(
        ctypes.c_long(SYS_BPF), ctypes.c_long(BPF_ITER_CREATE), attr, ctypes.sizeof(attr)
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"BPF_ITER_CREATE: {os.strerror(err)}")
    return int(fd)


class Readers:
    """The three readers, each a thread counting what it read until ``stop``."""

    def __init__(self, ram_pages: int, seed: int) -> None:
        self.ram_pages = ram_pages
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.passes = self.records = self.threads = 0
        self.decoded = self.processes_max = 0
        self.partial = self.partial_records = 0
        self.link = iter_link_fd()

    def _loop(self, body: Callable[[], None]) -> None:
        try:
            while not self.stop.is_set():
                body()
        except BaseException as err:  # reported by the test, which stops the others
            self.errors.append(err)
            self.stop.set()

    def whole(self) -> None:
        records, threads = check_records(bpf._read_pass(), self.ram_pages)
        self.passes += 1
        self.records += records
        self.threads += threads

    def answers(self) -> None:
        backend = get_backend("bpf")
        stats = backend.all_mem_stats()
        pids = [s.pid for s in stats]
        if len(pids) != len(set(pids)) or not pids:
            raise Invalid(f"pids of all_mem_stats: {pids}")
        for s in stats:
            if not (0 <= s.oom_score <= 2000 and s.reserved_kb >= 0 and "\0" not in s.name):
                raise Invalid(repr(s))
        for task in backend.oom_tasks():
            if task.pid <= 0 or task.rss_kb < 0 or not 0 <= task.oom_score <= 2000:
                raise Invalid(repr(task))
        if backend.total_mem_stats().processes <= 0:
            raise Invalid("no process in total_mem_stats")
        self.decoded += 1
        self.processes_max = max(self.processes_max, len(stats))

    def interrupted(self) -> None:
        fd = iter_create(self.link)
        data = b""
        try:
            for _ in range(self.rng.randint(1, 4)):
                chunk = os.read(fd, self.rng.randint(1, 3 * bpf.RECORD.size + 7))
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
        whole = len(data) - len(data) % bpf.RECORD.size
        records, _ = check_records(data[:whole], self.ram_pages)
        self.partial += 1
        self.partial_records += records


def test_iterator_through_the_storm(tmp_path: Path) -> None:
    storm = build(["storm"], tmp_path)["storm"]
    get_backend("bpf")  # loads the program: a failure here fails the test
    meminfo = meminfo_kb()
    ram_pages = (meminfo["MemTotal"] + meminfo["SwapTotal"]) * 1024 // bpf._PAGE
    readers = Readers(ram_pages, int(SEED))
    threads = [
        threading.Thread(target=readers._loop, args=(body,), name=body.__name__)
        for body in (readers.whole, readers.answers, readers.interrupted)
    ]
    for thread in threads:
        thread.start()
    storms = processes = 0
    outputs = []
    try:
        while not readers.stop.is_set():
            result = run(
                [
                    str(storm),
                    "-p",
                    str(STORM_PROCESSES),
                    "-j",
                    "1",
                    "-r",
                    str(STORM_PID_MAX),
                    "-s",
                    str(int(SEED) + storms),
                ]
            )
            storms += 1
            outputs.append(result.stdout)
            assert result.returncode == 0, result.stdout + result.stderr
            assert "storm: 0 invalid: OK" in result.stdout
            created = re.search(r"^storm: [\d.]+ s: (\d+) processes", result.stdout, re.M)
            assert created, result.stdout
            processes += int(created.group(1))
            if min(readers.passes, readers.partial) >= PASSES and readers.decoded >= DECODED:
                break
    finally:
        readers.stop.set()
        for thread in threads:
            thread.join(timeout=RUN_TIMEOUT)
    if readers.errors:
        raise readers.errors[0]
    print(
        f"bpf storm: {readers.passes} passes ({readers.records} records, {readers.threads}"
        f" thread records for zombie leaders), {readers.decoded} decoded passes (up to"
        f" {readers.processes_max} processes), {readers.partial} interrupted passes"
        f" ({readers.partial_records} records); {storms} storms, {processes} processes",
        flush=True,
    )
    assert min(readers.passes, readers.partial) >= PASSES and readers.decoded >= DECODED
    assert processes >= STORM_PROCESSES
    assert readers.partial_records > 0


def test_a_reader_killed_mid_pass_leaves_the_kernel_clean(tmp_path: Path) -> None:
    """Readers SIGKILLed at any point of a pass (their iterator released by exit)."""
    script = (
        "from tamalloc.backends import bpf, get_backend\n"
        "get_backend('bpf')\nprint('ready', flush=True)\n"
        "while True:\n    bpf._read_pass()\n"
    )
    get_backend("bpf")
    rng = random.Random(int(SEED))
    for _ in range(KILLED_READERS):
        proc = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            time.sleep(rng.random() / 10)  # somewhere in a pass, or between two
        finally:
            proc.kill()
            proc.wait()
    # The iterator still reads, and whole records.
    assert check_records(bpf._read_pass(), 1 << 40)[0] > 0
