"""Real OOM kills in the guest where the order of the kernel's task walk decides, and
where processes sharing the victim's memory die with it (issue 18, items 1 and 2).

Ties: oom_evaluate_task() keeps the last task of its walk among equal points. A memcg
OOM walks mem_cgroup_scan_tasks(): the memcgs parent first, siblings in creation order,
each one's processes in the order they joined it (what cgroup.procs lists). The members
here are small C programs (walk_member.c) under a memory.max of 1,000-1,999 pages, where
one unit of oom_score_adj is worth one page: the test reads each member's rss, swap and
page tables and gives it the adj that makes all their points equal, then moves them into
their cgroups in an order that is not pid order. The prediction must name the member
the kernel takes (the last of the walk), not the highest pid.

Shared memory: a member with a clone(CLONE_VM) child (without CLONE_THREAD) shares its
mm with it; __oom_kill_process() SIGKILLs every process using the victim's mm, logging
a "Killed process" line for the victim alone. The prediction must list both as killed.

Each scenario is checked three ways, as in test_oom_kills.py: the members' wait statuses
(the clone child is the test's child too: CLONE_PARENT), the domain's memory.events
oom_kill increment (one per "Killed process" line: the shared-mm kills add none), and
the kernel log (the chosen pid, the Killed process lines, and the task dump, which must
show the tie the scenario built still standing when the kernel chose). On both backends
and, for some, through `tamalloc oom --json`. Only in `make vm-oom-test`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import oom_support as sup
import pytest

import tamalloc
from _support import KernelLog, MiB, subprocess_env

sup.skip_unless_real_oom_kills()

pytestmark = pytest.mark.usefixtures("require_kernel")

RUN = sup.load_run_py()
HERE = Path(__file__).resolve().parent
BACKENDS = ("kernel", "procfs", "bpf")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
# dump_task(): "[  pid]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name"
DUMP = re.compile(r"\[\s*(\d+)\]\s+\d+\s+(\d+)\s+\d+\s+(\d+)\s+(\d+)\s+(\d+)\s+(-?\d+)\s+\S")


@dataclass(frozen=True)
class Walker:
    label: str
    cgroup: str  # relative to the scenario's cgroup
    mib: int
    clone: bool = False


@dataclass(frozen=True)
class Scenario:
    name: str
    cgroups: dict[str, dict[str, str]]  # rel path -> settings, parents first
    walkers: tuple[Walker, ...]
    # The labels in the order the test moves them into their cgroups: "pid:N" is the
    # walker with the Nth lowest pid (0 first), so that the order is not pid order.
    join: tuple[int, ...]
    pusher: str
    domain: str
    equalize: bool  # set adjs that make every walker's points equal (an exact tie)
    # What the kernel is built to do: the chosen one (by pid rank, or "label+child" for
    # a clone child), and every process that dies (same notation).
    chosen: str
    killed: frozenset[str]
    cli: bool = False


SCENARIOS = [
    Scenario(
        # three walkers of equal points in one cgroup, moved in as pids 3, 1, 2: the walk
        # (cgroup.procs order) ends with pid 2, the kernel's choice; not pid 3
        "tie-join-order",
        {"": {"memory.max": "6M"}},
        (Walker("w0", "", 1), Walker("w1", "", 1), Walker("w2", "", 1)),
        (2, 0, 1),
        "",
        "",
        True,
        "pid:1",
        frozenset({"pid:1"}),
        cli=True,
    ),
    Scenario(
        # the tie across sibling cgroups: "b" is created before "a", so the walk takes b
        # (the highest pid) first, then a's two in the order they joined (pids 2, 1):
        # the kernel kills pid 1, the lowest; neither path order nor pid order says so
        "tie-child-cgroups-creation-order",
        {"": {"memory.max": "6M"}, "b": {}, "a": {}, "p": {}},
        (Walker("w0", "a", 1), Walker("w1", "a", 1), Walker("w2", "b", 1)),
        (2, 1, 0),
        "p",
        "",
        True,
        "pid:0",
        frozenset({"pid:0"}),
    ),
    Scenario(
        # "big" and its clone(CLONE_VM) child weigh the same (one mm) and more than
        # "small"; the child joined last (at its fork), so the kernel chooses it and
        # kills "big" with it, with no "Killed process" line for "big"
        "shared-mm-dies-together",
        {"": {"memory.max": "8M"}},
        (Walker("big", "", 2, clone=True), Walker("small", "", 1)),
        (0, 1),
        "",
        "",
        False,
        "big+child",
        frozenset({"big", "big+child"}),
        cli=True,
    ),
]


@pytest.fixture(scope="module")
def walker_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.fail("the OOM walk scenarios need gcc in the guest (make deps installs it)")
    out = tmp_path_factory.mktemp("walk") / "walk_member"
    cmd = [compiler, "-Wall", "-Wextra", "-Werror", "-O2", str(HERE / "walk_member.c")]
    result = subprocess.run(
        [*cmd, "-o", str(out)], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.fixture
def oom_dump() -> Iterator[None]:
    """The task dump of each report: the figures the kernel weighed, to check the tie."""
    path = Path("/proc/sys/vm/oom_dump_tasks")
    before = path.read_text()
    path.write_text("1")
    yield
    path.write_text(before)


@dataclass
class Running:
    walker: Walker
    proc: subprocess.Popen[str]
    pid: int = 0
    child: int = 0  # the clone child's pid, 0 without one


@dataclass
class Outcome:
    labels: dict[int, str] = field(default_factory=dict)
    predicted: dict[str, tuple[int | None, list[int]]] = field(default_factory=dict)


def status_of(proc: subprocess.Popen[str]) -> int:
    with contextlib.suppress(BrokenPipeError):
        if proc.stdin is not None:
            proc.stdin.close()
    return proc.wait(timeout=sup.READY_TIMEOUT)


def child_status(pid: int) -> int:
    """End a clone child (the test is its parent: CLONE_PARENT) and return how it
    ended: -SIGKILL if the OOM killer got it, -SIGTERM if this did."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def points_now(pid: int) -> int:
    """oom_badness() without the adj term, from /proc/PID/status (the same counters)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmSwap", "VmPTE"):
            fields[key] = int(value.split()[0])
    return sum(v // PAGE_KB for v in fields.values())


def predict(scenario: Scenario, domain: str, outcome: Outcome) -> dict[str, object]:
    """Each source's (victim, killed_pids); the kernel backend's domain for the
    checks of the new fields."""
    found: dict[str, object] = {}
    for backend in BACKENDS:
        domains = [
            d
            for d in tamalloc.predict_oom(cgroup=domain, backend=backend)
            if d.kind == "cgroup" and d.cgroup == domain
        ]
        assert len(domains) == 1, (backend, domains)
        d = domains[0]
        print(f"{scenario.name} {backend}: victim {d.victim}, killed {d.killed_pids}")
        print(f"  notes {d.notes}")
        for c in d.candidates[:6]:
            print(f"  candidate {c.pid} {c.name} points {c.points} unkillable {c.unkillable}")
        victim = None if d.victim is None else d.victim.pid
        outcome.predicted[backend] = (victim, sorted(d.killed_pids))
        found[backend] = d
    if scenario.cli:
        cmd = [*sup.cli_command(), "oom", "--json", "--cgroup", domain]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        (doc,) = [d for d in json.loads(result.stdout) if d["cgroup"] == domain]
        victim = None if doc["victim"] is None else doc["victim"]["pid"]
        outcome.predicted["cli"] = (victim, sorted(doc["killed_pids"]))
        found["cli"] = doc
    return found


@pytest.mark.usefixtures("oom_dump")
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_walk_order_and_shared_mm(scenario: Scenario, walker_binary: Path) -> None:
    groups = sup.Cgroups(f"tamalloc-walk-{SCENARIOS.index(scenario) + 1}")
    running: list[Running] = []
    pusher = None
    outcome = Outcome()
    log = KernelLog()
    statuses: dict[str, int] = {}
    try:
        for rel, settings in scenario.cgroups.items():
            groups.make(rel, settings)
        events = groups.path(scenario.domain) / "memory.events"
        # Started one after another: their pids ascend in the order of `walkers`.
        for w in scenario.walkers:
            size = str(w.mib * MiB)
            args = [str(walker_binary), size, *(["clone"] if w.clone else [])]
            proc = subprocess.Popen(
                args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=subprocess_env(),
            )
            r = Running(w, proc)
            words = sup._readline(proc, sup.READY_TIMEOUT, f"walker {w.label}").split()
            assert words[0] == "started", words
            r.pid = int(words[1])
            running.append(r)
        by_rank = sorted(running, key=lambda r: r.pid)
        assert [r.walker for r in by_rank] == list(scenario.walkers), "pids not ascending"
        for rank in scenario.join:
            r = by_rank[rank]
            (groups.path(r.walker.cgroup) / "cgroup.procs").write_text(str(r.pid))
        for r in running:
            assert r.proc.stdin is not None
            r.proc.stdin.write("go\n")
            r.proc.stdin.flush()
            words = sup._readline(r.proc, sup.READY_TIMEOUT, f"walker {r.walker.label}").split()
            assert words[0] == "ready" and int(words[1]) == r.pid, words
            r.child = int(words[2])
        names: dict[str, int] = {}
        for rank, r in enumerate(by_rank):
            names[f"pid:{rank}"] = r.pid
            names[r.walker.label] = r.pid
            outcome.labels[r.pid] = f"{r.walker.label}/pid:{rank}"
            if r.child:
                names[f"{r.walker.label}+child"] = r.child
                outcome.labels[r.child] = f"{r.walker.label}+child"
        walk = [by_rank[rank].pid for rank in scenario.join]
        print(f"{scenario.name}: pids {[r.pid for r in by_rank]}, joined {walk}")
        for r in running:
            procs = (groups.path(r.walker.cgroup) / "cgroup.procs").read_text().split()
            print(f"  {r.walker.cgroup or '.'}: cgroup.procs {procs}")
        if scenario.equalize:
            base = {r.pid: points_now(r.pid) for r in running}
            top = max(base.values())
            for pid, points in base.items():
                Path(f"/proc/{pid}/oom_score_adj").write_text(str(top - points))
            print(f"  points before the adjs {base}: all made {top}")

        domain = groups.domain(scenario.domain)
        found = predict(scenario, domain, outcome)
        before = sup.read_events(events)
        pusher = sup.start_pusher(groups.path(scenario.pusher), events)
        sup.push_until_kill(pusher)
        with contextlib.suppress(ProcessLookupError):
            pusher.proc.kill()
        pusher.proc.wait()
        for r in running:
            statuses[outcome.labels[r.pid]] = status_of(r.proc)
            if r.child:
                statuses[outcome.labels[r.child]] = child_status(r.child)
                r.child = 0
        increment = sup.read_events(events) - before
    finally:
        for r in running:
            if r.proc.poll() is None:
                r.proc.kill()
            r.proc.wait()
            if r.child:
                with contextlib.suppress(ChildProcessError, ProcessLookupError):
                    os.kill(r.child, signal.SIGKILL)
                    os.waitpid(r.child, 0)
        sup.kill_all([], pusher)
        groups.close()
    lines = log.new_lines()
    log.close()
    evidence = sup.parse_log(lines)
    print(f"{scenario.name}: statuses {statuses}; oom_kill +{increment}")
    print("\n".join(evidence.lines))

    label_pid = {label: pid for pid, label in outcome.labels.items()}
    dead = sorted(label_pid[label] for label, status in statuses.items() if status == -9)
    assert all(s in (0, -9, -15) for s in statuses.values()), statuses
    reports = evidence.reports
    assert reports, "no OOM-killer report in the kernel log"
    first = reports[0]
    assert first.constraint == "CONSTRAINT_MEMCG" and first.oom_memcg == domain, first
    # The kernel's choice, three ways: the chosen pid and the Killed process lines, the
    # counter (one per line), the wait statuses (every line's process and its sharers).
    assert increment == len(evidence.killed_tids), (increment, evidence.killed_tids)
    assert first.killed_tids == [first.chosen], first
    bad = RUN.splats("\n".join(lines), allow_oom=True)
    assert not bad, "kernel log:\n" + "\n".join(bad[:40])
    # The scenario built what it says: the tie stood when the kernel chose (its dump).
    if scenario.equalize:
        dump = {int(m[1]): m for line in lines if (m := DUMP.search(line))}
        weighed = {
            pid: int(m[3]) + int(m[4]) // (PAGE_KB * 1024) + int(m[5]) + int(m[6])
            for pid, m in dump.items()
            if pid in outcome.labels
        }
        assert len(set(weighed.values())) == 1, f"no tie in the kernel's dump: {weighed}"
    expected_chosen = names[scenario.chosen]
    expected_dead = sorted(names[label] for label in scenario.killed)
    assert first.chosen == expected_chosen, (first.chosen, outcome.labels)

    # The prediction against it: the chosen process, and everyone the first kill took.
    later = [pid for r in reports[1:] for pid in r.killed_tids]
    for source, (victim, killed) in outcome.predicted.items():
        assert victim == first.chosen, (
            f"{source} predicted victim {victim} ({outcome.labels.get(victim or 0)}), "
            f"the kernel chose {first.chosen} ({outcome.labels.get(first.chosen or 0)})"
        )
        assert sorted({*killed, *later}) == dead, (
            f"{source} predicted killed {killed}, the kernel killed {dead}"
        )
    assert expected_dead == sorted(set(dead) - set(later)), (dead, outcome.labels)
    # A further report (the pusher's charge retried before the first kill's memory was
    # freed: see oom_support.PUSHER_SCRIPT) must have chosen the next killable candidate
    # of the predicted ranking, which puts a tie in reverse walk order.
    ranking = found["kernel"].candidates  # type: ignore[attr-defined]
    gone = set(outcome.predicted["kernel"][1])
    for report in reports[1:]:
        following = [c.pid for c in ranking if c.points is not None and c.pid not in gone]
        assert following and report.chosen == following[0], (report, following)
        gone.add(report.chosen)

    # The new fields, as the kernel showed them.
    for source, d in found.items():
        record = d if isinstance(d, dict) else d.to_dict()  # type: ignore[attr-defined]
        shared = {k["pid"]: k["shares_mm_with"] for k in record["shared_mm_kills"]}
        if scenario.equalize:
            assert record["tie_order_known"] is True, (source, record["notes"])
            assert record["tied_pids"] == walk, (source, record["tied_pids"], walk)
            assert not shared, (source, shared)
        else:
            assert shared == {names["big"]: names["big+child"]}, (source, shared)
    print(f"oom walk scenario {scenario.name}: predicted and killed {dead}; match")
