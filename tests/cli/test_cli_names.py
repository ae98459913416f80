"""Process names are attacker-chosen (issue 16, items 8 and 9): every human-readable
output shows them as ps does, one row per process and nothing a terminal would act on,
JSON and CSV keep them exact, and an output encoding that cannot represent a name (or
the table's own "…" and "─") degrades instead of crashing halfway."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from _support import named_child, run_cli, run_on_pty

# ESC [ 8 m hides what follows; the newline would split the row. 13 bytes: a comm.
EVIL = b"tmx\x1b[8mhid\ncz"
EVIL_SHOWN = "tmx?[8mhid?cz"
# Bytes that are not UTF-8: the backends decode them to U+FFFD, shown as "?".
NOT_UTF8 = b"tmy\xff\xfez"
# Valid UTF-8 that ASCII cannot encode.
ACCENTED = "tmzét".encode()
ASCII_ENVS = [
    pytest.param({"PYTHONIOENCODING": "ascii"}, id="PYTHONIOENCODING=ascii"),
    pytest.param({"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}, id="LC_ALL=C"),
]
# What rich writes around text on a terminal (styles, cursor moves, the live view's
# hiding of the cursor): removed to look at the text. ESC [ 8 m is not among them.
_RICH_ESCAPES = re.compile(r"\x1b\[(?:[0-9;]*[A-HJKSTfhlm]|\?25[hl]|\?[0-9]+[hl])")


def _screen(raw: str) -> list[str]:
    """The lines a terminal would show, without rich's own escapes; raises if an
    escape remains that rich does not write (the name's)."""
    assert "\x1b[8m" not in raw, raw
    text = _RICH_ESCAPES.sub("", raw).replace("\r", "")
    assert "\x1b" not in text, text
    return [line for line in text.split("\n") if line.strip()]


def _no_raw_name(out: str) -> None:
    assert "\x1b" not in out, out
    assert "hid\ncz" not in out


# --- the helper ------------------------------------------------------------------------


def test_visible_replaces_what_a_terminal_would_act_on() -> None:
    from tamalloc.cli.env import visible

    assert visible("bash") == "bash"
    assert visible("a\x1b[31mb\nc\td\x7f") == "a?[31mb?c?d?"
    assert visible("x\u202ey\u2028z\u200b") == "x?y?z?"  # RTL override, separators
    assert visible("bad\ufffd") == "bad?"  # what the backends put for non-UTF-8
    assert visible("café") == "café"
    assert visible("café", "ascii") == "caf?"
    assert visible("café", "latin-1") == "café"


def test_error_lines_stay_one_line() -> None:
    from tamalloc.cli.env import Environment

    env = Environment(stdout=io.StringIO(), stderr=io.StringIO())
    env.error("process 5 (a\x1b[8mb\nc) exited")
    env.warn("x\ny")
    assert isinstance(env.stderr, io.StringIO)
    assert env.stderr.getvalue() == (
        "tamalloc: error: process 5 (a?[8mb?c) exited\ntamalloc: x?y\n"
    )


# --- item 8: one row per process, no escape ----------------------------------------------


def test_stats_table_piped_shows_the_name_as_ps() -> None:
    with named_child(EVIL) as pid:
        result = run_cli("stats", "--name", "tmx", "--backend", "procfs")
        assert result.returncode == 0, result.stderr
        _no_raw_name(result.stdout)
        lines = result.stdout.splitlines()
        assert len(lines) == 4, result.stdout  # header, one row, rule, total
        assert lines[1].split()[:2] == [str(pid), EVIL_SHOWN]


def test_stats_table_on_a_terminal_shows_the_name_as_ps() -> None:
    with named_child(EVIL) as pid:
        lines = _screen(run_on_pty("stats", "--name", "tmx", "--backend", "procfs"))
    assert len(lines) == 4, lines
    assert lines[1].split()[:2] == [str(pid), EVIL_SHOWN]


def test_invalid_utf8_is_shown_as_question_marks() -> None:
    with named_child(NOT_UTF8) as pid:
        table = run_cli("stats", str(pid), "--backend", "procfs")
        data = json.loads(run_cli("stats", str(pid), "--json").stdout)
    assert table.stdout.splitlines()[1].split()[:2] == [str(pid), "tmy??z"]
    assert data[0]["name"] == "tmy\ufffd\ufffdz"  # as the library decodes it


def test_json_and_csv_keep_the_exact_name() -> None:
    with named_child(EVIL) as pid:
        data = json.loads(run_cli("stats", str(pid), "--json").stdout)
        rows = list(csv.reader(io.StringIO(run_cli("stats", str(pid), "--csv").stdout)))
    assert data[0]["name"] == EVIL.decode()
    assert rows[1][1] == EVIL.decode()  # quoted by csv, newline and all


def test_oom_table_and_headline_show_the_name_as_ps() -> None:
    with named_child(EVIL, oom_score_adj=1000) as pid:
        result = run_cli("oom", "--backend", "procfs")
        terminal = _screen(run_on_pty("oom", "--backend", "procfs"))
    assert result.returncode == 0, result.stderr
    _no_raw_name(result.stdout)
    lines = result.stdout.splitlines()
    # The system domain first: its headline names the victim, the table lists it.
    assert f"kills {pid} ({EVIL_SHOWN})" in lines[0]
    rows = [line for line in lines if line.split()[:1] == ["KILL"]]
    assert rows and rows[0].split()[1:3] == [str(pid), EVIL_SHOWN]
    assert any(line.split()[:3] == ["KILL", str(pid), EVIL_SHOWN] for line in terminal)
    assert not any(line.startswith("cz") for line in lines + terminal)


def test_watch_line_and_live_view_show_the_name_as_ps() -> None:
    with named_child(EVIL) as pid:
        piped = run_cli("watch", str(pid), "--count", "1", "--backend", "procfs")
        terminal = _screen(run_on_pty("watch", str(pid), "--count", "1", "--backend", "procfs"))
    assert piped.returncode == 0, piped.stderr
    _no_raw_name(piped.stdout)
    assert len(piped.stdout.splitlines()) == 1
    assert f"pid {pid} {EVIL_SHOWN} " in piped.stdout
    titles = [line for line in terminal if f"pid {pid}" in line]  # a redraw repeats it
    assert titles and all(f"{EVIL_SHOWN} pid {pid}" in title for title in titles), terminal
    assert not any(line.lstrip("│| ").startswith("cz") for line in terminal)


# --- item 9: an output that cannot encode ------------------------------------------------


@pytest.mark.parametrize("env", ASCII_ENVS)
def test_ascii_output_table_and_csv(env: dict[str, str]) -> None:
    with named_child(ACCENTED) as pid:
        table = run_cli("stats", "--name", "tmz", "--backend", "procfs", **env)
        narrow = run_cli("stats", str(pid), "--backend", "procfs", COLUMNS="40", **env)
        piped_csv = run_cli("stats", str(pid), "--csv", "--backend", "procfs", **env)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[1].split()[:2] == [str(pid), "tmz?t"]
    assert "Error" not in table.stderr
    assert narrow.returncode == 0, narrow.stderr
    # The whole CSV, with the one name its encoding cannot hold escaped, and said so.
    assert piped_csv.returncode == 0, piped_csv.stderr
    rows = list(csv.reader(io.StringIO(piped_csv.stdout)))
    assert len(rows) == 2 and rows[1][0] == str(pid)
    assert rows[1][1] == "tmz\\xe9t"
    assert "cannot represent some process names" in piped_csv.stderr


@pytest.mark.parametrize("env", ASCII_ENVS)
def test_ascii_terminal_table_cut_and_rule(env: dict[str, str]) -> None:
    # The table's own "…" (a cut name at 50 columns) and "─" (the rule on a terminal).
    with named_child(b"tmzlongprocname") as pid:
        lines = _screen(run_on_pty("stats", str(pid), "--backend", "procfs", columns=40, **env))
    assert lines[1].split()[1] == "tmz~"
    assert set(lines[2].replace(" ", "")) == {"-"}


@pytest.mark.parametrize("env", ASCII_ENVS)
def test_ascii_output_json_oom_and_watch(env: dict[str, str]) -> None:
    with named_child(ACCENTED, oom_score_adj=1000) as pid:
        data = run_cli("stats", str(pid), "--json", **env)
        oom = run_cli("oom", "--backend", "procfs", **env)
        oom_json = run_cli("oom", "--json", "--backend", "procfs", **env)
        lines = run_cli("watch", str(pid), "--json", "--count", "1", **env)
        terminal = _screen(run_on_pty("watch", str(pid), "--count", "1", **env))
    for result in (data, oom, oom_json, lines):
        assert result.returncode == 0, result.stderr
    assert json.loads(data.stdout)[0]["name"] == "tmzét"
    assert f"kills {pid} (tmz?t)" in oom.stdout
    system = json.loads(oom_json.stdout)[0]
    assert system["victim"]["name"] == "tmzét"
    assert json.loads(lines.stdout)["name"] == "tmzét"
    assert any("tmz?t" in line and f"pid {pid}" in line for line in terminal), terminal
