"""``tamalloc stats`` run as ``python -m tamalloc`` in a subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import pwd
import re
import subprocess
import sys

from _support import (
    Child,
    assert_rss_kb,
    read_int,
    run_as_nobody_under_hidepid,
    run_cli,
    run_on_pty,
    status_kb,
    subprocess_env,
)
from tamalloc.models import FIELD_NAMES

# --- stats ---------------------------------------------------------------------------


def test_stats_json_lists_every_process(backend: str, child: Child) -> None:
    result = run_cli("stats", "--json", "--backend", backend)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    assert all(tuple(row) == FIELD_NAMES for row in rows)
    pids = [row["pid"] for row in rows]
    assert pids == sorted(pids)
    mine = next(row for row in rows if row["pid"] == child.pid)
    assert mine["reserved_kb"] == status_kb(child.pid)["VmSize"]
    assert_rss_kb(mine["committed_kb"], status_kb(child.pid)["VmRSS"], backend, counters=3)


def test_stats_of_given_pids(backend: str, child: Child) -> None:
    result = run_cli("stats", str(child.pid), str(child.pid), "--json", "--backend", backend)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["pid"] == child.pid
    assert row["oom_score"] == read_int(f"/proc/{child.pid}/oom_score")
    assert_rss_kb(row["swap_kb"], status_kb(child.pid)["VmSwap"], backend)


def test_stats_zero_means_all(child: Child) -> None:
    rows = json.loads(run_cli("stats", "0", "--json").stdout)
    assert len(rows) > 1
    assert child.pid in {row["pid"] for row in rows}


def test_stats_csv(child: Child) -> None:
    result = run_cli("stats", "--csv")
    assert result.returncode == 0
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert tuple(rows[0]) == FIELD_NAMES
    by_pid = {int(row[0]): row for row in rows[1:]}
    assert int(by_pid[child.pid][2]) == status_kb(child.pid)["VmSize"]
    pct = by_pid[child.pid][FIELD_NAMES.index("committed_pct")]
    assert len(pct.split(".")[1]) == 2  # not 31.261068133097215
    for units in ("kb", "auto"):  # kB is the CSV's own unit; auto means it too
        assert run_cli("stats", "--csv", "--units", units).stdout.splitlines()[0] == (
            ",".join(FIELD_NAMES)
        )


def test_stats_csv_honours_units_mb(child: Child) -> None:
    result = run_cli("stats", str(child.pid), "--csv", "--units", "mb")
    assert result.returncode == 0, result.stderr
    header, row = list(csv.reader(io.StringIO(result.stdout)))
    assert header[:4] == ["pid", "name", "reserved_mib", "committed_mib"]
    assert "swap_mib" in header and not any(h.endswith("_kb") for h in header)
    reserved_mib = float(row[2])
    assert abs(reserved_mib - status_kb(child.pid)["VmSize"] / 1024) < 0.01
    assert len(row[2].split(".")[1]) == 2


def test_stats_json_numbers_are_plain(child: Child) -> None:
    (row,) = json.loads(run_cli("stats", str(child.pid), "--json", "--units", "kb").stdout)
    assert isinstance(row["reserved_kb"], int)
    assert isinstance(row["committed_pct"], float)


def test_stats_sort_top_and_name(child: Child) -> None:
    rows = json.loads(run_cli("stats", "--sort", "committed", "--top", "3", "--json").stdout)
    assert 1 <= len(rows) <= 3
    committed = [row["committed_kb"] for row in rows]
    assert committed == sorted(committed, reverse=True)
    rows = json.loads(run_cli("stats", "--sort", "pid", "--reverse", "--json").stdout)
    assert [r["pid"] for r in rows] == sorted((r["pid"] for r in rows), reverse=True)
    name = json.loads(run_cli("stats", str(child.pid), "--json").stdout)[0]["name"]
    rows = json.loads(run_cli("stats", "--name", name[1:].upper(), "--json").stdout)
    assert child.pid in {row["pid"] for row in rows}
    assert all(name[1:].lower() in row["name"].lower() for row in rows)


def test_stats_user_filter(child: Child) -> None:
    me = pwd.getpwuid(os.geteuid()).pw_name
    rows = json.loads(run_cli("stats", "--user", me, "--json").stdout)
    assert child.pid in {row["pid"] for row in rows}
    by_uid = json.loads(run_cli("stats", "--user", str(os.geteuid()), "--json").stdout)
    assert child.pid in {row["pid"] for row in by_uid}
    other = next((u for u in pwd.getpwall() if u.pw_uid not in (os.geteuid(),)), None)
    if other is not None:
        rows = json.loads(run_cli("stats", "--user", other.pw_name, "--json").stdout)
        assert child.pid not in {row["pid"] for row in rows}


def test_stats_table_is_plain_when_piped(child: Child) -> None:
    result = run_cli("stats", str(child.pid), "--units", "kb")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    header = lines[0].split()
    assert header[:2] == ["PID", "NAME"]
    for title in (
        "RESERVED (VSZ, kB)",
        "COMMITTED (RSS, kB)",
        "COMMIT %",
        "SWAP (kB)",
        "OOM SCORE",
        "OOM ADJ",
    ):
        assert title in lines[0]
    cells = lines[1].split()
    assert cells[0] == str(child.pid)
    # Plain numbers, no thousands separators: sort -n and awk read them.
    assert cells[2] == str(status_kb(child.pid)["VmSize"])
    assert "," not in lines[1]
    assert len(cells[4].split(".")[1]) == 2  # COMMIT % to 2 decimals
    assert lines[-1].startswith("TOTAL")
    assert "\x1b[" not in result.stdout


def test_stats_colour_on_a_terminal_unless_no_color(spawn_child: object) -> None:
    # oom_score_adj 1000 puts any process in the highest risk band.
    child = spawn_child(reserve=1 << 20, touch=0)  # type: ignore[operator]
    with open(f"/proc/{child.pid}/oom_score_adj", "w") as f:
        f.write("1000")
    coloured = run_on_pty("stats", str(child.pid))
    assert "\x1b[" in coloured and "31m" in coloured  # red
    assert "TOTAL" in coloured
    plain = run_on_pty("stats", str(child.pid), NO_COLOR="1")
    assert "\x1b[" not in plain
    assert str(child.pid) in plain


def test_stats_json_does_not_import_rich() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tamalloc", "stats", "--json"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )
    assert result.returncode == 0
    assert "| rich" not in result.stderr
    # Whatever module imports it, at whatever depth of the import tree.
    assert re.search(r"\|\s+tamalloc\.cli\.stats$", result.stderr, re.MULTILINE)


_HIDEPID_IMPORTS = """
import encodings.ascii, io, json, os
import tamalloc, tamalloc.backends.procfs, tamalloc.cli.main, tamalloc.process_visibility
from tamalloc.cli import stats
from tamalloc.cli.env import Environment
tamalloc.cli.main._build_parser()
"""
_HIDEPID_BODY = """
out = {}
for pid in (1, int(os.environ["FREE_PID"])):
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), stdout_isatty=False)
    status = tamalloc.cli.main.main(["stats", str(pid), "--backend", "procfs"], env)
    out[str(pid)] = [status, env.stderr.getvalue()]
print(json.dumps(out))
"""


def test_a_process_hidden_by_hidepid_is_called_hidden() -> None:
    # issue 16, item 11: under hidepid=2 `stats 1` said "no such process".
    gone = subprocess.Popen(["true"])
    gone.wait()  # reaped: its pid names no process, for the contrast
    seen = run_as_nobody_under_hidepid(_HIDEPID_IMPORTS, _HIDEPID_BODY, FREE_PID=str(gone.pid))
    status, stderr = seen["1"]
    assert status == 1
    assert stderr.startswith(
        "tamalloc: error: process 1 is hidden from you: /proc is mounted hidepid="
    ), stderr
    assert "no such process" not in stderr
    status, stderr = seen[str(gone.pid)]
    assert status == 1 and stderr == f"tamalloc: error: no such process: {gone.pid}\n"
