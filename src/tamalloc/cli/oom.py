"""``tamalloc oom``: who the OOM killer would kill, system-wide and in each cgroup."""

from __future__ import annotations

import argparse
import textwrap
from typing import TYPE_CHECKING, Any

from ..sizes import format_kb
from .commands import DEFAULT_TOP, FORECAST_INTERVAL, FORECAST_WINDOW
from .env import Environment, ExitStatus, UsageError, report_hidden, visible
from .output import (
    Column,
    console,
    format_size,
    render_table,
    size_header,
    write_json,
)

if TYPE_CHECKING:
    from ..forecast import DomainForecast, ForecastVictim
    from ..oom import OomCandidate, OomDomain


def run(args: argparse.Namespace, env: Environment) -> int:
    if args.forecast:
        return _forecast(args, env)
    for option in ("window", "interval"):
        if getattr(args, option, None) is not None:
            raise UsageError(f"--{option} needs --forecast")
    # The OOM model and its inputs: 2-5 ms of every other command's start-up.
    from ..oom import predict_oom

    backend = getattr(args, "backend", None)
    domains = predict_oom(cgroup=args.cgroup, backend=backend)
    # The victim may be among the processes hidden from the caller: never let a
    # prediction from a partial list pass for complete.
    system = [d for d in domains if d.kind == "system"]
    if system:
        report_hidden(env, backend, len(system[0].candidates))
    if args.json:
        write_json(env, [_json_domain(d, args.top) for d in domains])
        return ExitStatus.SUCCESS
    top = DEFAULT_TOP if args.top is None else args.top
    for i, domain in enumerate(domains):
        if i:
            env.stdout.write("\n")
        _table(env, domain, top, args.units)
    return ExitStatus.SUCCESS


def _shown(domain: OomDomain, top: int) -> list[OomCandidate]:
    """The first ``top`` candidates, and whoever dies even below the cut: the list
    answers "who goes"."""
    shown = list(domain.candidates[:top])
    shown += [c for c in domain.candidates[top:] if c.pid in domain.killed_pids]
    return shown


def _json_domain(domain: OomDomain, top: int | None) -> dict[str, Any]:
    """A domain as docs/oom.schema.json describes it: every candidate, or with --top
    the same cut as the table, ``more_candidates`` saying how many were left out."""
    data = domain.to_dict()
    if top is not None:
        shown = _shown(domain, top)
        data["candidates"] = [c.to_dict() for c in shown]
        data["more_candidates"] = len(domain.candidates) - len(shown)
    else:
        data["more_candidates"] = 0
    return data


def _headline(domain: OomDomain, units: str) -> str:
    where = "system" if domain.cgroup is None else f"cgroup {domain.cgroup}"
    limit = "RAM + swap" if domain.cgroup is None else "memory.max, plus swap if any"
    if domain.kill_group is not None:
        dies = (
            f"whole group {domain.kill_group} (memory.oom.group):"
            f" {len(domain.killed_pids)} process{'es' if len(domain.killed_pids) != 1 else ''}"
        )
    elif domain.victim is not None:
        dies = f"{domain.victim.pid} ({domain.victim.name})"
    else:
        dies = "nobody"
    headline = (
        f"OOM in {where}: kills {dies}; limit {format_size(domain.limit_kb, units)}"
        f" ({limit}), used {format_size(domain.usage_kb, units)},"
        f" headroom {format_size(domain.headroom_kb, units)}"
    )
    if domain.bound_by is not None and domain.bound_by != domain.cgroup:
        # The room is an ancestor's: its OOM comes first, and kills by its own table.
        headline += f" (bound by {domain.bound_by}, whose OOM comes first)"
    return headline


def _fate(c: OomCandidate, domain: OomDomain) -> str:
    # Short words first: on a narrow terminal this column is cut to four characters.
    if c.unkillable:
        return f"safe: {c.unkillable}"
    if domain.victim is not None and c.pid == domain.victim.pid:
        return "KILL"
    if c.pid in domain.killed_pids:
        return "KILL (group)"
    return ""


def _table(env: Environment, domain: OomDomain, top: int, units: str) -> None:
    page_kb = domain.limit_kb // domain.total_pages if domain.total_pages else 4
    shown = _shown(domain, top)
    columns = (
        Column("FATE", numeric=False),
        Column("PID"),
        Column("NAME", numeric=False),
        Column("CGROUP", numeric=False),
        Column("POINTS"),
        Column("SCORE"),
        Column(size_header("RSS", units)),
        Column(size_header("SWAP", units)),
        Column(size_header("PGTABLES", units), short=size_header("PGT", units)),
        Column("ADJ (pages)", short="ADJ"),
        Column("OOM ADJ", short="OADJ"),
    )

    def size(pages: int) -> str:
        return format_kb(pages * page_kb, units)

    rows = [
        [
            _fate(c, domain),
            str(c.pid),
            c.name,
            c.cgroup or "-",
            "-" if c.points is None else str(c.points),
            str(c.score),
            size(c.rss_pages),
            size(c.swap_pages),
            size(c.pgtables_pages),
            str(c.adj_pages),
            str(c.oom_score_adj),
        ]
        for c in shown
    ]
    styles: list[str | None] | None = None
    if env.color:
        styles = [
            "bold red" if c.pid in domain.killed_pids else "dim" if c.unkillable else None
            for c in shown
        ]
    width = console(env).width if env.interactive else env.width
    # The headline and the notes are prose, not table cells: wrapped at the width
    # rather than cut, since their ends (who dies, why) matter most.
    _prose(env, _headline(domain, units), width, indent="  ")
    env.stdout.flush()
    render_table(env, columns, rows, styles=styles)
    notes = list(domain.notes)
    hidden = len(domain.candidates) - len(shown)
    if hidden > 0:
        notes.append(f"{hidden} more candidate{'s' if hidden != 1 else ''} (--top)")
    for note in notes:
        _prose(env, f"note: {note}", width, indent="      ")


def _prose(env: Environment, text: str, width: int | None, *, indent: str) -> None:
    # The headline names the victim and its cgroup, both chosen by whoever runs it.
    text = visible(text, env.encoding)
    lines = textwrap.wrap(text, width, subsequent_indent=indent) if width else [text]
    env.stdout.write("\n".join(lines) + "\n")


def _forecast(args: argparse.Namespace, env: Environment) -> int:
    # The forecast model: as the OOM model, loaded by this command only.
    from ..forecast import check_timing, sample_and_forecast

    window = FORECAST_WINDOW if args.window is None else args.window
    interval = FORECAST_INTERVAL if args.interval is None else args.interval
    if args.top is not None:
        raise UsageError("--top has no effect with --forecast")
    try:
        check_timing(window, interval)
    except ValueError as err:
        raise UsageError(str(err)) from None
    backend = getattr(args, "backend", None)
    if env.interactive:
        env.warn(f"sampling for {window:g} s, every {interval:g} s")
    forecasts = sample_and_forecast(window, interval, cgroup=args.cgroup, backend=backend)
    system = [f for f in forecasts if f.domain is None]
    if system:
        report_hidden(env, backend, system[0].candidates)
    if args.json:
        write_json(env, [f.to_dict() for f in forecasts])
        return ExitStatus.SUCCESS
    columns = (
        Column("DOMAIN", numeric=False),
        Column(size_header("LIMIT", args.units)),
        Column(size_header("HEADROOM", args.units), short=size_header("ROOM", args.units)),
        Column(size_header("GROWTH/s", args.units), short="GROW"),
        Column("OOM IN", numeric=False),
        Column("90% INTERVAL", numeric=False, short="90%"),
        Column("CONFIDENCE", numeric=False, short="CONF"),
        Column("VICTIM NOW", numeric=False, short="NOW"),
        Column("VICTIM AT OOM", numeric=False, short="AT OOM"),
    )
    rows = [
        [
            "system" if f.domain is None else f.domain,
            format_kb(f.limit_kb, args.units),
            format_kb(f.headroom_kb, args.units),
            "-" if f.growth_kb_per_s is None else format_kb(round(f.growth_kb_per_s), args.units),
            "not growing" if f.seconds_to_oom is None else _duration(f.seconds_to_oom),
            _interval(f),
            f.confidence,
            _who(f.victim_now),
            _who(f.victim_at_oom),
        ]
        for f in forecasts
    ]
    render_table(env, columns, rows)
    width = console(env).width if env.interactive else env.width
    spans = sorted({round(f.span_s, 1) for f in forecasts})
    counts = sorted({f.samples for f in forecasts})
    _prose(
        env,
        f"note: {'/'.join(map(str, counts))} samples over"
        f" {'/'.join(f'{s:g}' for s in spans)} s; OOM IN counts from the last sample",
        width,
        indent="      ",
    )
    for f in forecasts:
        where = "system" if f.domain is None else f.domain
        for note in f.notes:
            _prose(env, f"note: {where}: {note}", width, indent="      ")
    return ExitStatus.SUCCESS


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _interval(f: DomainForecast) -> str:
    if f.seconds_to_oom is None or f.seconds_low is None:
        return "-"
    high = "never" if f.seconds_high is None else _duration(f.seconds_high)
    return f"{_duration(f.seconds_low)} - {high}"


def _who(victim: ForecastVictim | None) -> str:
    return "-" if victim is None else f"{victim.pid} ({victim.name})"
