"""``tamalloc total``: memory summed over every process, and commit accounting."""

from __future__ import annotations

import argparse
from typing import Any

from ..models import committed_pct
from .env import Environment, ExitStatus
from .output import add_units_argument, format_size, render_pairs, write_json


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "total",
        parents=[common],
        help="memory summed over all processes",
        description="Reserved, committed and swap summed over every user process, with"
        " the kernel's commit accounting (Committed_AS, CommitLimit, overcommit mode).",
    )
    add_units_argument(p)
    p.add_argument("--json", action="store_true", help="JSON object with the API's keys")
    p.set_defaults(run=run, needs_backend=True)


def run(args: argparse.Namespace, env: Environment) -> int:
    from ..stats import total_mem_stats, visibility

    backend = getattr(args, "backend", None)
    total = total_mem_stats(backend=backend)
    note = visibility(backend=backend).describe(total.processes)
    if note:
        env.warn(note)
    if args.json:
        write_json(env, total.to_dict())
        return ExitStatus.SUCCESS

    def size(kb: int) -> str:
        return format_size(kb, args.units)

    pct = committed_pct(total.committed_kb, total.reserved_kb)
    commit_use = committed_pct(total.committed_as_kb, total.commit_limit_kb)
    render_pairs(
        env,
        [
            ("processes", str(total.processes)),
            ("reserved", size(total.reserved_kb)),
            ("committed", f"{size(total.committed_kb)} ({pct:.1f}% of reserved)"),
            ("swap", size(total.swap_kb)),
            ("Committed_AS", f"{size(total.committed_as_kb)} ({commit_use:.1f}% of limit)"),
            ("CommitLimit", size(total.commit_limit_kb)),
            ("MemTotal", size(total.mem_total_kb)),
            ("overcommit", f"{total.overcommit_memory} ({total.overcommit_mode})"),
        ],
        title="Memory of all processes",
    )
    return ExitStatus.SUCCESS
