"""``tamalloc total``: memory summed over every process, and commit accounting."""

from __future__ import annotations

import argparse

from .. import stats as api
from ..models import committed_pct
from .env import Environment, ExitStatus, report_hidden
from .output import (
    COMMITTED,
    RESERVED,
    Column,
    format_pct,
    format_size,
    render_table,
    write_json,
)


def run(args: argparse.Namespace, env: Environment) -> int:
    backend = getattr(args, "backend", None)
    total = api.total_mem_stats(backend=backend)
    report_hidden(env, backend, total.processes)
    if args.json:
        write_json(env, total.to_dict())
        return ExitStatus.SUCCESS

    def size(kb: int) -> str:
        return format_size(kb, args.units)

    pct = format_pct(committed_pct(total.committed_kb, total.reserved_kb))
    commit_use = format_pct(committed_pct(total.committed_as_kb, total.commit_limit_kb))
    # Committed_AS shares a word with "committed (RSS)" and is something else: the
    # MEANING column says what each figure is, beside it.
    rows = [
        ("processes", str(total.processes), "user processes summed below"),
        (RESERVED, size(total.reserved_kb), "virtual size, VmSize summed"),
        (COMMITTED, size(total.committed_kb), "resident in RAM, VmRSS summed"),
        ("committed %", pct, "committed (RSS) as a % of reserved (VSZ)"),
        ("swap", size(total.swap_kb), "swapped out, VmSwap summed"),
        (
            "Committed_AS",
            size(total.committed_as_kb),
            "memory the kernel has promised to all processes (/proc/meminfo); not RSS",
        ),
        ("Committed_AS %", commit_use, "Committed_AS as a % of CommitLimit"),
        (
            "CommitLimit",
            size(total.commit_limit_kb),
            "ceiling for Committed_AS, enforced when overcommit is 2",
        ),
        ("MemTotal", size(total.mem_total_kb), "usable RAM"),
        (
            "overcommit",
            f"{total.overcommit_memory} ({total.overcommit_mode})",
            "vm.overcommit_memory",
        ),
    ]
    render_table(
        env,
        (Column("FIELD", numeric=False), Column("VALUE"), Column("MEANING", numeric=False)),
        [list(r) for r in rows],
        title="Memory of all processes",
    )
    return ExitStatus.SUCCESS
