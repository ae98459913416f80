"""The system_stats module: its four /proc files checked against procfs, in the guest.

Runs as root inside the VM (`make vm-test`, which sets TAMALLOC_IN_VM=1) and loads
kernel/modules/system_stats/system_stats.ko, built by `make module` before the guest
boots.  Elsewhere the whole file is skipped; inside the VM a missing module is a failure.
Every test also fails if the kernel logged a splat (BUG, WARNING, KASAN, lockdep, ...)
while it ran.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from _support import KernelLog, meminfo_kb

IN_VM = os.environ.get("TAMALLOC_IN_VM") == "1"
if not IN_VM:
    pytest.skip("runs inside the VM: make vm-test", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "kernel" / "modules" / "system_stats"
KO = MODULE_DIR / "system_stats.ko"
SYSFS = Path("/sys/module/system_stats")
FILES = {
    "system_stats": 0o444,
    "system_stats.json": 0o444,
    "mem_stats_all": 0o444,
    "mem_watch": 0o644,
}
CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
PF_KTHREAD = 0x00200000
PR_SET_NAME = 15
CLONE_NEWPID = 0x20000000
CLONE_NEWNS = 0x00020000
MS_PRIVATE = 1 << 18
MS_REC = 16384
SYS_DELETE_MODULE = 176  # x86_64, as the guest
SYS_FINIT_MODULE = 313

libc = ctypes.CDLL(None, use_errno=True)
C_LONG = ctypes.c_long

# What the kernel's debug checks print when they fire (as vm/run.py --check-log).
SPLAT = re.compile(
    r"BUG:|WARNING:|KASAN|UBSAN:|Oops|general protection fault|Kernel panic"
    r"|sleeping function called from invalid context|possible recursive locking"
    r"|circular locking dependency|suspicious RCU usage|INFO: task .* blocked"
    r"|soft lockup|rcu_sched detected stalls|rcu: INFO|Call Trace:|refcount_t:"
    r"|divide error:|invalid opcode:"
)

TEXT_FORMAT = re.compile(
    r"\[memory\]\n"
    r"total_kb \d+\nused_kb \d+\nfree_kb \d+\navailable_kb \d+\nbuffers_kb \d+\n"
    r"cached_kb \d+\n"
    r"\n\[cpu\]\n"
    r"# name user nice system idle iowait irq softirq steal \(USER_HZ ticks\)\n"
    r"cpu(?: \d+){8}\n"
    r"(?:cpu\d+(?: \d+){8}\n)+"
    r"\n\[disk /\]\n"
    r"total_kb \d+\nfree_kb \d+\navailable_kb \d+\nused_pct \d+\.\d\n\Z"
)


# --- helpers -------------------------------------------------------------------------


def module_loaded() -> bool:
    return SYSFS.exists()


def insmod() -> None:
    run = subprocess.run(["insmod", str(KO)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, f"insmod {KO}: {run.stderr.strip()}"


def rmmod() -> None:
    run = subprocess.run(["rmmod", "system_stats"], capture_output=True, text=True, check=False)
    assert run.returncode == 0, f"rmmod system_stats: {run.stderr.strip()}"


def load_direct() -> None:
    """insmod without a process: finit_module(2), cheap enough to repeat under emulation."""
    fd = os.open(KO, os.O_RDONLY)
    try:
        ok = (
            libc.syscall(C_LONG(SYS_FINIT_MODULE), C_LONG(fd), ctypes.c_char_p(b""), C_LONG(0)) == 0
        )
    finally:
        os.close(fd)
    if not ok:
        err = ctypes.get_errno()
        raise OSError(err, f"finit_module {KO}: {os.strerror(err)}")


def unload_direct() -> None:
    """rmmod without a process: delete_module(2) with O_NONBLOCK, as rmmod(8) calls it."""
    name = ctypes.c_char_p(b"system_stats")
    if libc.syscall(C_LONG(SYS_DELETE_MODULE), name, C_LONG(os.O_NONBLOCK)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"delete_module system_stats: {os.strerror(err)}")


def read_proc(name: str) -> str:
    """A whole /proc file; the module's output must be valid UTF-8."""
    return Path("/proc", name).read_bytes().decode("utf-8")


def read_json(name: str) -> dict:
    return json.loads(read_proc(name))


def splats(lines: list[str]) -> list[str]:
    return [line for line in lines if SPLAT.search(line)]


def proc_stat_cpus() -> dict[str, list[int]]:
    cpus = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu"):
            name, *values = line.split()
            cpus[name] = [int(v) for v in values[:8]]
    return cpus


def parse_text(text: str) -> dict[str, dict[str, list[int] | int | float]]:
    """Our own reading of /proc/system_stats: {"memory": {...}, "cpu": {...}, "disk /": ...}."""
    sections: dict[str, dict] = {}
    section = ""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line[1:-1]
            sections[section] = {}
            continue
        key, *values = line.split(" ")
        if section == "cpu":
            sections[section][key] = [int(v) for v in values]
        elif key == "used_pct":
            sections[section][key] = float(values[0])
        else:
            sections[section][key] = int(values[0])
    return sections


def status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def status_kb(fields: dict[str, str], key: str) -> int:
    return int(fields[key].split()[0]) if key in fields else 0


def comm(pid: int) -> str:
    """/proc/PID/comm as the module must print it: bad UTF-8 replaced like Python does."""
    raw = Path(f"/proc/{pid}/comm").read_bytes()
    return raw[:-1].decode("utf-8", "replace")


def procfs_record(pid: int) -> dict:
    """What /proc/PID/{status,comm,oom_score,oom_score_adj} say about one process."""
    fields = status(pid)
    return {
        "pid": pid,
        "name": comm(pid),
        "vm_size_kb": status_kb(fields, "VmSize"),
        "vm_rss_kb": status_kb(fields, "VmRSS"),
        "oom_score": int(Path(f"/proc/{pid}/oom_score").read_text()),
        "oom_score_adj": int(Path(f"/proc/{pid}/oom_score_adj").read_text()),
    }


def is_kthread(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat").read_bytes()  # the name in it may be any bytes
    flags = int(stat.rsplit(b")", 1)[1].split()[6])
    return bool(flags & PF_KTHREAD)


def user_pids_in_proc() -> set[int]:
    """Processes in /proc that have memory (not kernel threads, not zombies)."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if not is_kthread(int(entry)) and "VmSize" in status(int(entry)):
                    pids.add(int(entry))
    return pids


def spawn_sleeper(name: bytes | None = None, adj: int | None = None, touch_mib: int = 0) -> int:
    """Fork a child that sets its name and oom_score_adj, touches memory, then sleeps."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            if adj is not None:
                Path("/proc/self/oom_score_adj").write_text(str(adj))
            _touched = bytearray(b"\x01") * (touch_mib << 20)
            if name is not None:
                libc.prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)
            os.write(w, b"1")
            while True:
                signal.pause()
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"1"
    os.close(r)
    return pid


def reap(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def watch_open() -> int:
    return os.open("/proc/mem_watch", os.O_RDWR)


def watch_select(fd: int, value: bytes) -> None:
    os.write(fd, value)


def watch_read(fd: int) -> dict:
    return json.loads(os.pread(fd, 65536, 0).decode("utf-8"))


def records_by_pid(data: dict) -> dict[int, dict]:
    return {p["pid"]: p for p in data["processes"]}


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def module_ko() -> Iterator[Path]:
    """The built module, loaded for the tests and unloaded after the last one."""
    if os.geteuid() != 0:
        pytest.fail("the module tests must run as root inside the VM")
    if not KO.exists():
        pytest.fail(f"{KO} missing: `make module` builds it before the guest boots")
    if module_loaded():
        rmmod()
    insmod()
    yield KO
    if module_loaded():
        rmmod()


@pytest.fixture(autouse=True)
def no_splat() -> Iterator[KernelLog]:
    """Fail the test if the kernel logged a BUG/WARNING/KASAN/lockdep report during it."""
    log = KernelLog()
    yield log
    bad = splats(log.new_lines())
    log.close()
    assert not bad, "kernel log:\n" + "\n".join(bad[:40])


@pytest.fixture
def loaded() -> None:
    if not module_loaded():
        insmod()


@pytest.fixture(scope="module")
def sleepers() -> Iterator[dict[str, int]]:
    """Quiet children whose /proc values do not change while the tests read them."""
    kids = {
        "plain": spawn_sleeper(),
        "adj_min": spawn_sleeper(adj=-1000),
        "adj_neg": spawn_sleeper(adj=-500),
        "adj_pos": spawn_sleeper(adj=300, touch_mib=8),
        "adj_max": spawn_sleeper(adj=1000),
        "quotes": spawn_sleeper(name=b'q"u\\o\\"te'),
        "control": spawn_sleeper(name=b"c\x01t\tn\nr\x7f\x1b"),
        "utf8": spawn_sleeper(name="caf\u00e9-\u20ac".encode()),
        "bad_utf8": spawn_sleeper(name=b"x\xff\xe2\x82y\xc0\xafz\xe2\x82"),
    }
    yield kids
    for pid in kids.values():
        reap(pid)


# --- the files -----------------------------------------------------------------------


@pytest.mark.usefixtures("loaded")
def test_files_exist_with_their_modes() -> None:
    for name, mode in FILES.items():
        st = os.stat(f"/proc/{name}")
        assert st.st_mode & 0o7777 == mode, f"/proc/{name}: {oct(st.st_mode)}"
        assert st.st_uid == 0


@pytest.mark.usefixtures("loaded")
def test_system_stats_text_format() -> None:
    text = read_proc("system_stats")
    assert TEXT_FORMAT.match(text), text
    sections = parse_text(text)
    mem = sections["memory"]
    assert mem["used_kb"] == mem["total_kb"] - mem["available_kb"]
    disk = sections["disk /"]
    assert disk["free_kb"] <= disk["total_kb"]
    assert disk["available_kb"] <= disk["free_kb"]
    used = disk["total_kb"] - disk["free_kb"]
    expect = round(used / (used + disk["available_kb"]) * 100, 1)  # as df
    assert abs(disk["used_pct"] - expect) <= 0.1


@pytest.mark.usefixtures("loaded")
def test_memory_agrees_with_meminfo() -> None:
    before = meminfo_kb()
    mem = parse_text(read_proc("system_stats"))["memory"]
    after = meminfo_kb()
    assert mem["total_kb"] == before["MemTotal"] == after["MemTotal"]
    slack = max(8192, before["MemTotal"] // 200)  # what the test itself allocates
    for key, field in (
        ("free_kb", "MemFree"),
        ("available_kb", "MemAvailable"),
        ("buffers_kb", "Buffers"),
        ("cached_kb", "Cached"),
    ):
        low, high = sorted((before[field], after[field]))
        assert low - slack <= mem[key] <= high + slack, (key, mem[key], low, high)


@pytest.mark.usefixtures("loaded")
def test_cpu_agrees_with_proc_stat() -> None:
    before = proc_stat_cpus()
    cpu = parse_text(read_proc("system_stats"))["cpu"]
    after = proc_stat_cpus()
    online = [name for name in before if name != "cpu"]
    assert list(cpu) == ["cpu", *online], "a total line, then one per online CPU, in order"
    for name, ticks in cpu.items():
        assert len(ticks) == 8
        for i, field in enumerate(CPU_FIELDS):
            # idle and iowait of a CPU idle right now are estimated (NO_HZ) and can
            # move a little between idle and iowait; the rest only grows.
            slack = 5 if field in ("idle", "iowait") else 0
            low, high = before[name][i], after[name][i]
            assert low - slack <= ticks[i] <= high + slack, (name, field, low, ticks[i], high)


@pytest.mark.usefixtures("loaded")
def test_disk_agrees_with_statvfs() -> None:
    before = os.statvfs("/")
    disk = parse_text(read_proc("system_stats"))["disk /"]
    after = os.statvfs("/")

    def kb(st: os.statvfs_result, blocks: str) -> int:
        return getattr(st, blocks) * st.f_frsize // 1024

    assert disk["total_kb"] == kb(before, "f_blocks")
    slack = 256 << 10  # the host's root: other builds write to it while we read
    for key, blocks in (("free_kb", "f_bfree"), ("available_kb", "f_bavail")):
        low, high = sorted((kb(before, blocks), kb(after, blocks)))
        assert low - slack <= disk[key] <= high + slack, (key, disk[key], low, high)


@pytest.mark.usefixtures("loaded")
def test_json_holds_the_same_values() -> None:
    first = parse_text(read_proc("system_stats"))
    data = read_json("system_stats.json")
    last = parse_text(read_proc("system_stats"))

    assert set(data) == {"memory", "cpu", "disk"}
    assert set(data["memory"]) == set(first["memory"])
    assert data["memory"]["total_kb"] == first["memory"]["total_kb"]
    m = data["memory"]
    assert m["used_kb"] == m["total_kb"] - m["available_kb"]

    assert set(data["cpu"]) == {"total", "per_cpu"}
    assert list(data["cpu"]["total"]) == list(CPU_FIELDS)
    assert [c["cpu"] for c in data["cpu"]["per_cpu"]] == [
        int(name[3:]) for name in first["cpu"] if name != "cpu"
    ]
    rows = [("cpu", data["cpu"]["total"])]
    rows += [(f"cpu{c['cpu']}", c) for c in data["cpu"]["per_cpu"]]
    for name, values in rows:
        for i, field in enumerate(CPU_FIELDS):
            slack = 5 if field in ("idle", "iowait") else 0
            assert first["cpu"][name][i] - slack <= values[field]
            assert values[field] <= last["cpu"][name][i] + slack

    disk = data["disk"]
    assert disk["path"] == "/"
    assert set(disk) == {"path", "total_kb", "free_kb", "available_kb", "used_pct"}
    assert disk["total_kb"] == first["disk /"]["total_kb"]
    assert isinstance(disk["used_pct"], float)


@pytest.mark.usefixtures("loaded")
def test_package_parser_reads_the_text() -> None:
    system = pytest.importorskip("tamalloc.system")
    text = read_proc("system_stats")
    ours = parse_text(text)
    stats = system.parse_system_stats(text).to_dict()
    assert stats["memory"] == ours["memory"]
    assert [stats["cpu"]["total"][f] for f in CPU_FIELDS] == ours["cpu"]["cpu"]
    for c in stats["cpu"]["per_cpu"]:
        assert [c[f] for f in CPU_FIELDS] == ours["cpu"][f"cpu{c['cpu']}"]
    for key in ("total_kb", "free_kb", "available_kb"):
        assert stats["disk"][key] == ours["disk /"][key]
    # Both as df computes it from the same sizes: the module to a tenth, the package
    # to a hundredth of a percent.
    disk = ours["disk /"]
    used = disk["total_kb"] - disk["free_kb"]
    df_pct = used * 100 / (used + disk["available_kb"])
    assert abs(disk["used_pct"] - df_pct) <= 0.05 + 1e-9, (disk, df_pct)
    assert stats["disk"]["used_pct"] == round(df_pct, 2)


# --- /proc/mem_stats_all -------------------------------------------------------------


@pytest.mark.usefixtures("loaded")
def test_mem_stats_all_agrees_with_procfs(sleepers: dict[str, int]) -> None:
    procfs_before = user_pids_in_proc()
    data = read_json("mem_stats_all")
    procfs_after = user_pids_in_proc()

    assert set(data) == {"processes", "totals"}
    procs = data["processes"]
    pids = [p["pid"] for p in procs]
    assert pids == sorted(set(pids)), "one record per process, in increasing pid order"
    keys = {"pid", "name", "vm_size_kb", "vm_rss_kb", "oom_score", "oom_score_adj"}
    assert all(set(p) == keys for p in procs)

    totals = data["totals"]
    assert totals == {
        "processes": len(procs),
        "vm_size_kb": sum(p["vm_size_kb"] for p in procs),
        "vm_rss_kb": sum(p["vm_rss_kb"] for p in procs),
    }

    # Every user process that existed throughout is listed, and nothing else.
    assert procfs_before & procfs_after <= set(pids)
    assert set(pids) <= procfs_before | procfs_after
    assert not [pid for pid in pids if is_kthread(pid)]
    assert set(sleepers.values()) <= set(pids)

    # Quiet processes (all but this one) agree exactly with procfs.
    me = os.getpid()
    for p in procs:
        if p["pid"] == me:
            continue
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            assert p == procfs_record(p["pid"])
    mine = records_by_pid(data)[me]
    assert mine["name"] == comm(me)
    assert mine["vm_size_kb"] > 0
    assert mine["vm_rss_kb"] > 0


@pytest.mark.usefixtures("loaded")
def test_oom_score_is_exactly_procfs(sleepers: dict[str, int]) -> None:
    by_pid = records_by_pid(read_json("mem_stats_all"))
    scores = {}
    for key in ("plain", "adj_min", "adj_neg", "adj_pos", "adj_max"):
        pid = sleepers[key]
        expect = int(Path(f"/proc/{pid}/oom_score").read_text())
        assert by_pid[pid]["oom_score"] == expect, key
        assert by_pid[pid]["oom_score_adj"] == int(Path(f"/proc/{pid}/oom_score_adj").read_text())
        scores[key] = expect
    assert scores["adj_min"] == 0
    assert scores["adj_neg"] < scores["plain"] < scores["adj_pos"] < scores["adj_max"]
    if 1 in by_pid:  # global init is never killed
        assert by_pid[1]["oom_score"] == 0 == int(Path("/proc/1/oom_score").read_text())


@pytest.mark.usefixtures("loaded")
def test_names_are_json_escaped(sleepers: dict[str, int]) -> None:
    text = read_proc("mem_stats_all")
    by_pid = records_by_pid(json.loads(text))
    expected = {
        "quotes": 'q"u\\o\\"te',
        "control": "c\x01t\tn\nr\x7f\x1b",
        "utf8": "caf\u00e9-\u20ac",
        "bad_utf8": "x\ufffd\ufffdy\ufffd\ufffdz\ufffd",
    }
    for key, name in expected.items():
        pid = sleepers[key]
        assert comm(pid) == name
        assert by_pid[pid]["name"] == name, key
    # Control characters never appear raw in the output; each record is one line.
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", text)
    assert len(text.rstrip("\n").split("\n")) == len(by_pid) + 2


@pytest.mark.usefixtures("loaded")
def test_mem_stats_all_in_small_reads_and_after_lseek(sleepers: dict[str, int]) -> None:
    raw = Path("/proc/mem_stats_all").read_bytes()
    whole = json.loads(raw)
    fd = os.open("/proc/mem_stats_all", os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 61):
            chunks.append(chunk)
        small = json.loads(b"".join(chunks))
        assert os.lseek(fd, 0, os.SEEK_SET) == 0
        again = json.loads(os.read(fd, 1 << 20))
        middle = os.pread(fd, 100, 50)
    finally:
        os.close(fd)
    assert middle == raw[50:150]  # the header and pid 1, which do not change
    me = os.getpid()
    for data in (small, again):
        assert [p["pid"] for p in data["processes"]] == [p["pid"] for p in whole["processes"]]
        assert data["totals"]["processes"] == len(data["processes"])
        assert data["totals"]["vm_size_kb"] == sum(p["vm_size_kb"] for p in data["processes"])
        quiet = [p for p in data["processes"] if p["pid"] != me]
        assert quiet == [p for p in whole["processes"] if p["pid"] != me]


@pytest.mark.usefixtures("loaded")
def test_two_thousand_processes(tmp_path: Path) -> None:
    source = tmp_path / "forker.c"
    source.write_text(FORKER_C)
    forker = tmp_path / "forker"
    subprocess.run(["gcc", "-O2", "-o", str(forker), str(source)], check=True)
    count = 2000
    child = subprocess.Popen(
        [str(forker), str(count)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        kids = {int(child.stdout.readline()) for _ in range(count)}
        assert len(kids) == count
        data = read_json("mem_stats_all")
        listed = records_by_pid(data)
        assert kids <= set(listed)
        assert data["totals"]["processes"] == len(listed) >= count + 1
        sample = sorted(kids)[:: count // 20]
        for pid in sample:
            assert listed[pid] == procfs_record(pid)
    finally:
        if child.stdin:
            child.stdin.close()
        assert child.wait(timeout=600) == 0
    after = records_by_pid(read_json("mem_stats_all"))
    assert not kids & set(after), "reaped children are gone"


FORKER_C = r"""
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int i, n = atoi(argv[1]);
	pid_t *kids = calloc(n, sizeof(*kids));
	char c;

	for (i = 0; i < n; i++) {
		kids[i] = fork();
		if (kids[i] < 0) {
			perror("fork");
			n = i;
			break;
		}
		if (kids[i] == 0) {
			for (;;)
				pause();
		}
		printf("%d\n", kids[i]);
	}
	fflush(stdout);
	while (read(0, &c, 1) > 0)
		;
	for (i = 0; i < n; i++)
		kill(kids[i], SIGKILL);
	while (wait(NULL) > 0)
		;
	return n == atoi(argv[1]) ? 0 : 1;
}
"""


@pytest.mark.usefixtures("loaded")
def in_child(work: Callable[[], object], namespaces: int) -> tuple[object, int]:
    """Run ``work`` in a child that has unshared ``namespaces`` (with CLONE_NEWPID, in
    a grandchild, pid 1 of the new namespace); return what it returned, through JSON,
    and the pid of the child that ran it as the parent sees it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(r)
            if libc.unshare(namespaces) == 0:
                inner = os.fork() if namespaces & CLONE_NEWPID else 0
                if inner == 0:
                    try:
                        os.write(w, json.dumps(work()).encode())
                    finally:
                        os._exit(0)
                os.waitpid(inner, 0)
                code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    _, wstatus = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(wstatus) == 0, f"unshare({namespaces:#x}) failed"
    assert out, "the child sent no result"
    return json.loads(out), pid


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    if (
        libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        )
        != 0
    ):
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


@pytest.mark.usefixtures("loaded")
def test_pids_are_those_of_the_procfs_mount() -> None:
    """As /proc/PID itself: pids are numbered in the pid namespace of the procfs mount
    the file is read through, whoever reads it."""
    outer = os.getpid()

    def work() -> dict:
        mount("none", "/", None, MS_REC | MS_PRIVATE, None)
        through_outer = json.loads(read_proc("mem_stats_all"))
        mount("proc", "/proc", "proc", 0, None)
        listing = json.loads(read_proc("mem_stats_all"))
        fd = watch_open()
        watch_select(fd, b"1")
        watch = watch_read(fd)
        try:
            watch_select(fd, str(outer).encode())
            outer_err = 0
        except OSError as err:
            outer_err = err.errno or -1
        return {
            "through_outer": through_outer,
            "listing": listing,
            "watch": watch,
            "outer_err": outer_err,
        }

    result, _ = in_child(work, CLONE_NEWPID | CLONE_NEWNS)
    assert isinstance(result, dict)
    outer_pids = [p["pid"] for p in result["through_outer"]["processes"]]
    assert outer in outer_pids and 1 in outer_pids
    assert [p["pid"] for p in result["listing"]["processes"]] == [1]
    assert result["listing"]["totals"]["processes"] == 1
    assert result["watch"]["pid"] == 1
    if outer != 1:
        assert result["outer_err"] == errno.ESRCH


# --- untrusted readers ---------------------------------------------------------------


def run_shell(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, timeout=120, check=False
    )


AS_NOBODY = "setpriv --reuid=65534 --regid=65534 --clear-groups"


@pytest.mark.usefixtures("loaded")
@pytest.mark.parametrize("victim", ["meminfo", "stat", "mem_stats_all", "self/status"])
def test_bind_mounts_over_proc_files_change_nothing(victim: str) -> None:
    """The module reads no file: a bind mount of its own file over any /proc file it
    might have read (once /proc/meminfo, which recursed until the kernel stack
    overflowed) leaves every module file readable and right."""
    run = run_shell(
        f"unshare -m sh -c 'mount --bind /proc/mem_stats_all /proc/{victim} && "
        "cat /proc/mem_stats_all /proc/system_stats /proc/system_stats.json "
        "&& echo $$ > /proc/mem_watch && cat /proc/mem_watch'"
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith('{"processes": [')
    assert "[memory]" in run.stdout and '"memory": {' in run.stdout


@pytest.mark.usefixtures("loaded")
def test_bind_mount_over_root_directory_is_harmless() -> None:
    run = run_shell(
        "unshare -m sh -c 'mount --bind /proc / && cd / && cat /proc/system_stats.json'"
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["disk"]["path"] == "/"


# --- a hostile file system as the reader's root ------------------------------------

U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1
# The guest's init chroots, and the kernel creates no user namespace from a chroot:
# unchroot.py puts the command where it would be on a normal system (see there).
UNCHROOT = ["/usr/bin/python3", str(REPO / "tests" / "stress" / "unchroot.py")]


@pytest.fixture(scope="module")
def hostile_fuse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """tests/module/hostile_fuse.c built where nobody can run it, and /dev/fuse 0666 as
    distributions ship it (devtmpfs makes it 0600; udev's rule opens it to all)."""
    fuse = Path("/dev/fuse")
    if not fuse.exists():
        pytest.fail(
            "/dev/fuse missing: the guest kernel needs CONFIG_FUSE_FS (kernel/config/guest.config)"
        )
    directory = tmp_path_factory.mktemp("fuse")
    for path in (directory, *directory.parents):
        if path == Path("/"):
            break
        path.chmod(path.stat().st_mode | 0o005)
    binary = directory / "hostile_fuse"
    source = Path(__file__).with_name("hostile_fuse.c")
    build = subprocess.run(
        ["gcc", "-Wall", "-Wextra", "-Werror", "-O2", str(source), "-o", str(binary)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert build.returncode == 0, f"gcc hostile_fuse.c:\n{build.stderr}"
    mode = fuse.stat().st_mode & 0o7777
    fuse.chmod(0o666)
    try:
        yield binary
    finally:
        fuse.chmod(mode)


def expected_kb(blocks: int, frsize: int) -> int:
    return min(blocks * frsize // 1024, U64_MAX)


def exact_used_pct(blocks: int, bfree: int, bavail: int) -> float:
    """df's figure, with unbounded integers: used / (used + available), in percent."""
    used = blocks - bfree if bfree < blocks else 0
    return 100 * used / (used + bavail) if used else 0.0


# (blocks, bfree, bavail, bsize, frsize) a FUSE server answers statfs with.
HOSTILE_STATFS = {
    # 2^86 kB: once mul_u64_u64_div_u64's quotient overflowed: divide error, an oops.
    "huge-blocks-and-frsize": (U64_MAX, U64_MAX, U64_MAX, U32_MAX, U32_MAX),
    # used + available = 2^64 + 1 wraps to 1: the percentage's divisor.
    "used-plus-avail-wraps-to-1": (U64_MAX, 0, 2, 1, 1),
    "used-plus-avail-wraps-to-0": (U64_MAX, 0, 1, 4096, 4096),
    "used-plus-avail-wraps-small": (U64_MAX - 5, 3, 100, 512, 512),
    "all-zero": (0, 0, 0, 0, 0),
    "free-exceeds-blocks": (10, U64_MAX, U64_MAX, 1024, 1024),
    "avail-exceeds-free": (1 << 62, 1 << 40, U64_MAX, 4096, 4096),
    # frsize 0: statfs reports bsize in its place.
    "frsize-zero-uses-bsize": (1 << 63, 1 << 62, 1 << 61, U32_MAX, 0),
    "kb-fits-though-bytes-do-not": ((1 << 64) // 3, 1 << 60, 1 << 59, 1536, 1536),
    "ordinary": (1000, 400, 300, 4096, 4096),
}


@pytest.mark.usefixtures("loaded")
@pytest.mark.parametrize("figures", list(HOSTILE_STATFS.values()), ids=list(HOSTILE_STATFS))
def test_hostile_fuse_root_as_nobody(
    hostile_fuse: Path, figures: tuple[int, int, int, int, int]
) -> None:
    """The disk figures are statfs of the reader's root, which any user can make a FUSE
    mount in a user namespace of its own: nobody (unshare -Urm) opens both files, chroots
    into a FUSE root whose server answers statfs with any figures, and reads them. The
    reader must exit normally (no oops: the fixture checks the kernel log too), and the
    figures must be the server's in kB, saturated at 2^64 - 1, with 0 <= used_pct <= 100."""
    blocks, bfree, bavail, bsize, frsize = figures
    run = subprocess.run(
        [
            *UNCHROOT,
            *AS_NOBODY.split(),
            "unshare",
            "-Urm",
            str(hostile_fuse),
            *(str(n) for n in figures),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = run.stdout
    assert run.returncode == 0 and out.endswith("reader: exit 0\n"), out + run.stderr
    head, _, rest = out.partition("--- system_stats ---\n")
    text, _, rest = rest.partition("--- system_stats.json ---\n")
    json_text = rest.rpartition("reader: exit 0\n")[0]

    # The server's figures reached the reader's root (else this proves nothing).
    frsize = frsize or bsize
    assert head == f"statvfs {blocks} {bfree} {bavail} {bsize} {frsize}\n"

    assert TEXT_FORMAT.match(text), text
    disk = parse_text(text)["disk /"]
    want = {
        "total_kb": expected_kb(blocks, frsize),
        "free_kb": expected_kb(bfree, frsize),
        "available_kb": expected_kb(bavail, frsize),
    }
    assert {k: disk[k] for k in want} == want
    pct = disk["used_pct"]
    assert isinstance(pct, float) and 0.0 <= pct <= 100.0
    # Rounded to a tenth as df; past 2^53 blocks the module drops bits no tenth shows.
    assert abs(pct - exact_used_pct(blocks, bfree, bavail)) <= 0.05 + 1e-9, pct

    data = json.loads(json_text)
    assert data["disk"] == {"path": "/", **want, "used_pct": pct}
    assert data["memory"]["total_kb"] == parse_text(text)["memory"]["total_kb"]


class NobodyView(NamedTuple):
    listed: set[int]  # the pid directories nobody can list
    shown: set[int]  # the pids of /proc/mem_stats_all
    own: set[int]  # nobody's shell and a sleep of its own, alive throughout


NOBODY_SCRIPT = """
sleep 60 & echo $$ $!
ls /proc
echo --- mem_stats_all ---
cat /proc/mem_stats_all
kill $!
"""


def _nobody_view(options: str) -> NobodyView:
    """What user nobody sees through a fresh /proc mounted with ``options``."""
    run = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            f"mount --make-rprivate / && mount -t proc -o {options} proc /proc && "
            f'{AS_NOBODY} sh -c "$NOBODY_SCRIPT"',
        ],
        env={**os.environ, "NOBODY_SCRIPT": NOBODY_SCRIPT},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    head, _, rest = run.stdout.partition("--- mem_stats_all ---\n")
    own_line, _, listing = head.partition("\n")
    data, _ = json.JSONDecoder().raw_decode(rest)
    return NobodyView(
        {int(n) for n in listing.split() if n.isdigit()},
        {r["pid"] for r in data["processes"]},
        {int(n) for n in own_line.split()},
    )


@pytest.mark.usefixtures("loaded")
def test_hidepid_invisible_hides_the_same_processes_as_proc() -> None:
    view = _nobody_view("hidepid=2")
    assert len(view.own) == 2
    assert view.own <= view.listed and view.own <= view.shown
    assert 1 not in view.listed and 1 not in view.shown


@pytest.mark.usefixtures("loaded")
def test_hidepid_noaccess_hides_the_contents() -> None:
    """hidepid=1 lists every /proc/PID but hides what is inside: so does the module."""
    view = _nobody_view("hidepid=1")
    assert len(view.own) == 2 and view.own <= view.shown
    assert 1 in view.listed and 1 not in view.shown


@pytest.mark.usefixtures("loaded")
def test_hidepid_gid_lets_the_group_see_everything() -> None:
    view = _nobody_view("hidepid=2,gid=65534")
    assert len(view.own) == 2 and view.own <= view.shown
    assert 1 in view.listed and 1 in view.shown


# --- /proc/mem_watch -----------------------------------------------------------------


@pytest.mark.usefixtures("loaded")
def test_mem_watch_without_selection_is_an_error_object() -> None:
    fd = watch_open()
    try:
        assert watch_read(fd) == {"error": "no process selected"}
    finally:
        os.close(fd)
    with open("/proc/mem_watch") as f:  # read-only opens work too
        assert json.loads(f.read()) == {"error": "no process selected"}


@pytest.mark.usefixtures("loaded")
def test_mem_watch_reports_the_selected_process(sleepers: dict[str, int]) -> None:
    fd = watch_open()
    try:
        for key in ("plain", "adj_pos", "adj_min", "quotes", "bad_utf8"):
            pid = sleepers[key]
            watch_select(fd, f"{pid}\n".encode())
            assert watch_read(fd) == procfs_record(pid), key
            # The write rewound the file: a plain read() shows the selection.
            assert json.loads(os.read(fd, 65536))["pid"] == pid
            assert os.read(fd, 65536) == b""
        assert watch_read(fd) == procfs_record(sleepers["bad_utf8"])
    finally:
        os.close(fd)


@pytest.mark.usefixtures("loaded")
@pytest.mark.parametrize(
    ("value", "err"),
    [
        (b"abc", errno.EINVAL),
        (b"-1", errno.EINVAL),
        (b"-2147483648", errno.EINVAL),
        (b"0", errno.EINVAL),
        (b"12abc", errno.EINVAL),
        (b" 1", errno.EINVAL),
        (b"99999999999999999999", errno.EINVAL),
        (b"1" * 64, errno.EINVAL),
        (b"\n", errno.EINVAL),
        (b"4194303", errno.ESRCH),
    ],
)
def test_mem_watch_bad_writes_keep_the_selection(
    sleepers: dict[str, int], value: bytes, err: int
) -> None:
    if value == b"4194303":
        assert not Path("/proc/4194303").exists()
    pid = sleepers["plain"]
    fd = watch_open()
    try:
        watch_select(fd, str(pid).encode())
        with pytest.raises(OSError) as info:
            watch_select(fd, value)
        assert info.value.errno == err
        assert watch_read(fd)["pid"] == pid
    finally:
        os.close(fd)


@pytest.mark.usefixtures("loaded")
def test_mem_watch_thread_id_selects_its_process() -> None:
    tid: list[int] = []
    ready = threading.Event()
    done = threading.Event()

    def worker() -> None:
        tid.append(threading.get_native_id())
        ready.set()
        done.wait()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        ready.wait()
        assert tid[0] != os.getpid()
        fd = watch_open()
        try:
            watch_select(fd, str(tid[0]).encode())
            record = watch_read(fd)
        finally:
            os.close(fd)
    finally:
        done.set()
        thread.join()
    assert record["pid"] == os.getpid()
    assert record["name"] == comm(os.getpid())


@pytest.mark.usefixtures("loaded")
def test_mem_watch_reports_an_exited_process() -> None:
    pid = spawn_sleeper()
    fd = watch_open()
    try:
        watch_select(fd, str(pid).encode())
        assert watch_read(fd)["pid"] == pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while watch_read(fd).get("error") is None and time.monotonic() < deadline:
            time.sleep(0.05)  # a zombie until reaped, still an exited process
        assert watch_read(fd) == {"error": "process exited", "pid": pid}
        reap(pid)
        assert watch_read(fd) == {"error": "process exited", "pid": pid}
    finally:
        reap(pid)
        os.close(fd)


@pytest.mark.usefixtures("loaded")
def test_mem_watch_kernel_thread() -> None:
    kthreadd = 2
    assert is_kthread(kthreadd)
    fd = watch_open()
    try:
        watch_select(fd, b"2")
        record = watch_read(fd)
    finally:
        os.close(fd)
    assert record == {
        "pid": 2,
        "name": comm(2),
        "vm_size_kb": 0,
        "vm_rss_kb": 0,
        "oom_score": 0,
        "oom_score_adj": 0,
    }


@pytest.mark.usefixtures("loaded")
def test_mem_watch_selection_is_per_open_file(sleepers: dict[str, int]) -> None:
    a, b = watch_open(), watch_open()
    try:
        watch_select(a, str(sleepers["adj_neg"]).encode())
        watch_select(b, str(sleepers["adj_max"]).encode())
        assert watch_read(a)["pid"] == sleepers["adj_neg"]
        assert watch_read(b)["pid"] == sleepers["adj_max"]
        c = watch_open()
        try:
            assert watch_read(c) == {"error": "no process selected"}
        finally:
            os.close(c)
    finally:
        os.close(a)
        os.close(b)


@pytest.mark.usefixtures("loaded")
def test_mem_watch_from_a_shell() -> None:
    run = subprocess.run(
        ["sh", "-c", "exec 3<>/proc/mem_watch; echo $$ >&3; cat <&3; echo 1 >&3; cat <&3"],
        capture_output=True,
        text=True,
        check=True,
    )
    first, second = (json.loads(line) for line in run.stdout.splitlines())
    assert first["name"] == "sh"
    assert second["pid"] == 1


# --- load and unload -----------------------------------------------------------------

# $1 gets a line for every complete read of all four files, proof that reads overlapped.
READER = r"""
while :; do
	cat /proc/system_stats /proc/system_stats.json /proc/mem_stats_all /proc/mem_watch \
		>/dev/null 2>&1 && echo >>"$1"
done
"""
# Keeps descriptors open across the unload; a failed redirection skips the group.
HOLDER = r"""
while :; do
	{ echo $$ >&3; cat <&3; head -c 100 <&4; sleep 0.02; cat <&4; cat <&3; } \
		3<>/proc/mem_watch 4</proc/mem_stats_all
done >/dev/null 2>&1
"""


def test_load_unload_while_reading(tmp_path: Path) -> None:
    """50 load/unload cycles while shells read, write and hold the files open.

    Loading and unloading are the system calls insmod and rmmod make, without starting
    them 100 times, and the readers run at nice 19: under emulation both keep it short."""
    if not module_loaded():
        insmod()
    readers = [
        subprocess.Popen(
            ["nice", "-n", "19", "sh", "-c", script, "sh", str(tmp_path / f"reads{i}")],
            start_new_session=True,
        )
        for i, script in enumerate((READER, READER, HOLDER))
    ]
    try:
        time.sleep(0.5)
        for _ in range(50):
            unload_direct()
            assert not any(Path("/proc", name).exists() for name in FILES)
            load_direct()
            time.sleep(0.1)
        assert all(r.poll() is None for r in readers), "a reader died"
    finally:
        for r in readers:
            os.killpg(r.pid, signal.SIGKILL)
            r.wait()
    assert module_loaded()
    assert read_json("mem_stats_all")["totals"]["processes"] > 0
    reads = [p.read_text().count("\n") for p in tmp_path.glob("reads*") if p.exists()]
    assert sum(reads) > 0, "the readers never got through the files"


def test_unload_leaves_nothing_behind() -> None:
    if not module_loaded():
        insmod()
    held = {name: os.open(f"/proc/{name}", os.O_RDONLY) for name in FILES}
    try:
        rmmod()
        assert not module_loaded()
        for name in FILES:
            assert not Path("/proc", name).exists()
            assert name not in os.listdir("/proc")
            # A descriptor opened before the unload fails cleanly afterwards.
            with pytest.raises(OSError) as info:
                os.read(held[name], 4096)
            assert info.value.errno == errno.EIO
    finally:
        for fd in held.values():
            os.close(fd)
    insmod()
    assert all(Path("/proc", name).exists() for name in FILES)


def tamalloc_system_json() -> dict:
    run = subprocess.run(
        [sys.executable, "-m", "tamalloc", "system", "--json"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_tamalloc_system_source_follows_the_module() -> None:
    system = pytest.importorskip("tamalloc.system")
    if not module_loaded():
        insmod()
    with_module = tamalloc_system_json()
    module_view = read_json("system_stats.json")
    rmmod()
    try:
        without = tamalloc_system_json()
    finally:
        insmod()
    assert with_module["source"] == system.SOURCE_MODULE
    assert without["source"] == system.SOURCE_PROCFS
    for view in (with_module, without):
        assert view["memory"]["total_kb"] == module_view["memory"]["total_kb"]
        assert [c["cpu"] for c in view["cpu"]["per_cpu"]] == [
            c["cpu"] for c in module_view["cpu"]["per_cpu"]
        ]
        assert view["disk"]["total_kb"] == module_view["disk"]["total_kb"]
    slack = max(16384, module_view["memory"]["total_kb"] // 100)
    assert abs(with_module["memory"]["available_kb"] - without["memory"]["available_kb"]) <= slack
    for field in CPU_FIELDS:
        assert with_module["cpu"]["total"][field] <= without["cpu"]["total"][field] + 5


@pytest.mark.usefixtures("loaded")
@pytest.mark.parametrize(
    ("options", "init_visible"), [("hidepid=2", False), ("hidepid=2,gid=65534", True)]
)
def test_mem_watch_selects_only_what_the_writer_may_see(options: str, init_visible: bool) -> None:
    """Only root may open mem_watch for writing; a descriptor it hands to nobody selects
    with nobody's rights through the mount's hidepid=: init is ESRCH, itself is not."""

    def work() -> dict:
        mount("none", "/", None, MS_REC | MS_PRIVATE, None)
        mount("proc", "/proc", "proc", 0, options)
        fd = watch_open()
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        errs = []
        for value in (b"1", str(os.getpid()).encode()):
            try:
                watch_select(fd, value)
                errs.append(0)
            except OSError as err:
                errs.append(err.errno)
        return {"errs": errs, "record": watch_read(fd)}

    result, pid = in_child(work, CLONE_NEWNS)
    assert isinstance(result, dict)
    assert result["errs"] == [0 if init_visible else errno.ESRCH, 0]
    assert result["record"]["pid"] == pid
