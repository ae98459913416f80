"""``tamalloc system``: memory, CPU and disk of the whole system."""

from __future__ import annotations

import argparse
from typing import Any

from .env import Environment, ExitStatus
from .output import (
    Column,
    add_units_argument,
    format_pct,
    format_size,
    render_pairs,
    render_table,
    write_json,
)

_CPU_SHOWN = ("user", "system", "idle", "iowait")


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "system",
        parents=[common],
        help="system memory, CPU and disk",
        description="Memory total/used/free/available, CPU time shares since boot (all"
        " CPUs and each CPU) and disk usage. Read from /proc/system_stats when the"
        " module is loaded, else from /proc/meminfo, /proc/stat and statvfs.",
    )
    p.add_argument("--path", default="/", help="filesystem to report (default /)")
    add_units_argument(p)
    p.add_argument("--json", action="store_true", help="JSON object with the API's keys")
    p.set_defaults(run=run, needs_backend=False)


def run(args: argparse.Namespace, env: Environment) -> int:
    from ..system import system_stats

    stats = system_stats(args.path)
    if args.json:
        write_json(env, stats.to_dict())
        return ExitStatus.SUCCESS

    def size(kb: int) -> str:
        return format_size(kb, args.units)

    mem, disk = stats.memory, stats.disk
    render_pairs(
        env,
        [
            ("total", size(mem.total_kb)),
            ("used", size(mem.used_kb)),
            ("free", size(mem.free_kb)),
            ("available", size(mem.available_kb)),
        ],
        title=f"Memory (source: {stats.source})",
    )
    env.stdout.write("\n")
    render_table(
        env,
        (Column("CPU", numeric=False), *(Column(f"{name.upper()} %") for name in _CPU_SHOWN)),
        [
            [label, *(format_pct(times.pct(name)) for name in _CPU_SHOWN)]
            for label, times in (
                ("all", stats.cpu.total),
                *((f"cpu{c.cpu}", c) for c in stats.cpu.per_cpu),
            )
        ],
        title="CPU time since boot",
    )
    env.stdout.write("\n")
    render_pairs(
        env,
        [
            ("total", size(disk.total_kb)),
            ("free", size(disk.free_kb)),
            ("available", size(disk.available_kb)),
            ("used", f"{format_pct(disk.used_pct)} %"),
        ],
        title=f"Disk {disk.path}",
    )
    return ExitStatus.SUCCESS
