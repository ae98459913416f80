"""Tables fitted to the terminal, --top ranking, labels: the CLI in-process with fake
data where the ranking needs it, and on a real terminal of 50 columns."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable

import pytest

import tamalloc.stats
from _support import Child, MiB, run_on_pty
from tamalloc.cli.main import Environment, main
from tamalloc.cli.output import Column, _layout
from tamalloc.models import MemStats


def _run(*args: str, width: int | None = None) -> tuple[int, str, str]:
    env = Environment(
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        stdin=io.StringIO(),
        stdout_isatty=False,
        width=width,
    )
    status = main(list(args), env)
    assert isinstance(env.stdout, io.StringIO) and isinstance(env.stderr, io.StringIO)
    return status, env.stdout.getvalue(), env.stderr.getvalue()


def _on_terminal(*args: str, columns: int) -> str:
    """The command on a pty of ``columns`` columns; its output without escapes."""
    text = run_on_pty(*args, columns=columns).replace("\r", "")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


# --- tables never wrap ----------------------------------------------------------------


@pytest.mark.parametrize("command", [["stats", "--top", "5"], ["total"], ["system"]])
def test_tables_fit_a_50_column_terminal(
    command: list[str], spawn_child: Callable[..., Child]
) -> None:
    for _ in range(5):  # at least five rows for --top 5, even in the near-empty guest
        spawn_child(reserve=MiB, touch=0)
    out = _on_terminal(*command, "--backend", "procfs", columns=50)
    lines = out.splitlines()
    assert lines
    assert max(len(line) for line in lines) <= 50, out
    if command[0] == "stats":
        # header, 5 rows, rule, footer: a wrapped row would add lines
        assert len(lines) == 8, out
        # the last column is right-aligned: every row ends where its header does
        assert all(len(line) == len(lines[0]) for line in lines[1:6]), out


@pytest.mark.parametrize("command", [["stats"], ["total"], ["system"]])
def test_a_forced_width_is_honoured_when_piped(command: list[str]) -> None:
    for width in (50, 30):  # titles too: "Disk / (used %: ...)" is 48 wide
        status, out, _ = _run(*command, "--backend", "procfs", width=width)
        assert status == 0
        assert max(len(line) for line in out.splitlines()) <= width
    if command[0] != "system":  # system's tables are narrower than 50 anyway
        _, wide, _ = _run(*command, "--backend", "procfs")
        assert max(len(line) for line in wide.splitlines()) > 50  # piped: uncut by default


def test_layout_shortens_headers_then_text_then_drops_columns() -> None:
    columns = [
        Column("NAME", numeric=False),
        Column("RESERVED (VSZ)", short="VSZ"),
        Column("COMMITTED (RSS)", short="RSS"),
        Column("OOM SCORE", short="OOM"),
    ]
    rows = [["a-long-process-name", "1.0 GiB", "2.0 MiB", "666"]]

    def lines(width: int | None) -> list[str]:
        return [line for line, _ in _layout(columns, rows, None, max_width=width)]

    wide = lines(50)  # the rightmost headers shortened first, the name kept whole
    assert wide[0].split() == ["NAME", "RESERVED", "(VSZ)", "RSS", "OOM"]
    assert wide[1].split()[0] == "a-long-process-name"
    full = lines(None)
    assert full[0].split("  ")[0].strip() == "NAME"
    assert "RESERVED (VSZ)" in full[0]
    narrow = lines(40)  # headers shortened, the name cut, every column kept
    assert max(map(len, narrow)) <= 40
    assert narrow[0].split() == ["NAME", "VSZ", "RSS", "OOM"]
    assert narrow[1].split()[-1] == "666"
    tiny = lines(20)  # the rightmost columns go whole rather than be cut mid-number
    assert max(map(len, tiny)) <= 20
    assert tiny[0].split() == ["NAME", "VSZ"]
    assert tiny[1].split()[-2:] == ["1.0", "GiB"]


# --- --top ranking ----------------------------------------------------------------------


def _fake(pid: int, committed_kb: int, oom: int = 666) -> MemStats:
    return MemStats.build(
        pid, f"p{pid}", committed_kb * 2, committed_kb, committed_kb, 0, 0, 0, oom, 0
    )


def test_top_breaks_oom_score_ties_by_resident_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    # The case: equal scores, ties went by pid and a 1.1 MiB process beat an
    # 18.6 MiB one.
    rows = [_fake(10, 1126), _fake(20, 19046), _fake(30, 500, oom=700), _fake(40, 19046)]
    monkeypatch.setattr(tamalloc.stats, "all_mem_stats", lambda backend=None: rows)
    status, out, _ = _run("stats", "--top", "3", "--backend", "procfs", "--csv")
    assert status == 0
    pids = [int(line.split(",")[0]) for line in out.splitlines()[1:]]
    assert pids == [30, 20, 40]  # highest score, then the larger RSS, then the lower pid
    _, out, _ = _run("stats", "--sort", "oom", "--reverse", "--backend", "procfs", "--csv")
    assert [int(line.split(",")[0]) for line in out.splitlines()[1:]] == [10, 40, 20, 30]


def test_top_help_says_what_it_ranks_by() -> None:
    _, out, _ = _run("stats", "--help")
    text = " ".join(out.split())
    assert "--top N" in text
    assert "ranked by OOM score, equal scores by committed (resident) memory" in text


# --- labels ------------------------------------------------------------------------------


def test_labels_say_vsz_and_rss_and_explain_committed_as() -> None:
    _, out, _ = _run("stats", str(os.getpid()), "--backend", "procfs")
    assert "RESERVED (VSZ)" in out and "COMMITTED (RSS)" in out
    _, out, _ = _run("total", "--backend", "procfs")
    fields = {line.split("  ")[0].strip(): line for line in out.splitlines()[2:]}
    assert "reserved (VSZ)" in fields and "committed (RSS)" in fields
    assert "committed" not in fields  # never the bare word next to Committed_AS
    assert "promised" in fields["Committed_AS"] and "not RSS" in fields["Committed_AS"]
    assert re.search(r"\d+\.\d\d\b", fields["committed %"])  # 2 decimals
