"""Real OOM kills that only the patched kernel's record predicts (issue 18, items 3, 4, 6).

- A zombie leader that moved: a process whose main thread has exited is moved to
  another cgroup; the leader stays behind (cgroup_migrate_add_task() skips an exiting
  task), and the memcg OOM, walking leaders only (CSS_TASK_ITER_PROCS), weighs and kills
  the process in the leader's old cgroup. The record's cgroup is the leader's, as
  /proc/TGID/cgroup is.
- oom_origin: `swapoff` run inside a memory cgroup whose swapped-out pages cannot all
  come back under its limit. Swap-in charges the pages' cgroup, the cgroup's OOM comes
  in swapoff's context, and oom_evaluate_task() takes swapoff (marked oom_origin) before
  it weighs anyone, the far bigger owner of the pages included. The swap device is a
  loop device over a file on the guest's tmpfs /tmp (the 9p root cannot hold a swap file;
  CONFIG_BLK_DEV_LOOP in kernel/config/guest.config).
- A victim already exiting: a process stopped by its tracer at PTRACE_EVENT_EXIT has
  begun its group exit (SIGNAL_GROUP_EXIT) and still holds its memory. The OOM chooses
  it, oom_kill_process() finds task_will_free_mem() true, marks it and kills nobody: no
  report in the log, memory.events "oom" moves and "oom_kill" does not.

Run by `make vm-oom-test` with tests/oom/test_oom_kills.py, whose scenario runner and
module-level conditions (the OOM guest, cgroup2 with memory) this file shares.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import oom_support as sup
import pytest
import test_oom_kills as base

import tamalloc
from _support import EXIT_STOP_SCRIPT, KernelLog, subprocess_env
from tamalloc.oom import OomDomain, collect_inputs, predict

pytestmark = pytest.mark.usefixtures("require_kernel")

# The zombie (48 MiB) is the biggest of /a's processes but moved to /b: a record with the
# moved thread's cgroup leaves it out of /a's OOM, and "mid" is predicted instead. Its
# kill is counted in /b's memory.events (its mm's owner, the moved thread, is there),
# so the kills are counted at the scenario's root, above both.
MOVED_ZOMBIE = base.Scenario(
    "memcg-moved-zombie-leader",
    {"": {}, "a": {"memory.max": "128M"}, "b": {}},
    (
        ("small", "a", 8, 0, "plain"),
        ("mid", "a", 24, 0, "plain"),
        ("zombie", "a", 48, 0, "zombie-leader"),
    ),
    "a",
    "a",
    frozenset({"zombie"}),
    moves=(("zombie", "b"),),
    events="",
)


def test_moved_zombie_leader_is_killed_in_its_leaders_cgroup() -> None:
    base.run_scenario(MOVED_ZOMBIE, "tamalloc-oomk-moved")


def _own_task(backend: str, pid: int) -> tamalloc.models.OomTask:
    (found,) = [t for t in tamalloc.get_backend(backend).oom_tasks() if t.pid == pid]
    return found


def test_record_cgroup_of_a_moved_zombie_leader_is_the_leaders() -> None:
    groups = sup.Cgroups("tamalloc-oomk-record")
    member = sup.Member("zombie", "x", 8, mode="zombie-leader")
    try:
        for rel in ("", "x", "y"):
            groups.make(rel, {})
        sup.start_members([member], groups)
        sup.move_process(member, groups.path("y"))  # checks: the thread moved, not the leader
        kernel, procfs = _own_task("kernel", member.pid), _own_task("procfs", member.pid)
        print(f"moved zombie leader: kernel {kernel}\n  procfs {procfs}")
        assert procfs.cgroup == groups.domain("x")
        assert kernel.cgroup == procfs.cgroup
        assert kernel.rss_kb >= 8 * 1024 and not kernel.exiting
        sup.finish([member], None)
    finally:
        sup.kill_all([member], None)
        groups.close()


# --- oom_origin: swapoff ---------------------------------------------------------------

SWAPOFF_NR = 168  # x86_64: /proc/PID/syscall's first field while in swapoff(2)


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


@contextlib.contextmanager
def loop_swap(mib: int) -> Iterator[str]:
    """A swap device of MIB MiB, on: a loop device over a file on tmpfs /tmp."""
    backing = Path("/tmp/tamalloc-oom-swap")
    with backing.open("wb") as f:
        f.truncate(mib << 20)
    device = _run("losetup", "--find", "--show", str(backing))
    try:
        _run("mkswap", device)
        _run("swapon", device)
        try:
            yield device
        finally:
            # after the test's processes are gone their pages need no room to come back
            subprocess.run(["swapoff", device], check=False)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
        backing.unlink()


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/task/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def _in_swapoff(pid: int) -> bool:
    """Whether PID sleeps in swapoff(2) ("running" when it is on a CPU: not known)."""
    try:
        return Path(f"/proc/{pid}/syscall").read_text().split()[0] == str(SWAPOFF_NR)
    except (OSError, IndexError):
        return False


def _domain(domains: list[OomDomain], path: str) -> OomDomain:
    (found,) = [d for d in domains if d.cgroup == path]
    return found


def test_swapoff_is_killed_first_as_oom_origin() -> None:
    groups = sup.Cgroups("tamalloc-oomk-swapoff")
    hog = sup.Member("hog", "", 128)
    swapoff: subprocess.Popen[str] | None = None
    log = KernelLog()
    with loop_swap(192) as device:
        try:
            # swap.max unlimited: the hog's 128 MiB under a 32 MiB limit go mostly to swap
            domain_dir = groups.make("", {"memory.max": "32M", "memory.swap.max": "max"})
            sup.start_members([hog], groups)
            swapped = _status_kb(hog.pid, "VmSwap")
            print(f"swapoff: hog {hog.pid} has {swapped} kB in swap")
            assert swapped >= 80 * 1024, swapped
            # Room for 64 MiB to come back before the OOM: the window in which the
            # prediction sees swapoff at work.
            (domain_dir / "memory.max").write_text("96M")
            before = base.memcg_events(domain_dir / "memory.events")
            path = groups.domain("")
            swapoff = subprocess.Popen(
                [
                    "sh",
                    "-c",
                    f'echo $$ > "{domain_dir}/cgroup.procs" && exec swapoff "{device}"',
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=subprocess_env(),
            )
            seen: dict[str, OomDomain] = {}
            deadline = time.monotonic() + sup.OOM_TIMEOUT
            while swapoff.poll() is None and not seen and time.monotonic() < deadline:
                # A reading counts once it shows swapoff at work in try_to_unuse(), where
                # the mark is on: by the record's flag, or, for a record without it (the
                # old kernel), by /proc/PID/syscall before and after the reading.
                entered = _in_swapoff(swapoff.pid)
                readings = {b: collect_inputs(b) for b in ("procfs", "kernel", "bpf")}
                marked = any(
                    t.pid == swapoff.pid and getattr(t, "oom_origin", False)
                    for t in readings["kernel"].tasks
                )
                present = all(any(t.pid == swapoff.pid for t in r.tasks) for r in readings.values())
                if present and (marked or (entered and _in_swapoff(swapoff.pid))):
                    seen = {b: _domain(predict(r, cgroup=path), path) for b, r in readings.items()}
            output, _ = swapoff.communicate(timeout=sup.OOM_TIMEOUT)
            status = swapoff.returncode
            after = base.memcg_events(domain_dir / "memory.events")
            hog_alive = hog.proc is not None and hog.proc.poll() is None
            sup.finish([hog], None)
        finally:
            if swapoff is not None and swapoff.poll() is None:
                swapoff.kill()
                swapoff.wait()
            sup.kill_all([hog], None)
            groups.close()
    lines = log.new_lines()
    log.close()
    evidence = sup.parse_log(lines)
    for backend, d in seen.items():
        print(f"swapoff {backend}: victim {d.victim}, killed {d.killed_pids}, notes {d.notes}")
    print(f"swapoff: status {status} ({output.strip()}); events {before} -> {after}")
    print("\n".join(evidence.lines))
    assert seen, "no prediction caught swapoff inside swapoff(2) before it ended"
    assert swapoff is not None
    # The kernel's choice: swapoff, by SIGKILL, logged, counted; the hog lives.
    assert status == -9, (status, output)
    assert hog_alive
    assert after["oom_kill"] - before["oom_kill"] == 1, (before, after)
    assert [r.chosen for r in evidence.reports] == [swapoff.pid], evidence.lines
    assert evidence.killed_tids == [swapoff.pid]
    assert evidence.reports[0].oom_memcg == groups.domain("")
    assert not base.RUN.splats("\n".join(lines), allow_oom=True)
    # The prediction: the kernel record carries the mark; /proc cannot show it, and the
    # procfs backend names the hog with the hint that a process is called swapoff.
    assert seen["kernel"].killed_pids == (swapoff.pid,), seen["kernel"]
    assert seen["bpf"].killed_pids == (swapoff.pid,), seen["bpf"]
    assert seen["procfs"].killed_pids == (hog.pid,), seen["procfs"]
    assert any("cannot see the mark" in n for n in seen["procfs"].notes)


# --- a victim already exiting ------------------------------------------------------------


def test_a_victim_already_exiting_is_not_killed_again() -> None:
    groups = sup.Cgroups("tamalloc-oomk-exiting")
    members = [sup.Member("small", "", 8), sup.Member("mid", "", 24)]
    tracer: subprocess.Popen[str] | None = None
    pusher = None
    log = KernelLog()
    try:
        domain_dir = groups.make("", {"memory.max": "128M"})
        path = groups.domain("")
        sup.start_members(members, groups)
        tracer = subprocess.Popen(
            [sys.executable, "-c", EXIT_STOP_SCRIPT, str(domain_dir), str(48 * sup.MiB)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )
        words = sup._readline(tracer, sup.READY_TIMEOUT, "exiter").split()
        assert words[0] == "ready", words
        exiter = int(words[1])
        record = _own_task("kernel", exiter)
        bpf_record = _own_task("bpf", exiter)
        print(f"exiting: record {record}")
        found = {
            b: _domain(predict(collect_inputs(b), cgroup=path), path)
            for b in ("kernel", "procfs", "bpf")
        }
        for backend, d in found.items():
            print(f"exiting {backend}: victim {d.victim}, killed {d.killed_pids}, notes {d.notes}")
        before = base.memcg_events(domain_dir / "memory.events")
        pusher = sup.start_pusher(domain_dir, domain_dir / "memory.events", key="oom")
        sup.push_until_kill(pusher)
        after = base.memcg_events(domain_dir / "memory.events")
        marked = _own_task("kernel", exiter).oom_victim
        statuses = sup.finish(members, pusher)
        assert tracer.stdin is not None
        tracer.stdin.close()
        exited = sup._readline(tracer, sup.READY_TIMEOUT, "exiter").split()
        tracer.wait()
    finally:
        if tracer is not None and tracer.poll() is None:
            tracer.kill()
            tracer.wait()
        sup.kill_all(members, pusher)
        groups.close()
    lines = log.new_lines()
    log.close()
    evidence = sup.parse_log(lines)
    print(f"exiting: statuses {statuses}, exiter {exited}; events {before} -> {after}")
    print("\n".join(lines[-40:]))
    # The kernel: an OOM came and killed nobody; it marked the exiting process instead.
    assert after["oom"] > before["oom"], (before, after)
    assert after["oom_kill"] == before["oom_kill"], (before, after)
    assert not evidence.reports and not evidence.killed_tids, evidence.lines
    assert statuses == {"small": 0, "mid": 0}
    assert exited == ["exited", "0"]  # its own exit_group(0), no SIGKILL
    assert marked
    assert not base.RUN.splats("\n".join(lines), allow_oom=True)
    # The prediction from the kernel record: no kill; procfs cannot see the exit begun.
    assert getattr(record, "exiting", False), record
    assert not record.oom_victim and not record.unkillable
    assert bpf_record.exiting, bpf_record
    for backend in ("kernel", "bpf"):
        d = found[backend]
        assert d.victim is None and d.killed_pids == (), (backend, d)
        assert any(f"victim {exiter} " in n and "already exiting" in n for n in d.notes), d
    assert found["procfs"].killed_pids == (exiter,), found["procfs"]
