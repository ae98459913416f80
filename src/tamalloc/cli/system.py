"""``tamalloc system``: memory, CPU and disk of the whole system."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ..models import cpu_to_dict
from ..system import cpu_sample, system_stats
from .env import MIN_INTERVAL, Environment, ExitStatus, interval_or_zero
from .output import (
    Column,
    add_units_argument,
    format_pct,
    format_size,
    render_pairs,
    render_table,
    write_json,
)

if TYPE_CHECKING:
    from ..models import CpuStats

_CPU_SHOWN = ("user", "system", "idle", "iowait")


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "system",
        parents=[common],
        help="system memory, CPU and disk",
        description="Memory total/used/free/available, swap, CPU use over an interval"
        " (as top) and CPU time shares since boot (all CPUs and each CPU), and disk usage"
        " (used % as df computes it). Read from /proc/system_stats when the module is"
        " loaded, else from /proc/meminfo, /proc/stat and statvfs; swap always from"
        " /proc/meminfo.",
    )
    p.add_argument("--path", default="/", help="filesystem to report (default /)")
    p.add_argument("--interval", type=interval_or_zero, default=0.5, metavar="SECONDS",
                   help=f"sample CPU use over SECONDS, at least {MIN_INTERVAL:g}, as top"
                   " does (default 0.5; 0: since boot only)")
    add_units_argument(p, csv=False)
    p.add_argument("--json", action="store_true", help="JSON object with the API's keys")
    # No backend is used, but a bad --backend/$TAMALLOC_BACKEND is still an error.
    p.set_defaults(run=run, needs_backend=False)


def run(args: argparse.Namespace, env: Environment) -> int:
    stats = system_stats(args.path)
    sampled: CpuStats | None = cpu_sample(args.interval) if args.interval else None
    if args.json:
        data = stats.to_dict()
        if sampled is not None:
            data["cpu_sampled"] = {"interval_s": args.interval, **cpu_to_dict(sampled)}
        write_json(env, data)
        return ExitStatus.SUCCESS

    def size(kb: int) -> str:
        return format_size(kb, args.units)

    mem, disk = stats.memory, stats.disk
    pairs = [
        ("total", size(mem.total_kb)),
        ("used", size(mem.used_kb)),
        ("free", size(mem.free_kb)),
        ("available", size(mem.available_kb)),
    ]
    if stats.swap is not None:
        pairs += [
            ("swap total", size(stats.swap.total_kb)),
            ("swap used", size(stats.swap.used_kb)),
            ("swap free", size(stats.swap.free_kb)),
        ]
    render_pairs(env, pairs, title=f"Memory (source: {stats.source})")
    if sampled is not None:
        env.stdout.write("\n")
        _cpu_table(env, sampled, f"CPU use over {args.interval:g} s")
    env.stdout.write("\n")
    _cpu_table(env, stats.cpu, "CPU time since boot")
    env.stdout.write("\n")
    render_pairs(
        env,
        [
            ("total", size(disk.total_kb)),
            ("free", size(disk.free_kb)),
            ("available", size(disk.available_kb)),
            ("used", f"{format_pct(disk.used_pct)} %"),
        ],
        title=f"Disk {disk.path} (used %: used / (used + available), as df)",
    )
    return ExitStatus.SUCCESS


def _cpu_table(env: Environment, cpu: CpuStats, title: str) -> None:
    render_table(
        env,
        (Column("CPU", numeric=False), *(Column(f"{name.upper()} %") for name in _CPU_SHOWN)),
        [
            [label, *(format_pct(times.pct(name)) for name in _CPU_SHOWN)]
            for label, times in (
                ("all", cpu.total),
                *((f"cpu{c.cpu}", c) for c in cpu.per_cpu),
            )
        ],
        title=title,
    )
