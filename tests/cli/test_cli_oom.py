"""``tamalloc oom`` run as ``python -m tamalloc`` in a subprocess."""

from __future__ import annotations

import io
import json
import re

import pytest

from _support import Child, MiB, assert_clean_error, meminfo_kb, run_cli, run_on_pty
from tamalloc.cli import oom as oom_cli
from tamalloc.cli.env import Environment
from tamalloc.models import OomTask
from tamalloc.oom import OomCgroup, OomDomain, predict
from test_oom_model import inputs

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture
def doomed(spawn_child: object) -> Child:
    """A child with oom_score_adj 1000: its badness is at least RAM + swap, so it is
    the system OOM's victim unless another process has 1000 too."""
    child: Child = spawn_child(reserve=32 * MiB, touch=8 * MiB)  # type: ignore[operator]
    with open(f"/proc/{child.pid}/oom_score_adj", "w") as f:
        f.write("1000")
    return child


def test_json_lists_the_domains(backend: str, doomed: Child) -> None:
    result = run_cli("oom", "--json", "--backend", backend)
    assert result.returncode == 0, result.stderr
    domains = json.loads(result.stdout)
    assert isinstance(domains, list) and domains[0]["kind"] == "system"
    assert domains[0]["cgroup"] is None
    assert all(d["kind"] == "cgroup" for d in domains[1:])
    assert [d["cgroup"] for d in domains[1:]] == sorted(d["cgroup"] for d in domains[1:])
    system = domains[0]
    assert system["victim"]["pid"] == doomed.pid
    assert system["candidates"][0] == system["victim"]
    assert doomed.pid in system["killed_pids"]
    assert isinstance(system["total_pages"], int) and isinstance(system["headroom_kb"], int)
    assert set(system["victim"]) >= {
        "pid",
        "name",
        "cgroup",
        "points",
        "rss_pages",
        "swap_pages",
        "pgtables_pages",
        "oom_score_adj",
        "adj_pages",
        "score",
        "unkillable",
    }
    assert system["victim"]["oom_score_adj"] == 1000
    assert system["victim"]["score"] >= 1333  # (1000 + 1000 + rss) * 2 / 3


def test_table_is_plain_when_piped(doomed: Child) -> None:
    result = run_cli("oom", "--units", "kb", "--top", "3")
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"OOM in system: kills {doomed.pid} (")
    total = meminfo_kb()["MemTotal"] + meminfo_kb()["SwapTotal"]
    assert f"limit {total // 4 * 4} kB (RAM + swap)" in lines[0] and "headroom" in lines[0]
    header = lines[1]
    for title in (
        "FATE",
        "PID",
        "NAME",
        "CGROUP",
        "POINTS",
        "SCORE",
        "RSS (kB)",
        "SWAP (kB)",
        "PGTABLES (kB)",
        "ADJ (pages)",
    ):
        assert title in header
    victim_row = lines[2].split()
    assert victim_row[:2] == ["KILL", str(doomed.pid)]
    # The system section: the header, three candidates, then the notes.
    section = lines[: next((i for i, line in enumerate(lines) if not line), len(lines))]
    rows = [line for line in section[2:] if not line.startswith("note: ")]
    assert len(rows) == 3
    assert any(line.startswith("note: ") and "(--top)" in line for line in section)


def test_top_shows_whoever_dies(doomed: Child) -> None:
    result = run_cli("oom", "--top", "1")
    assert result.returncode == 0
    assert re.search(rf"^KILL +{doomed.pid} ", result.stdout, re.M)


def render(domain: OomDomain, top: int) -> list[str]:
    out = io.StringIO()
    oom_cli._table(Environment(stdout=out, stdout_isatty=False), domain, top, "kb")
    return out.getvalue().splitlines()


def test_a_group_kill_is_shown_whole_and_the_spared_say_why() -> None:
    def t(pid: int, rss_mib: int, adj: int = 0) -> OomTask:
        return OomTask(pid, f"w{pid}", "/app/w", rss_mib * 1024, 0, 0, 0, adj, adj == -1000, False)

    group = OomCgroup(None, None, 0, 0, True, True)
    data = inputs(
        [t(10, 300), t(11, 1), t(12, 2), t(13, 3, adj=-1000), t(14, 200)],
        {
            "/app": group,
            "/app/w": OomCgroup(None, None, 0, 0, False, True),
        },
        mem_available_kb=1 << 21,
    )
    (system,) = predict(data)
    lines = render(system, top=1)
    assert lines[0].startswith(
        "OOM in system: kills whole group /app (memory.oom.group): 4 processes"
    )
    fates = {
        int(m[2]): m[1]
        for m in (re.match(r"(KILL(?: \(group\))?) +(\d+) ", line) for line in lines[2:])
        if m
    }
    assert fates == {
        10: "KILL",
        11: "KILL (group)",
        12: "KILL (group)",
        14: "KILL (group)",
    }  # past --top 1 too
    assert lines[-1] == "note: 1 more candidate (--top)"
    spared = next(line for line in render(system, top=10) if " 13 " in line)
    assert spared.startswith("safe: oom_score_adj -1000")


def test_the_first_line_names_a_smaller_ancestor_that_binds() -> None:
    def t(pid: int, cgroup: str, rss_mib: int) -> OomTask:
        return OomTask(pid, f"p{pid}", cgroup, rss_mib << 10, 0, 0, 0, 0, False, False)

    data = inputs(
        [t(10, "/a/b", 30), t(11, "/a/c", 20)],
        {
            "/a": OomCgroup(64 << 10, 0, 60 << 10, 0, False, True),
            "/a/b": OomCgroup(512 << 10, 0, 40 << 10, 0, False, True),
            "/a/c": OomCgroup(None, 0, 20 << 10, 0, False, True),
        },
        mem_available_kb=1 << 21,
    )
    _, a, b = predict(data)
    first_a = " ".join(render(a, top=5)[0:2])
    first_b = " ".join(render(b, top=5)[0:2])
    assert "headroom 4096 kB" in first_a and "bound by" not in first_a
    assert "limit 524288 kB" in first_b and "used 40960 kB" in first_b
    assert "headroom 4096 kB (bound by /a, whose OOM comes first)" in first_b
    assert any("an OOM in /a comes first" in line for line in render(b, top=5))


def test_fits_a_narrow_terminal(doomed: Child) -> None:
    out = ANSI.sub("", run_on_pty("oom", "--top", "3", columns=70))
    assert str(doomed.pid) in out
    assert all(len(line) <= 70 for line in out.splitlines()), out
    assert "\x1b[" in run_on_pty("oom", "--top", "3")  # coloured on a terminal


def test_unknown_cgroup_is_one_line_and_status_1() -> None:
    line = assert_clean_error(run_cli("oom", "--cgroup", "/no/such/cgroup/here"), 1)
    assert "no such cgroup: /no/such/cgroup/here" in line


def test_the_root_cgroup_keeps_the_system_domain() -> None:
    domains = json.loads(run_cli("oom", "--json").stdout)
    if len(domains) == 1 and run_cli("oom", "--cgroup", "/").returncode != 0:
        pytest.skip("no cgroup v2 hierarchy here")
    result = run_cli("oom", "--cgroup", "/", "--json")
    assert result.returncode == 0, result.stderr
    assert [d["kind"] for d in json.loads(result.stdout)] == ["system"]


@pytest.mark.parametrize(
    "args",
    [
        ("--top", "0"),
        ("--top", "x"),
        ("--units", "gb"),
        ("1234",),
        ("--cgroup",),
    ],
)
def test_bad_arguments_are_usage_errors(args: tuple[str, ...]) -> None:
    assert_clean_error(run_cli("oom", *args), 2)


def test_help_says_what_it_predicts() -> None:
    result = run_cli("oom", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "OOM killer" in text and "memory.oom.group" in text and "--cgroup" in text
    assert "oom" in run_cli("--help").stdout


def test_a_process_sharing_the_victims_memory_is_shown_dying_and_why() -> None:
    def t(pid: int, rss_mib: int) -> OomTask:
        return OomTask(pid, f"p{pid}", "/a", rss_mib << 10, 0, 0, 0, 0, False, False)

    data = inputs(
        [t(10, 300), t(11, 300), t(12, 100)],
        {"/a": OomCgroup(None, None, 0, 0, False, True, cgroup_id=3, procs=(10, 12, 11))},
        mem_available_kb=1 << 21,
        shared_mm=((10, 11),),
        start_times={10: 5, 11: 9},
    )
    (system,) = predict(data)
    lines = render(system, top=5)
    assert lines[0].startswith("OOM in system: kills 11 (p11) and 10 (p10)")
    fates = {
        int(m[2]): m[1]
        for m in (re.match(r"(KILL(?: \(shares mm\))?) +(\d+) ", x) for x in lines[2:])
        if m
    }
    assert fates == {11: "KILL", 10: "KILL (shares mm)"}
    assert any(x.startswith("note: 10 (p10) dies too: shares the memory (mm) of 11") for x in lines)
