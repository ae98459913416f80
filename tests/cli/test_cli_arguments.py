"""The smaller CLI defects of issue 16, item 11: layout at 80 columns, help texts,
where a usage error points, units in watch, --top 0, the interval floor, digits of
other scripts, and demo's refusal of a buffer larger than the available memory."""

from __future__ import annotations

import io
import re

import pytest

from _support import assert_clean_error, meminfo_kb, named_child, run_cli, run_on_pty


def _run(*args: str) -> tuple[int, str, str]:
    from tamalloc.cli.main import Environment, main

    env = Environment(
        stdout=io.StringIO(), stderr=io.StringIO(), stdin=io.StringIO(), stdout_isatty=False
    )
    status = main(list(args), env)
    assert isinstance(env.stdout, io.StringIO) and isinstance(env.stderr, io.StringIO)
    return status, env.stdout.getvalue(), env.stderr.getvalue()


# --- layout ------------------------------------------------------------------------------


def test_80_columns_shorten_headers_before_names() -> None:
    # A comm is at most 15 characters: at 80 columns, with the short headers, it fits
    # whole; the old layout cut it to "tam…" and kept "RESERVED (VSZ)".
    with named_child(b"tamalloc-sample") as pid:
        text = run_on_pty("stats", str(pid), "--backend", "procfs", columns=80)
    lines = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "").splitlines()
    assert max(map(len, lines)) <= 80
    assert lines[1].split()[:2] == [str(pid), "tamalloc-sample"]
    # The rightmost headers gave up their letters first; there was room for the rest.
    assert lines[0].split()[-2:] == ["OOM", "ADJ"]
    assert "RESERVED (VSZ)" in lines[0]


# --- help texts --------------------------------------------------------------------------


def test_system_help_prints_one_percent_sign() -> None:
    _, out, _ = _run("system", "--help")
    assert "%%" not in out
    assert "used % as df" in " ".join(out.split())


@pytest.mark.parametrize("command", ["total", "system", "oom", "watch"])
def test_units_help_mentions_csv_only_where_there_is_csv(command: str) -> None:
    _, out, _ = _run(command, "--help")
    assert "--csv" not in out


def test_stats_units_help_mentions_csv() -> None:
    _, out, _ = _run("stats", "--help")
    assert "--csv: kb (the default) or mb columns" in " ".join(out.split())


@pytest.mark.parametrize(
    ("args", "where"),
    [
        (("stats", "--bogus"), "tamalloc stats --help"),
        (("oom", "--json", "extra"), "tamalloc oom --help"),
        (("watch", "1", "2"), "tamalloc watch --help"),
        (("--bogus", "stats"), "tamalloc --help"),  # before the command: the top's
        (("stats", "--top", "x"), "tamalloc stats --help"),
    ],
)
def test_usage_errors_point_to_the_right_help(args: tuple[str, ...], where: str) -> None:
    line = assert_clean_error(run_cli(*args), 2)
    assert line.endswith(f"(see '{where}')"), line


# --- watch's units -----------------------------------------------------------------------


@pytest.mark.parametrize(("units", "suffix"), [("mb", " MiB"), ("kb", " kB")])
def test_watch_keeps_the_units(units: str, suffix: str) -> None:
    with named_child(b"tm-units") as pid:
        result = run_cli("watch", str(pid), "--count", "1", "--units", units)
        terminal = run_on_pty("watch", str(pid), "--count", "1", "--units", units)
    assert result.returncode == 0, result.stderr
    assert re.search(rf"reserved \(VSZ\) \d+(\.\d+)?{suffix} ", result.stdout), result.stdout
    assert re.search(rf"swap \d+(\.\d+)?{suffix} ", result.stdout), result.stdout
    assert re.search(rf"\d{suffix} ", terminal), terminal


# --- --top and intervals -----------------------------------------------------------------


@pytest.mark.parametrize("command", ["stats", "oom", "exporter"])
def test_top_zero_is_refused_alike(command: str) -> None:
    line = assert_clean_error(run_cli(command, "--top", "0"), 2)
    assert "must be a positive integer, not '0'" in line


@pytest.mark.parametrize(
    "args",
    [
        ("watch", "1", "--interval", "1e-9"),
        ("watch", "1", "--interval", "0.05"),
        ("system", "--interval", "1e-9"),
        ("system", "--interval", "0.099"),
    ],
)
def test_intervals_below_the_floor_are_refused(args: tuple[str, ...]) -> None:
    line = assert_clean_error(run_cli(*args), 2)
    assert "must be at least 0.1 seconds" in line


def test_a_huge_history_is_a_usage_error() -> None:
    # 10**20 samples overflowed the deque: "internal error: OverflowError".
    line = assert_clean_error(run_cli("watch", "1", "--history", "1" + "0" * 20), 2)
    assert "must be at most 1000" in line


def test_the_interval_floor_itself_is_accepted() -> None:
    result = run_cli("system", "--interval", "0.1", "--json")
    assert result.returncode == 0, result.stderr
    assert '"interval_s": 0.1' in result.stdout


# --- digits of other scripts -------------------------------------------------------------

ARABIC_100 = "\u0661\u0660\u0660"  # what int() reads as 100


@pytest.mark.parametrize(
    "args",
    [
        ("stats", ARABIC_100),
        ("stats", "--top", ARABIC_100),
        ("oom", "--top", "\u0663"),
        ("watch", ARABIC_100),
        ("watch", "1", "--count", "\u0663"),
        ("watch", "1", "--interval", "\u0661.\u0665"),
        ("system", "--interval", "\u0661"),
        ("demo", "--size", f"{ARABIC_100}M"),
        ("exporter", "--top", "\u0663"),
        ("exporter", "--oom", "--oom-domains", "\u0663"),
        ("exporter", "--listen", f"127.0.0.1:{ARABIC_100}"),
        ("stats", "1_0"),  # int() takes underscores too
        ("watch", "1", "--interval", "nan"),
        ("watch", "1", "--interval", "infinity"),
    ],
)
def test_only_ascii_digits_are_numbers(args: tuple[str, ...]) -> None:
    assert_clean_error(run_cli(*args), 2)


def test_user_in_other_digits_is_a_name_not_a_uid() -> None:
    line = assert_clean_error(run_cli("stats", "--user", ARABIC_100), 2)
    assert "no such user" in line


def test_superscript_user_is_a_clean_error() -> None:
    # "²".isdigit() is true and int("²") raised ValueError: argparse's generic message
    # at best; it is a name like any other now.
    line = assert_clean_error(run_cli("stats", "--user", "\u00b2"), 2)
    assert "no such user" in line


# --- demo's size -------------------------------------------------------------------------


def test_demo_refuses_more_than_the_available_memory() -> None:
    size = f"{2 * meminfo_kb()['MemAvailable']}k"
    line = assert_clean_error(run_cli("demo", "--size", size), 2)
    assert "more than the memory available now" in line and "--force" in line


def test_demo_help_says_what_force_risks() -> None:
    _, out, _ = _run("demo", "--help")
    text = " ".join(out.split())
    assert "--force" in text and "MAP_NORESERVE" in text and "OOM killer" in text
