"""Unprivileged probes of the campaign: bind mounts, hidepid, user and pid namespaces.

Runs as root inside the VM (`make vm-test`, and `make stress`), and drops to user
`nobody` (setpriv) for the probes, in user and mount namespaces of its own (unshare
-Urm: CONFIG_USER_NS is on in the guest), as any user of a distribution kernel can:

- bind mounts over every /proc file the module could touch (and over /) must leave its
  four files correct: memory figures from the kernel, never from a file; no hang, no splat;
- with /proc mounted hidepid=2, nobody sees the same processes in `ls /proc`, in
  /proc/mem_stats_all read through that mount and in get_mem_stats(0, ...) (default
  vm.tamalloc_stats_restrict=1: only processes the caller may ptrace-read); pid 1 gives
  ESRCH; get_total_mem_stats() says some_hidden = 1 (a flag, not a count); with the sysctl at 0
  the syscalls show everything and the module file still honours hidepid;
- in a pid namespace every record uses that namespace's pids, also when the module file
  is read from outside through the namespace's procfs mount.

Elsewhere the file is skipped; in the guest a missing syscall or module is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stress_support import IN_VM, NOBODY, load_run_py, module_state

from _support import KernelLog

if not IN_VM:
    pytest.skip("runs inside the VM: make vm-test", allow_module_level=True)

pytestmark = pytest.mark.usefixtures("require_kernel", "loaded")

PYTHON = "/usr/bin/python3"
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
# The guest's init chroots, and the kernel creates no user namespace from a chroot:
# unchroot.py gives the command the position of a process on a normal system.
UNCHROOT = [PYTHON, str(Path(__file__).with_name("unchroot.py"))]
RESTRICT = Path("/proc/sys/vm/tamalloc_stats_restrict")
TIMEOUT = 600
RUN = load_run_py()


@pytest.fixture(scope="module")
def loaded() -> Iterator[None]:
    with module_state(loaded=True):
        yield


@pytest.fixture(autouse=True)
def no_splat() -> Iterator[None]:
    log = KernelLog()
    yield
    bad = RUN.splats("\n".join(log.new_lines()))
    log.close()
    assert not bad, "kernel log:\n" + "\n".join(bad[:40])


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> str:
    """visibility_probe.py where nobody can read it."""
    directory = tmp_path_factory.mktemp("probe")
    directory.chmod(0o755)
    for parent in directory.parents:
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o005)
    target = directory / "visibility_probe.py"
    shutil.copy(Path(__file__).with_name("visibility_probe.py"), target)
    target.chmod(0o644)
    return str(target)


def run_json(cmd: list[str]) -> dict:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert result.returncode == 0, f"{cmd}:\n{result.stdout}{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def nobody_sleepers() -> Iterator[list[int]]:
    """Two processes of nobody, so that nobody has more than the probe to see."""
    procs = [subprocess.Popen([*AS_NOBODY, "sleep", "1000"]) for _ in range(2)]
    # setpriv execs sleep: same pid; wait until it is nobody's
    for proc in procs:
        while f"Uid:\t{NOBODY}\t" not in _status(proc.pid):
            assert proc.poll() is None, "setpriv ... sleep failed"
            time.sleep(0.05)
    yield [p.pid for p in procs]
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.fixture
def restrict() -> Iterator[Path]:
    if not RESTRICT.exists():
        pytest.fail(f"{RESTRICT} missing: the kernel has no visibility sysctl")
    before = RESTRICT.read_text()
    yield RESTRICT
    RESTRICT.write_text(before)


# --- bind mounts -----------------------------------------------------------------------


def test_bind_mounts_over_proc_files_as_nobody(probe: str) -> None:
    """Every /proc file the module could read, covered by its own files and by junk."""
    out = run_json([*UNCHROOT, *AS_NOBODY, "unshare", "-Urm", PYTHON, probe, "--binds"])
    assert not out["problems"], "\n".join(out["problems"][:40])
    refused = [k for k in out["refused"] if "/proc/meminfo" in k or "/proc/mem_stats_all" in k]
    assert not refused, f"bind mounts refused: {refused}"
    assert out["mounted"] >= 150, out


@pytest.mark.parametrize("source", ["/proc", "/sys", "/dev", "/tmp"])
def test_bind_mount_over_root_as_nobody(probe: str, source: str) -> None:
    """The disk figures are statfs of the reader's root: here procfs, sysfs, devtmpfs."""
    cmd = [*UNCHROOT, *AS_NOBODY, "unshare", "-Urm", PYTHON, probe, "--root-over", source]
    out = run_json(cmd)
    assert "refused" not in out, out
    for name in ("system_stats", "system_stats.json"):
        # A clean error is acceptable for a root that has no disk; wrong memory is not.
        assert out[name] == "ok" or out[name].startswith("OSError"), out


# --- hidepid and ptrace visibility -----------------------------------------------------


def hidepid_probe(probe: str, ask: list[int]) -> dict:
    script = "mount -t proc -o hidepid=2 proc /proc && exec " + " ".join(
        [*AS_NOBODY, PYTHON, probe, *[f"--ask {p}" for p in ask]]
    )
    return run_json(["unshare", "-m", "--propagation", "private", "sh", "-c", script])


def test_hidepid_nobody_sees_the_same_processes_everywhere(
    probe: str, nobody_sleepers: list[int], restrict: Path
) -> None:
    restrict.write_text("1")
    me = os.getpid()
    out = hidepid_probe(probe, [1, me, *nobody_sleepers])
    visible = set(out["proc_pids"])
    assert visible == {out["pid"], *nobody_sleepers}, out
    assert set(out["module_pids"]) == visible, f"/proc/mem_stats_all through hidepid=2: {out}"
    assert set(out["syscall_pids"]) == visible, f"get_mem_stats(0) as nobody: {out}"
    assert out["one"] == {"1": "ESRCH", str(me): "ESRCH", **{str(p): p for p in nobody_sleepers}}
    totals = out["totals"]
    assert totals["processes"] == len(visible), out
    assert totals["hidden"] == 1, f"some_hidden, a flag and not a count: {out}"


def test_restrict_0_shows_all_to_the_syscalls_but_hidepid_still_holds(
    probe: str, nobody_sleepers: list[int], restrict: Path
) -> None:
    restrict.write_text("0")
    me = os.getpid()
    out = hidepid_probe(probe, [1, me])
    visible = set(out["proc_pids"])
    assert visible == {out["pid"], *nobody_sleepers}, out
    assert set(out["module_pids"]) == visible, f"/proc/mem_stats_all through hidepid=2: {out}"
    assert {1, me, out["pid"], *nobody_sleepers} <= set(out["syscall_pids"]), out
    assert out["one"] == {"1": 1, str(me): me}, out
    assert out["totals"]["hidden"] == 0, out


# --- pid namespaces --------------------------------------------------------------------


def test_pid_namespace_records_use_its_pids(probe: str) -> None:
    out = run_json(["unshare", "-pmf", "--mount-proc", PYTHON, probe, "--ask", "1"])
    assert out["pid"] == 1
    assert out["proc_pids"] == [1], out
    assert out["module_pids"] == [1], out
    assert out["syscall_pids"] == [1], out
    assert out["one"] == {"1": 1}, out
    assert out["totals"]["processes"] == 1, out


def test_pid_namespace_as_nobody_with_hidepid(probe: str) -> None:
    script = f"mount -o remount,hidepid=2 /proc && exec {PYTHON} {probe} --ask 1"
    out = run_json([*UNCHROOT, *AS_NOBODY, "unshare", "-Urmpf", "--mount-proc", "sh", "-c", script])
    assert out["pid"] == 1 and out["uid"] == 0, out
    assert out["proc_pids"] == out["module_pids"] == out["syscall_pids"] == [1], out
    assert out["one"] == {"1": 1}, out


def test_module_file_read_from_outside_uses_the_mounts_pid_namespace(probe: str) -> None:
    """Root outside reads the namespace's procfs mount: the namespace's pids, not ours."""
    inner = subprocess.Popen(
        ["unshare", "-pmf", "--mount-proc", PYTHON, probe, "--wait"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert inner.stdout is not None and inner.stdin is not None
        seen = json.loads(inner.stdout.readline())
        assert seen["pid"] == 1, seen
        child = next(
            int(e)
            for e in os.listdir("/proc")
            if e.isdigit() and f"PPid:\t{inner.pid}\n" in _status(int(e))
        )
        through = f"/proc/{child}/root/proc"
        data = json.loads(Path(through, "mem_stats_all").read_text())
        pids = [p["pid"] for p in data["processes"]]
        assert pids == [1], f"{through}/mem_stats_all lists {pids}, want [1]"
        assert data["processes"][0]["name"] == Path(f"/proc/{child}/comm").read_text().strip()
        assert sorted(int(e) for e in os.listdir(through) if e.isdigit()) == [1]
    finally:
        if inner.stdin is not None:
            inner.stdin.close()
        inner.wait(timeout=TIMEOUT)


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ""
