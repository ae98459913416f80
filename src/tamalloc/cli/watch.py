"""``tamalloc watch PID``: one process's memory, refreshed in place, with a history."""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..models import MemStats
from ..sizes import format_kb
from .env import Environment, ExitStatus, pid, positive_float, positive_int
from .output import COMMITTED, RESERVED, add_units_argument, console, format_pct

if TYPE_CHECKING:
    from rich.console import RenderableType

_BARS = "▁▂▃▄▅▆▇█"


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "watch",
        parents=[common],
        help="live view of one process",
        description="Refresh one process's memory every INTERVAL seconds with a sparkline"
        " history of committed vs reserved. Stops on Ctrl-C or when the process exits"
        " (exit status 0 either way).",
    )
    p.add_argument("pid", type=pid, metavar="PID")
    p.add_argument("--interval", type=positive_float, default=2.0, metavar="SECONDS",
                   help="seconds between samples (default 2)")
    p.add_argument("--count", type=positive_int, metavar="N", help="stop after N samples")
    p.add_argument("--history", type=positive_int, default=40, metavar="N",
                   help="samples kept for the sparklines (default 40)")
    add_units_argument(p)
    p.set_defaults(run=run, needs_backend=True)


def sparkline(values: Iterable[float], top: float | None = None) -> str:
    """One block character per value, scaled from 0 to ``top`` (default: the max)."""
    values = list(values)
    top = top if top is not None else max(values, default=0)
    if top <= 0:
        return _BARS[0] * len(values)
    last = len(_BARS) - 1
    return "".join(_BARS[max(0, min(last, round(v / top * last)))] for v in values)


class _ExitWaiter:
    """Sleeps between samples but wakes as soon as the process exits (pidfd)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            self.fd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):  # pre-5.3 kernel: poll /proc instead
            self.fd = None

    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True when the process has exited."""
        if self.fd is not None:
            ready, _, _ = select.select([self.fd], [], [], seconds)
            return bool(ready)
        time.sleep(seconds)
        return _is_dead(self.pid)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _is_dead(pid: int) -> bool:
    """Gone, or a zombie its parent has not reaped yet (it has no memory any more)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] in (b"Z", b"X")


def run(args: argparse.Namespace, env: Environment) -> int:
    from ..errors import NoSuchProcess
    from ..stats import mem_stats

    backend = getattr(args, "backend", None)
    current = mem_stats(args.pid, backend=backend)  # NoSuchProcess here is an error
    history: deque[MemStats] = deque(maxlen=args.history)
    waiter = _ExitWaiter(current.pid)
    show = _LiveView(env, args) if env.interactive else _LineView(env, args)
    exited = False
    try:
        with show:
            while True:
                history.append(current)
                show.update(history)
                if args.count and show.samples >= args.count:
                    break
                if waiter.wait(args.interval):
                    exited = True
                    break
                try:
                    current = mem_stats(current.pid, backend=backend)
                except NoSuchProcess:
                    exited = True
                    break
    except KeyboardInterrupt:
        pass  # Ctrl-C is the normal way to stop watching
    finally:
        waiter.close()
    if exited:
        env.info(f"process {current.pid} ({current.name}) exited")
    return ExitStatus.SUCCESS


class _LineView:
    """Piped output: one line per sample."""

    def __init__(self, env: Environment, args: argparse.Namespace) -> None:
        self.env, self.units, self.samples = env, args.units, 0

    def __enter__(self) -> _LineView:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, history: deque[MemStats]) -> None:
        s, u = history[-1], self.units
        self.samples += 1
        self.env.info(
            f"{time.strftime('%H:%M:%S')} pid {s.pid} {s.name}"
            f" {RESERVED} {format_kb(s.reserved_kb, u)} {COMMITTED} {format_kb(s.committed_kb, u)}"
            f" ({format_pct(s.committed_pct)}%) swap {format_kb(s.swap_kb, u)}"
            f" oom_score {s.oom_score} oom_score_adj {s.oom_score_adj}"
        )


class _LiveView:
    """Terminal: a rich Live panel redrawn in place."""

    def __init__(self, env: Environment, args: argparse.Namespace) -> None:
        from rich.live import Live

        self.units, self.interval, self.samples = args.units, args.interval, 0
        self.backend = getattr(args, "backend", None)
        self.live = Live(console=console(env), auto_refresh=False, transient=False)

    def __enter__(self) -> _LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.__exit__(*exc)

    def update(self, history: deque[MemStats]) -> None:
        self.samples += 1
        with contextlib.suppress(Exception):  # a resize mid-draw must not end the watch
            self.live.update(self._render(history), refresh=True)

    def _render(self, history: deque[MemStats]) -> RenderableType:
        from rich.markup import escape
        from rich.panel import Panel
        from rich.table import Table

        s, u = history[-1], self.units
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column(justify="right")
        grid.add_column()
        reserved = [h.reserved_kb for h in history]
        committed = [h.committed_kb for h in history]
        grid.add_row(RESERVED, format_kb(s.reserved_kb, u), f"[blue]{sparkline(reserved)}")
        grid.add_row(COMMITTED, format_kb(s.committed_kb, u),
                     f"[green]{sparkline(committed)}")
        grid.add_row("committed %", format_pct(s.committed_pct),
                     f"[green]{sparkline((h.committed_pct for h in history), 100)}")
        grid.add_row("swap", format_kb(s.swap_kb, u), "")
        grid.add_row("OOM score", str(s.oom_score), f"adj {s.oom_score_adj}")
        grid.add_row("", "", "")
        grid.add_row(f"[dim]every {self.interval:g} s", f"[dim]{self.samples} samples",
                     "[dim]Ctrl-C to stop")
        return Panel(grid, title=f"[bold]{escape(s.name)}[/] pid {s.pid}", expand=False)
