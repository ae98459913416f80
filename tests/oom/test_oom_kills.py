"""Real OOM kills in the guest against `tamalloc oom`'s prediction (issue 10, item 4).

Each scenario sets up cgroups and member processes of known sizes and adjs, asks
tamalloc.predict_oom() on each backend of BACKENDS (and, for some, the `tamalloc oom
--json` command, on the default backend and on bpf) whom the kernel would kill, then
forces the OOM with a pusher that cannot be chosen itself (oom_score_adj -1000) and
stops at the first kill (see oom_support.py).
What the kernel really killed comes from three sources that must agree: the members'
wait statuses (SIGKILL), the domain's oom_kill increment (memory.events, or /proc/vmstat
for a system-wide OOM) and the kernel log's "Killed process N" lines. The prediction
must name exactly the set the first OOM report killed (and its chosen process), and the
set must be the one the scenario is built for (so that a scenario that did not test
what it says fails too). A further report in the same domain (the kernel retrying the
pusher's charge before the victim's memory is uncharged: see oom_support.PUSHER_SCRIPT)
must have chosen the next killable candidate of the predicted ranking.

Only in the guest boot of `make vm-oom-test` (TAMALLOC_OOM_KILLS=1, 1 GiB, a log check
that accepts complete OOM-killer reports): `make vm-test`'s log check rejects them. The
test process stays in the root cgroup and, for the system-wide OOM, sets its own
oom_score_adj to -1000: it is never a candidate. A summary line for the README ends
the run (`oom scenarios: N predicted, M matched`).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import oom_support as sup
import pytest

import tamalloc
from _support import KernelLog

sup.skip_unless_real_oom_kills()

pytestmark = pytest.mark.usefixtures("require_kernel")

RUN = sup.load_run_py()
# Each predicts on its own: the syscalls, /proc, the BPF task iterator (issue 17).
BACKENDS = ("kernel", "procfs", "bpf")
VMSTAT = Path("/proc/vmstat")


@dataclass(frozen=True)
class Scenario:
    name: str
    # cgroups below the scenario's own (rel path -> files to write), parents first; the
    # scenario's own cgroup is "". Empty for the system-wide scenario: no cgroup at all.
    cgroups: dict[str, dict[str, str]]
    # (label, cgroup rel path, MiB, oom_score_adj, mode): see oom_support.MEMBER_SCRIPT
    members: tuple[tuple[str, str, int, int, str], ...]
    pusher: str  # the pusher's cgroup (rel path)
    domain: str | None  # the OOM domain (rel path); None: system-wide
    expect: frozenset[str]  # the labels the scenario is built to have killed
    cli: bool = False  # also ask `tamalloc oom --json --cgroup PATH`
    # A cgroup below the domain whose own, larger limit the domain's binds: its predicted
    # headroom must be the domain's and its bound_by the domain, and its own memcg must
    # see no OOM (memory.events "oom") while the domain's does.
    inner: str | None = None
    # (label, cgroup rel path): members moved there once they hold their memory (their
    # charges stay behind; a zombie leader does too: see oom_support.move_process).
    moves: tuple[tuple[str, str], ...] = ()
    # The cgroup (rel path) whose memory.events counts the kills, when not the domain's:
    # a kill is counted in the memcg of the victim's mm owner (memcg_memory_event_mm()).
    events: str | None = None


LIMIT = {"memory.max": "128M"}
# Sizes: every member is a Python (about 10 MiB resident before it allocates, much of it
# shared libraries) plus its allocation; the gaps between candidates' points are 8 MiB or
# more, so that neither the interpreter's few hundred KiB of jitter nor the page tables
# decide. With a 128 MiB limit (32768 pages) adj N moves the points by N * 32 pages, so
# -500 is -64 MiB, +800 is +102 MiB and +200 is +25.6 MiB.
SCENARIOS = [
    Scenario(
        "memcg-biggest-dies",
        {"": LIMIT},
        (("small", "", 8, 0, "plain"), ("mid", "", 24, 0, "plain"), ("big", "", 48, 0, "plain")),
        "",
        "",
        frozenset({"big"}),
        cli=True,
    ),
    Scenario(
        "memcg-negative-adj-protects",
        {"": LIMIT},
        (
            ("small", "", 8, 0, "plain"),
            ("mid", "", 24, 0, "plain"),
            ("big-500", "", 48, -500, "plain"),
        ),
        "",
        "",
        frozenset({"mid"}),
    ),
    Scenario(
        "memcg-adj-1000-never",
        {"": LIMIT},
        (
            ("small", "", 8, 0, "plain"),
            ("mid", "", 24, 0, "plain"),
            ("big-1000", "", 48, -1000, "plain"),
        ),
        "",
        "",
        frozenset({"mid"}),
    ),
    Scenario(
        "memcg-positive-adj-small-first",
        {"": LIMIT},
        (
            ("tiny+800", "", 4, 800, "plain"),
            ("mid", "", 24, 0, "plain"),
            ("big", "", 48, 0, "plain"),
        ),
        "",
        "",
        frozenset({"tiny+800"}),
    ),
    Scenario(
        "memcg-zombie-leader",
        {"": LIMIT},
        (
            ("small", "", 8, 0, "plain"),
            ("mid", "", 24, 0, "plain"),
            ("zombie", "", 48, 0, "zombie-leader"),
        ),
        "",
        "",
        frozenset({"zombie"}),
    ),
    Scenario(
        "memcg-oom-group",
        {"": {**LIMIT, "memory.oom.group": "1"}},
        (
            ("a", "", 8, 0, "plain"),
            ("b", "", 24, 0, "plain"),
            ("c", "", 40, 0, "plain"),
            ("keeper-1000", "", 16, -1000, "plain"),
        ),
        "",
        "",
        frozenset({"a", "b", "c"}),
        cli=True,
    ),
    Scenario(
        # /x holds the most memory in all, /y the biggest process: the kill is per process
        "nested-parent-limit-picks-subtree",
        {"": {"memory.max": "160M"}, "x": {}, "y": {}, "p": {}},
        (
            ("x1", "x", 20, 0, "plain"),
            ("x2", "x", 20, 0, "plain"),
            ("x3", "x", 20, 0, "plain"),
            ("y1", "y", 40, 0, "plain"),
        ),
        "p",
        "",
        frozenset({"y1"}),
    ),
    Scenario(
        "nested-child-limit-stays-inside",
        {"": {}, "b": {"memory.max": "64M"}, "c": {}},
        (
            ("b-small", "b", 8, 0, "plain"),
            ("b-mid", "b", 20, 0, "plain"),
            ("c-big", "c", 48, 0, "plain"),
        ),
        "b",
        "b",
        frozenset({"b-mid"}),
    ),
    Scenario(
        "nested-oom-group-ancestor",
        {
            "": {"memory.max": "160M"},
            "b": {"memory.oom.group": "1"},
            "b/c": {},
            "b/d": {},
            "e": {},
            "p": {},
        },
        (
            ("c-big", "b/c", 40, 0, "plain"),
            ("d-small", "b/d", 8, 0, "plain"),
            ("e-mid", "e", 24, 0, "plain"),
        ),
        "p",
        "",
        frozenset({"c-big", "d-small"}),
    ),
    Scenario(
        "system-wide-biggest-dies",
        {},
        (
            ("small", "", 16, 0, "plain"),
            ("mid", "", 48, 0, "plain"),
            ("big", "", 128, 0, "plain"),
        ),
        "",
        None,
        frozenset({"big"}),
    ),
    Scenario(
        # two of the same size: the +200 one outweighs even a bigger process
        "memcg-positive-adj-breaks-tie",
        {"": LIMIT},
        (
            ("even", "", 24, 0, "plain"),
            ("even+200", "", 24, 200, "plain"),
            ("bigger", "", 32, 0, "plain"),
        ),
        "",
        "",
        frozenset({"even+200"}),
    ),
    Scenario(
        # "sparse" has less resident than "mid" (16 vs 24 MiB) but as much again in page
        # tables: oom_badness() counts them, so it ranks first
        "memcg-pgtables-count",
        {"": LIMIT},
        (
            ("small", "", 8, 0, "plain"),
            ("mid", "", 24, 0, "plain"),
            ("sparse", "", 16, 0, "sparse"),
        ),
        "",
        "",
        frozenset({"sparse"}),
    ),
    Scenario(
        # /a/b may take 512 MiB by its own limit but /a only 64: the pusher's charge in
        # /a/b fails at /a's counter, and /a's OOM weighs /a/c's bigger process too
        "nested-small-parent-binds",
        {"": {}, "a": {"memory.max": "64M"}, "a/b": {"memory.max": "512M"}, "a/c": {}},
        (
            ("b-small", "a/b", 4, 0, "plain"),
            ("b-mid", "a/b", 12, 0, "plain"),
            ("c-big", "a/c", 24, 0, "plain"),
        ),
        "a/b",
        "a",
        frozenset({"c-big"}),
        cli=True,
        inner="a/b",
    ),
]


@dataclass
class Record:
    name: str
    predicted: dict[str, list[int]] = field(default_factory=dict)  # source -> tgids
    victims: dict[str, int | None] = field(default_factory=dict)  # backend -> victim tgid
    ranking: list[int] = field(default_factory=list)  # killable candidates, ranked (tgids)
    killed: list[int] = field(default_factory=list)  # by the first OOM report
    later: list[list[int]] = field(default_factory=list)  # by each further report
    labels: dict[int, str] = field(default_factory=dict)
    match: bool = False

    def named(self, pids: list[int]) -> str:
        return "{" + ", ".join(f"{self.labels.get(p, '?')} {p}" for p in sorted(pids)) + "}"

    def line(self) -> str:
        predicted = "; ".join(f"{src} {self.named(p)}" for src, p in self.predicted.items())
        text = f"oom scenario {self.name}: predicted {predicted or 'none'}; "
        text += f"killed {self.named(self.killed)}"
        for kills in self.later:
            text += f", then {self.named(kills)} by a further OOM"
        return text + ("; match" if self.match else "; MISMATCH")


RECORDS: list[Record] = []


@pytest.fixture(scope="session", autouse=True)
def summary() -> Iterator[None]:
    """The per-scenario records and the line the README quotes, on stdout (-s)."""
    yield
    if not RECORDS:
        return
    print()
    for record in RECORDS:
        print(record.line())
    predicted = sum(1 for r in RECORDS if r.predicted)
    matched = sum(1 for r in RECORDS if r.match)
    again = sum(1 for r in RECORDS if r.later)
    print(
        f"oom scenarios: {predicted} predicted, {matched} matched ({len(RECORDS)} run, "
        f"{again} with a further OOM kill before the victim's memory was freed)"
    )


@pytest.fixture
def no_oom_dump_lost() -> Iterator[None]:
    """The task dump of each report is kept (it lists each task's rss, pgtables and adj
    as the kernel weighed them: the record of a mismatch)."""
    path = Path("/proc/sys/vm/oom_dump_tasks")
    before = path.read_text()
    path.write_text("1")
    yield
    path.write_text(before)


def predict(
    scenario: Scenario, groups: sup.Cgroups | None, tgid: dict[int, int], record: Record
) -> None:
    """Each source's killed_pids, as tgids (a member's thread id maps to its process);
    each backend's victim; the kernel backend's ranking of the killable candidates."""
    domain_path = (
        None if groups is None or scenario.domain is None else groups.domain(scenario.domain)
    )
    predict_oom = getattr(tamalloc, "predict_oom", None)
    if predict_oom is None:
        return
    out = record.predicted
    for backend in BACKENDS:
        domains = predict_oom(cgroup=domain_path, backend=backend)
        if domain_path is None:
            chosen = [d for d in domains if d.kind == "system"]
        else:
            chosen = [d for d in domains if d.kind == "cgroup" and d.cgroup == domain_path]
        assert len(chosen) == 1, (backend, domain_path, domains)
        domain = chosen[0]
        print(
            f"{scenario.name} {backend}: victim {domain.victim}, kill_group "
            f"{domain.kill_group}, killed {domain.killed_pids}, notes {domain.notes}"
        )
        for c in domain.candidates[:6]:
            print(
                f"  candidate {c.pid} {c.name} {c.cgroup} points {c.points} "
                f"unkillable {c.unkillable}"
            )
        if scenario.inner is not None:
            check_bound(predict_oom, backend, groups, scenario, domain_path)
        out[backend] = sorted(tgid.get(p, p) for p in domain.killed_pids)
        record.victims[backend] = None if domain.victim is None else domain.victim.pid
        if backend == "kernel":
            record.ranking = [tgid.get(c.pid, c.pid) for c in domain.candidates if not c.unkillable]
    sources = (("cli", []), ("cli-bpf", ["--backend", "bpf"])) if scenario.cli else ()
    for source, forced in sources:
        cmd = [*sup.cli_command(), *forced, "oom", "--json"]
        if domain_path is not None:
            cmd += ["--cgroup", domain_path]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        document = json.loads(result.stdout)
        domains = document if isinstance(document, list) else document["domains"]
        chosen = [d for d in domains if d.get("cgroup") == domain_path]
        assert len(chosen) == 1, result.stdout
        out[source] = sorted(tgid.get(p, p) for p in chosen[0]["killed_pids"])
    if scenario.cli and scenario.inner is not None and groups is not None:
        inner_path = groups.domain(scenario.inner)
        cmd = [*sup.cli_command(), "oom", "--json", "--cgroup", inner_path]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        by_path = {d["cgroup"]: d for d in json.loads(result.stdout)}
        assert by_path[inner_path]["bound_by"] == domain_path, result.stdout
        assert by_path[inner_path]["headroom_kb"] == by_path[domain_path]["headroom_kb"]


def check_bound(
    predict_oom: Callable[..., list[tamalloc.oom.OomDomain]],
    backend: str,
    groups: sup.Cgroups | None,
    scenario: Scenario,
    domain_path: str | None,
) -> None:
    """The inner cgroup's prediction: the domain's headroom, and the domain binds. Both
    from one reading, so that the usage is the same."""
    assert groups is not None and scenario.inner is not None
    inner_path = groups.domain(scenario.inner)
    domains = {d.cgroup: d for d in predict_oom(cgroup=inner_path, backend=backend)}
    inner, outer = domains[inner_path], domains[domain_path]
    print(
        f"{scenario.name} {backend}: {inner_path} limit {inner.limit_kb} kB, headroom"
        f" {inner.headroom_kb} kB bound by {inner.bound_by}; {domain_path} limit"
        f" {outer.limit_kb} kB, headroom {outer.headroom_kb} kB"
    )
    assert inner.limit_kb > outer.limit_kb
    assert inner.bound_by == domain_path and outer.bound_by == domain_path
    assert inner.headroom_kb == outer.headroom_kb
    assert inner.headroom_kb < inner.limit_kb - inner.usage_kb


def memcg_events(path: Path) -> dict[str, int]:
    """A memory.events file as a dict ("oom", "oom_kill", ...)."""
    pairs = (line.split() for line in path.read_text().splitlines())
    return {key: int(value) for key, value in pairs}


@pytest.mark.usefixtures("no_oom_dump_lost")
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_real_oom_kill_matches_prediction(scenario: Scenario) -> None:
    run_scenario(scenario, f"tamalloc-oom-{SCENARIOS.index(scenario) + 1}")


def run_scenario(scenario: Scenario, cgroup_name: str) -> None:
    """Build SCENARIO (its cgroups below /sys/fs/cgroup/CGROUP_NAME), predict, push until
    the kernel kills, and check the kill against the prediction and the scenario."""
    record = Record(scenario.name)
    RECORDS.append(record)
    members = [sup.Member(*spec) for spec in scenario.members]
    groups = sup.Cgroups(cgroup_name) if scenario.cgroups else None
    pusher = None
    adj_path = Path("/proc/self/oom_score_adj")
    own_adj = adj_path.read_text()
    log = KernelLog()
    try:
        if groups is not None:
            for rel, settings in scenario.cgroups.items():
                groups.make(rel, settings)
            counted = scenario.domain if scenario.events is None else scenario.events
            events = groups.path(counted or "") / "memory.events"
        else:
            # the system-wide OOM must not choose this process (nor inherit it a score)
            adj_path.write_text("-1000")
            events = VMSTAT
        sup.start_members(members, groups)
        for label, rel in scenario.moves:
            assert groups is not None
            (moved,) = [m for m in members if m.label == label]
            sup.move_process(moved, groups.path(rel))
        record.labels = {m.pid: m.label for m in members}
        tgid = {m.tid: m.pid for m in members} | {m.pid: m.pid for m in members}
        predict(scenario, groups, tgid, record)
        before = sup.read_events(events)
        inner_events = (
            groups.path(scenario.inner) / "memory.events"
            if groups is not None and scenario.inner is not None
            else None
        )
        inner_before = memcg_events(inner_events) if inner_events is not None else {}
        domain_before = memcg_events(events) if inner_events is not None else {}
        pusher = sup.start_pusher(groups.path(scenario.pusher) if groups else None, events)
        sup.push_until_kill(pusher)
        statuses = sup.finish(members, pusher)
        increment = sup.read_events(events) - before
        inner_after = memcg_events(inner_events) if inner_events is not None else {}
        domain_after = memcg_events(events) if inner_events is not None else {}
    finally:
        sup.kill_all(members, pusher)
        adj_path.write_text(own_adj)
        if groups is not None:
            groups.close()
    lines = log.new_lines()
    log.close()
    evidence = sup.parse_log(lines)
    print(
        f"{scenario.name}: pusher pushed {pusher.pushed_mib} MiB; statuses {statuses}; "
        f"oom_kill +{increment}; log killed {evidence.killed_tids}"
    )
    print("\n".join(evidence.lines))

    by_status = sorted(m.pid for m in members if statuses[m.label] == -9)
    by_log = sorted({tgid.get(t, t) for t in evidence.killed_tids})
    reports = evidence.reports
    assert reports, "no OOM-killer report in the kernel log"
    record.killed = sorted({tgid.get(t, t) for t in reports[0].killed_tids})
    record.later = [sorted({tgid.get(t, t) for t in r.killed_tids}) for r in reports[1:]]

    # The kernel's choice, three ways: wait statuses, the log, the counter.
    assert by_log == by_status, f"log killed {by_log}, SIGKILLed members {by_status}"
    assert by_status, f"no member died of SIGKILL: {statuses}"
    assert all(s in (0, -9) for s in statuses.values()), statuses
    # one count per "Killed process" line: an oom.group kill may kill (and count) its
    # victim a second time when it kills the group, if the victim still has its mm
    assert increment == len(evidence.killed_tids), (increment, evidence.killed_tids)
    for report in reports:
        assert report.killed_tids, f"a report without a kill: {report}"
        if groups is None:
            assert report.constraint == "CONSTRAINT_NONE", report
        else:
            assert report.constraint == "CONSTRAINT_MEMCG", report
            assert report.oom_memcg == groups.domain(scenario.domain or ""), report
    if inner_events is not None:
        # The OOM was the domain's own (its limit was hit), not the inner cgroup's.
        assert domain_after["oom"] > domain_before["oom"], (domain_before, domain_after)
        assert inner_after["oom"] == inner_before["oom"], (inner_before, inner_after)
    bad = RUN.splats("\n".join(lines), allow_oom=True)
    assert not bad, "kernel log:\n" + "\n".join(bad[:40])

    predictions = list(record.predicted.values())
    # A further report (see PUSHER_SCRIPT) chose after the first victim was gone: it must
    # have taken the next killable candidate of the predicted ranking.
    expected_later = [p for p in record.ranking if p not in record.killed]
    later_ok = all(
        r.chosen is not None and tgid.get(r.chosen, r.chosen) == expected_later[i]
        for i, r in enumerate(reports[1:])
        if i < len(expected_later)
    ) and len(reports) - 1 <= len(expected_later)
    first_chosen = tgid.get(reports[0].chosen or 0, reports[0].chosen)
    record.match = (
        bool(predictions)
        and all(p == record.killed for p in predictions)
        and all(v == first_chosen for v in record.victims.values())
        and later_ok
    )

    # The prediction against it.
    if not predictions:
        pytest.fail("tamalloc.predict_oom() is missing: nothing to compare the kill with")
    assert len({tuple(p) for p in predictions}) == 1, f"sources disagree: {record.predicted}"
    assert record.match, (record.line(), record.victims, first_chosen, record.ranking)
    # And the scenario tested what it says it does.
    assert {record.labels[p] for p in record.killed} == scenario.expect, record.line()
