"""``tamalloc watch PID``: one process's memory, refreshed in place, with a history."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .. import stats as api
from ..errors import NoSuchProcess
from ..models import MemStats
from .env import Environment, ExitStatus, visible
from .output import COMMITTED, RESERVED, console, format_pct, format_size

if TYPE_CHECKING:
    from rich.console import RenderableType

_BARS = "▁▂▃▄▅▆▇█"
_ASCII_BARS = "_.-:=+*#"  # where the output cannot encode the blocks


def sparkline(values: Iterable[float], bars: str = _BARS) -> str:
    """One block character per value, scaled from the minimum to the maximum: a
    steady 41.3-41.8 MiB would be all full bars from 0, and shows its changes so.
    A flat history is the lowest bar throughout."""
    values = list(values)
    low, high = min(values, default=0), max(values, default=0)
    if high <= low:
        return bars[0] * len(values)
    last = len(bars) - 1
    return "".join(bars[round((v - low) / (high - low) * last)] for v in values)


def value_range(values: Iterable[float], fmt: Callable[[float], str]) -> str:
    """The range a sparkline spans, "41.3 MiB to 41.8 MiB" (one value when flat)."""
    values = list(values)
    low, high = min(values, default=0), max(values, default=0)
    return fmt(low) if high == low else f"{fmt(low)} to {fmt(high)}"


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
    backend = getattr(args, "backend", None)
    current = api.mem_stats(args.pid, backend=backend)  # NoSuchProcess here is an error
    history: deque[MemStats] = deque(maxlen=args.history)
    waiter = _ExitWaiter(current.pid)
    show: _JsonView | _LiveView | _LineView
    if args.json:
        show = _JsonView(env)
    elif env.interactive:
        show = _LiveView(env, args)
    else:
        show = _LineView(env, args)
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
                    current = api.mem_stats(current.pid, backend=backend)
                except NoSuchProcess:
                    exited = True
                    break
    except KeyboardInterrupt:
        pass  # Ctrl-C is the normal way to stop watching
    finally:
        waiter.close()
    if exited:
        message = f"process {current.pid} ({current.name}) exited"
        # JSON lines stay JSON lines: the end is news for stderr then.
        if args.json:
            env.warn(message)
        else:
            env.info(message)
    return ExitStatus.SUCCESS


class _JsonView:
    """--json: one JSON object per line and sample, flushed at once (a reader may be
    following the stream)."""

    def __init__(self, env: Environment) -> None:
        self.env, self.samples = env, 0

    def __enter__(self) -> _JsonView:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, history: deque[MemStats]) -> None:
        self.samples += 1
        record = {"time": round(time.time(), 3), **history[-1].to_dict()}
        self.env.stdout.write(json.dumps(record) + "\n")
        self.env.stdout.flush()


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
        # env.info shows the name as ps would: one line per sample whatever it holds.
        self.env.info(
            f"{time.strftime('%H:%M:%S')} pid {s.pid} {s.name}"
            f" {RESERVED} {format_size(s.reserved_kb, u)}"
            f" {COMMITTED} {format_size(s.committed_kb, u)}"
            f" ({format_pct(s.committed_pct)}%) swap {format_size(s.swap_kb, u)}"
            f" oom_score {s.oom_score} oom_score_adj {s.oom_score_adj}"
        )


class _LiveView:
    """Terminal: a rich Live panel redrawn in place."""

    def __init__(self, env: Environment, args: argparse.Namespace) -> None:
        from rich.live import Live  # rich: 30-40 ms, not paid by --json or a pipe

        self.units, self.interval, self.samples = args.units, args.interval, 0
        self.backend = getattr(args, "backend", None)
        self.encoding = env.encoding
        out = console(env)
        # rich's own test for an output that cannot take box drawing (it draws the
        # panel in ASCII then): the sparklines follow it.
        self.bars = _ASCII_BARS if out.options.ascii_only else _BARS
        self.live = Live(console=out, auto_refresh=False, transient=False)

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
        # rich: 30-40 ms, not paid by --json or a pipe
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        s, u = history[-1], self.units
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column(justify="right")
        grid.add_column()
        reserved = [h.reserved_kb for h in history]
        committed = [h.committed_kb for h in history]
        pcts = [h.committed_pct for h in history]

        def size(kb: float) -> str:
            return format_size(int(kb), u)

        bars = self.bars
        grid.add_row(
            RESERVED,
            size(s.reserved_kb),
            f"[blue]{sparkline(reserved, bars)}[/] [dim]{value_range(reserved, size)}",
        )
        grid.add_row(
            COMMITTED,
            size(s.committed_kb),
            f"[green]{sparkline(committed, bars)}[/] [dim]{value_range(committed, size)}",
        )
        grid.add_row(
            "committed %",
            format_pct(s.committed_pct),
            f"[green]{sparkline(pcts, bars)}[/] [dim]{value_range(pcts, format_pct)}",
        )
        grid.add_row("swap", size(s.swap_kb), "")
        grid.add_row("OOM score", str(s.oom_score), f"adj {s.oom_score_adj}")
        grid.add_row("", "", "")
        grid.add_row(
            f"[dim]every {self.interval:g} s", f"[dim]{self.samples} samples", "[dim]Ctrl-C to stop"
        )
        # A Text, not markup: the name is shown as ps would (rich's escape() only
        # guards its markup, and passed ESC and newline to the terminal).
        title = Text.assemble((visible(s.name, self.encoding), "bold"), f" pid {s.pid}")
        return Panel(grid, title=title, expand=False)
