"""``tamalloc system``: memory, CPU and disk of the whole system."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ..system import cpu_sample, system_stats
from ..system_models import cpu_to_dict
from .env import Environment, ExitStatus
from .output import (
    Column,
    format_pct,
    format_size,
    render_pairs,
    render_table,
    write_json,
)

if TYPE_CHECKING:
    from ..system_models import CpuStats

_CPU_SHOWN = ("user", "system", "idle", "iowait")


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
