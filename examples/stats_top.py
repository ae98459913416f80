#!/usr/bin/env python3
"""The ten processes with the most committed (resident) memory, and the system totals."""

from __future__ import annotations

import tamalloc
from tamalloc import format_bytes


def main() -> None:
    top = sorted(tamalloc.all_mem_stats(), key=lambda s: s.committed_kb, reverse=True)[:10]
    print(
        f"{'PID':>7}  {'NAME':<16} {'RESERVED (VSZ)':>14} {'COMMITTED (RSS)':>15}"
        f" {'%':>6} {'OOM':>5}"
    )
    for s in top:
        print(
            f"{s.pid:>7}  {s.name:<16.16} {format_bytes(s.reserved_kb * 1024):>14}"
            f" {format_bytes(s.committed_kb * 1024):>15} {s.committed_pct:>6.2f} {s.oom_score:>5}"
        )
    total = tamalloc.total_mem_stats()
    print(
        f"\n{total.processes} processes (backend {tamalloc.get_backend().name}):"
        f" {format_bytes(total.committed_kb * 1024)} committed (RSS) of"
        f" {format_bytes(total.reserved_kb * 1024)} reserved (VSZ);"
        f" Committed_AS {format_bytes(total.committed_as_kb * 1024)}"
        f" / CommitLimit {format_bytes(total.commit_limit_kb * 1024)}"
        f" (overcommit: {total.overcommit_mode})"
    )
    note = tamalloc.visibility().describe(total.processes)
    if note:
        print(note)


if __name__ == "__main__":
    main()
