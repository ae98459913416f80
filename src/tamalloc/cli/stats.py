"""``tamalloc stats [PID ...]``: reserved and committed memory per process."""

from __future__ import annotations

import argparse
import os

from .. import stats as api
from ..backends import get_backend
from ..errors import AccessDenied, NoSuchProcess
from ..models import FIELD_NAMES, MemStats, committed_pct
from ..process_visibility import kernel_hidden_pid_hint, procfs_visibility
from ..sizes import format_kb
from .commands import SORT_KEYS
from .env import Environment, ExitStatus, cannot_encode, report_hidden
from .output import (
    Column,
    format_pct,
    render_table,
    size_header,
    write_json,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def _collect(args: argparse.Namespace, env: Environment) -> tuple[list[MemStats], bool]:
    backend = getattr(args, "backend", None)
    if not args.pids or 0 in args.pids:
        rows = api.all_mem_stats(backend=backend)
        report_hidden(env, backend, len(rows))
        return rows, True
    found, ok = [], True
    for pid in dict.fromkeys(args.pids):  # keep order, drop repeats
        try:
            found.append(api.mem_stats(pid, backend=backend))
        except NoSuchProcess as err:
            hidden = _hidden_by_proc(pid, backend)
            if hidden is not None:
                env.error(f"process {pid} is hidden from you: {hidden}")
            else:
                hint = _hidden_hint(pid, backend)
                env.error(f"{err}: {hint}" if hint else str(err))
            ok = False
    return found, ok


def _hidden_hint(pid: int, backend: str | None) -> str | None:
    """On the kernel backend "no such process" may mean "not yours to see"."""
    return kernel_hidden_pid_hint(pid) if get_backend(backend).name == "kernel" else None


def _hidden_by_proc(pid: int, backend: str | None) -> str | None:
    """Why /proc does not show ``pid`` though it exists (hidepid=2 or invisible makes
    another user's /proc/PID absent, ENOENT as for no process at all); None when it
    does not exist or /proc does show it. kill(pid, 0) tells: EPERM is a process that
    exists and is not ours to signal, ESRCH none. It asks in this process's pid
    namespace, which is /proc's unless /proc was mounted from another."""
    if get_backend(backend).name != "procfs" or os.path.exists(f"/proc/{pid}"):
        return None
    try:
        os.kill(pid, 0)
    except PermissionError:
        reason = procfs_visibility().reason
        return reason or "it exists, but /proc does not show it"
    except OSError:
        pass
    return None  # gone, or ours (then it was gone when /proc was read: a new one)


def _filter(rows: list[MemStats], args: argparse.Namespace) -> list[MemStats]:
    if args.name:
        needle = args.name.casefold()
        rows = [r for r in rows if needle in r.name.casefold()]
    if args.user is not None:
        rows = [r for r in rows if _uid_of(r.pid) == args.user]
    field, descending = SORT_KEYS[args.sort or ("oom_score" if args.top else "pid")]
    # Most processes share an OOM score (666 when idle): the larger resident memory
    # ranks first among equals, as the OOM killer's badness would, then the lower pid.
    key: Callable[[MemStats], Any]
    if field == "name":
        key = lambda r: (r.name.casefold(), r.pid)  # noqa: E731
    elif field == "pid":
        key = lambda r: r.pid  # noqa: E731
    elif descending:
        key = lambda r: (getattr(r, field), r.committed_kb, -r.pid)  # noqa: E731
    else:
        key = lambda r: (getattr(r, field), -r.committed_kb, r.pid)  # noqa: E731
    rows = sorted(rows, key=key, reverse=descending != args.reverse)
    return rows[: args.top] if args.top else rows


def _uid_of(pid: int) -> int | None:
    # The procfs backend's module (its C scan, re) is not loaded on the kernel backend
    # unless --user asks: ~2 ms of the start-up of every command.
    from ..backends.procfs import process_uid

    try:
        return process_uid(pid)
    except (NoSuchProcess, AccessDenied):
        return None


def risk_style(oom_score: int, oom_score_adj: int) -> str | None:
    """Row colour by how likely the OOM killer is to pick the process.

    Since Linux 5.9 /proc/PID/oom_score is (1000 + badness) * 2/3 with badness in
    per-mille of RAM + swap plus the adj, so an idle process with adj 0 scores 666.
    """
    if oom_score_adj == -1000 or oom_score == 0:
        return "dim"  # exempt from the OOM killer
    if oom_score >= 1000:  # half of memory, or pushed up by oom_score_adj
        return "bold red"
    if oom_score >= 800:  # a fifth of memory
        return "yellow"
    return None


def run(args: argparse.Namespace, env: Environment) -> int:
    rows, ok = _collect(args, env)
    rows = _filter(rows, args)
    if not ok and not rows:
        return ExitStatus.ERROR  # every PID asked for is missing: the errors say it all
    if args.json:
        write_json(env, [r.to_dict() for r in rows])
    elif args.csv:
        _csv(env, rows, args.units)
    else:
        _table(env, rows, args.units)
    return ExitStatus.SUCCESS if ok else ExitStatus.ERROR


def _csv(env: Environment, rows: list[MemStats], units: str) -> None:
    """Plain numbers: kB as the API gives them, or MiB (2 decimals) with --units mb."""

    def cell(row: MemStats, name: str) -> object:
        value = getattr(row, name)
        if name == "committed_pct":
            return format_pct(value)
        if mib and name.endswith("_kb"):
            return f"{value / 1024:.2f}"
        return value

    import csv  # ~1 ms of every start-up, for --csv only

    mib = units == "mb"
    # The names are written exactly where the output can encode them; where it cannot
    # (PYTHONIOENCODING=ascii), as backslash escapes (main's tolerate_encoding), which
    # is said once rather than left to be found.
    if any(cannot_encode(r.name, env.encoding) for r in rows):
        env.warn(
            f"the output's encoding ({env.encoding}) cannot represent some process"
            " names: written with backslash escapes (set PYTHONIOENCODING=utf-8, or"
            " use --json, for the exact names)"
        )
    header = [f"{n[:-3]}_mib" if mib and n.endswith("_kb") else n for n in FIELD_NAMES]
    writer = csv.writer(env.stdout, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([cell(r, n) for n in FIELD_NAMES] for r in rows)


def _table(env: Environment, rows: list[MemStats], units: str) -> None:
    columns = (
        Column("PID"),
        Column("NAME", numeric=False),
        Column(size_header("RESERVED", units, "VSZ"), short=size_header("VSZ", units)),
        Column(size_header("COMMITTED", units, "RSS"), short=size_header("RSS", units)),
        Column("COMMIT %", short="%"),
        Column(size_header("SWAP", units)),
        Column("OOM SCORE", short="OOM"),
        Column("OOM ADJ", short="ADJ"),
    )
    cells = [
        [
            str(r.pid),
            r.name,
            format_kb(r.reserved_kb, units),
            format_kb(r.committed_kb, units),
            format_pct(r.committed_pct),
            format_kb(r.swap_kb, units),
            str(r.oom_score),
            str(r.oom_score_adj),
        ]
        for r in rows
    ]
    reserved = sum(r.reserved_kb for r in rows)
    committed = sum(r.committed_kb for r in rows)
    footer = [
        "TOTAL",
        f"{len(rows)} process{'es' if len(rows) != 1 else ''}",
        format_kb(reserved, units),
        format_kb(committed, units),
        format_pct(committed_pct(committed, reserved)),
        format_kb(sum(r.swap_kb for r in rows), units),
        "",
        "",
    ]
    styles = [risk_style(r.oom_score, r.oom_score_adj) for r in rows] if env.color else None
    render_table(env, columns, cells, footer=footer, styles=styles)
