"""``tamalloc.cli.main.main`` in-process, with swapped streams: error mapping."""

from __future__ import annotations

import argparse
import io
import json
import os

import pytest

import tamalloc.stats
from tamalloc import AccessDenied
from tamalloc.cli.commands import COMMANDS
from tamalloc.cli.main import Environment, ExitStatus, _build_parser, main


def _env(*, tty: bool = False, no_color: bool = False) -> Environment:
    return Environment(
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        stdin=io.StringIO(),
        stdout_isatty=tty,
        no_color=no_color,
    )


def _out(env: Environment) -> str:
    assert isinstance(env.stdout, io.StringIO)
    return env.stdout.getvalue()


def _err(env: Environment) -> str:
    assert isinstance(env.stderr, io.StringIO)
    return env.stderr.getvalue()


def test_output_goes_to_the_environment_streams() -> None:
    env = _env()
    assert main(["stats", str(os.getpid()), "--json", "--backend", "procfs"], env) == 0
    assert json.loads(_out(env))[0]["pid"] == os.getpid()
    assert _err(env) == ""


def test_help_goes_to_the_environment_stdout() -> None:
    env = _env()
    assert main(["stats", "--help"], env) == 0
    assert "--sort" in _out(env)


def test_access_denied_is_status_1(monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(pid: int, **_: object) -> None:
        raise AccessDenied(pid)

    monkeypatch.setattr(tamalloc.stats, "mem_stats", denied)
    env = _env()
    assert main(["stats", "1", "--backend", "procfs"], env) == ExitStatus.ERROR
    assert _err(env) == (
        "tamalloc: error: access denied to process 1 (try as root or as its owner)\n"
    )


def test_unexpected_errors_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(**_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(tamalloc.stats, "all_mem_stats", broken)
    monkeypatch.delenv("TAMALLOC_DEBUG", raising=False)
    env = _env()
    assert main(["stats", "--backend", "procfs"], env) == ExitStatus.ERROR
    assert _err(env).count("\n") == 1
    assert "internal error: RuntimeError: boom" in _err(env)


def test_ctrl_c_outside_watch_is_130(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(**_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tamalloc.stats, "total_mem_stats", interrupted)
    env = _env()
    assert main(["total", "--backend", "procfs"], env) == ExitStatus.INTERRUPTED
    assert _err(env) == "tamalloc: error: interrupted\n"


def test_colour_needs_a_terminal_and_no_no_color() -> None:
    assert _env(tty=True).color
    assert not _env(tty=True, no_color=True).color
    assert not _env(tty=False).color
    assert _env(tty=True, no_color=True).interactive


def test_rich_table_without_colour_has_no_escape_codes() -> None:
    env = _env(tty=True, no_color=True)
    assert main(["stats", str(os.getpid()), "--backend", "procfs"], env) == 0
    assert "\x1b[" not in _out(env)
    assert "TOTAL" in _out(env)


def test_commands_do_not_import_the_entry_point() -> None:
    """No import circle in cli/: main imports the commands, the commands import only
    what they share (cli/env.py), never main."""
    import ast
    from pathlib import Path

    import tamalloc.cli

    cli_dir = Path(tamalloc.cli.__file__).parent
    offenders = []
    for path in sorted(cli_dir.glob("*.py")):
        if path.name == "main.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (
                (node.level == 1 and node.module == "main")
                or (node.module or "").endswith("cli.main")
            ):
                offenders.append(path.name)
    assert offenders == []


def _sub_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return commands.choices[name]  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", COMMANDS)
def test_one_command_s_parser_is_the_whole_parser_s(name: str) -> None:
    """A command line that starts with a command's name is parsed by a parser holding
    that command alone: its sub-parser has the same options, help and usage as in the
    parser with every command, and the top level the same options."""
    whole, alone = _build_parser(), _build_parser(name)
    assert list(_sub_parser(alone, name).format_help().splitlines()) == list(
        _sub_parser(whole, name).format_help().splitlines()
    )
    assert [a.option_strings for a in alone._actions] == [a.option_strings for a in whole._actions]
    assert list(_sub_parser(alone, name)._option_string_actions) == list(
        _sub_parser(whole, name)._option_string_actions
    )


def test_a_command_line_is_parsed_alike_with_one_command_or_all() -> None:
    argv = ["stats", "1", "--sort", "committed", "-r", "--top", "3"]
    whole = _build_parser().parse_args(argv)
    alone = _build_parser("stats").parse_args(argv)
    assert vars(alone) == vars(whole)
    assert vars(alone)["pids"] == [1] and vars(alone)["top"] == 3


@pytest.mark.parametrize("columns", ["50", "72", "200"])
def test_the_deferred_help_formatter_formats_as_argparse_s(
    monkeypatch: pytest.MonkeyPatch, columns: str
) -> None:
    """main's formatter sets itself up when it first formats (so that building the
    parser does not load shutil): every help and usage text is argparse's own, at any
    terminal width."""
    monkeypatch.setenv("COLUMNS", columns)
    parser = _build_parser()
    parsers = [parser, *(_sub_parser(parser, name) for name in COMMANDS)]
    ours = [(p.format_help(), p.format_usage()) for p in parsers]
    for p in parsers:
        p.formatter_class = argparse.HelpFormatter
    assert ours == [(p.format_help(), p.format_usage()) for p in parsers]


_SCRIPT_CHILD = """
import gc, sys, tomllib
from tamalloc.__main__ import run
with open(sys.argv[1], "rb") as f:
    entry = tomllib.load(f)["project"]["scripts"]["tamalloc"]
sys.argv = ["tamalloc", "stats", "1"]
before = gc.get_freeze_count()
status = run()
print(entry, status, gc.isenabled(), gc.get_freeze_count() - before)
"""


def test_the_console_script_keeps_the_collector_out_of_the_start_up() -> None:
    """The command's start-up objects (argparse's, the package's) are frozen, made
    with no collection running; the collector is on for what the command makes."""
    import subprocess
    import sys
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    out = (
        subprocess.run(
            [sys.executable, "-c", _SCRIPT_CHILD, str(pyproject)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        .stdout.splitlines()[-1]
        .split()
    )
    assert out[:3] == ["tamalloc.__main__:run", "0", "True"]
    assert int(out[3]) > 5000  # argparse alone makes thousands
