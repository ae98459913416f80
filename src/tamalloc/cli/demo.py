"""``tamalloc demo``: the original lazy-zeroing demonstration.

Allocate, show that reserved memory grew but committed did not, then touch every page
(check each byte reads 0, write a letter) while committed memory grows, and give a
verdict. ``--pause`` stops where the original C program did, so that another terminal
can run ``tamalloc watch PID`` meanwhile.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import TYPE_CHECKING, Any

from .. import stats as api
from .._libc import PAGE_SIZE, page_round_up
from ..backends import get_backend
from ..sizes import format_bytes
from ..system import read_meminfo
from .env import Environment, ExitStatus, UsageError
from .output import COMMITTED, RESERVED, console

if TYPE_CHECKING:
    from ..buffer import Buffer
    from ..models import MemStats

_MIB = 1 << 20
_MAX_PLAIN_LINES = 100  # piped output: about one line per MiB, but not thousands


class _Demo:
    def __init__(self, args: argparse.Namespace, env: Environment) -> None:
        self.args, self.env = args, env
        self.backend = getattr(args, "backend", None)
        self.pid = os.getpid()
        self._mem_stats = api.mem_stats

    def stats(self) -> MemStats:
        return self._mem_stats(self.pid, backend=self.backend)

    def pause(self, prompt: str) -> None:
        if self.args.pause:
            self.env.info(f"{prompt}: press Enter to continue")
            self.env.stdin.readline()  # EOF simply continues

    def touch(self, buf: Buffer, progress: _Progress) -> tuple[int | None, int]:
        """Check and write every page; returns (offset of a non-zero byte or None,
        committed kB at the end)."""
        # Only here: random (it loads hashlib and OpenSSL) costs 5-9 ms of every
        # command's start-up, which imports this module to build its parser.
        import random
        import string

        page = PAGE_SIZE
        size = len(buf)
        step = _MIB if self.env.interactive else max(_MIB, -(-size // _MAX_PLAIN_LINES))
        step = page_round_up(step)
        zero_page = bytes(page)
        with progress:
            for start in range(0, size, step):
                end = min(size, start + step)
                for off in range(start, end, page):
                    n = min(page, size - off)
                    chunk = buf[off : off + n]
                    if chunk != zero_page[:n]:
                        return off + next(i for i, b in enumerate(chunk) if b), 0
                    buf[off : off + n] = random.choice(string.ascii_uppercase).encode() * n
                progress.advance(end, self.stats().committed_kb)
                if self.args.delay:
                    time.sleep(self.args.delay)
        return None, self.stats().committed_kb

    def run(self) -> int:
        # The buffer module and its C type: ~2 ms of every other command's start-up.
        from ..buffer import alloc

        env, size = self.env, self.args.size
        self.check_available(size)
        kind = "huge-page-aligned " if self.args.huge else ""
        env.info(f"tamalloc demo: pid {self.pid}, backend {self._backend_name()}")
        self.pause(f"About to allocate {format_bytes(size)}")
        # Set up the progress display (and import rich) first, so that the committed
        # memory measured below grows by the buffer's pages only.
        progress = _Progress(env, size)
        before = self.stats()
        with alloc(size, huge=self.args.huge, backend=self.backend) as buf:
            after = self.stats()
            resident = buf.resident_bytes()
            env.info(f"Allocated {format_bytes(size)} of {kind}memory at {buf.address:#x}")
            env.info(
                f"  {RESERVED}  {format_bytes(before.reserved_kb * 1024)} ->"
                f" {format_bytes(after.reserved_kb * 1024)}"
                f" (+{format_bytes((after.reserved_kb - before.reserved_kb) * 1024)})"
            )
            env.info(
                f"  {COMMITTED} {format_bytes(before.committed_kb * 1024)} ->"
                f" {format_bytes(after.committed_kb * 1024)};"
                f" buffer resident: {format_bytes(resident)}"
            )
            self.pause("Next: read the memory page by page, checking every byte is 0")
            bad, committed_kb = self.touch(buf, progress)
            if bad is not None:
                env.info(
                    f"Verdict: FAIL: byte {bad} read {buf[bad]:#04x} before its first"
                    " write (memory was not zeroed)"
                )
                return ExitStatus.ERROR
            grown = format_bytes(max(0, committed_kb - after.committed_kb) * 1024)
            env.info(
                f"Verdict: OK: all {size:,} bytes read as 0 before their first write;"
                f" resident before touching {format_bytes(resident)}, after"
                f" {format_bytes(buf.resident_bytes())}; {COMMITTED} grew by {grown}"
            )
            self.pause("Done; exiting frees the memory")
        return ExitStatus.SUCCESS

    def check_available(self, size: int) -> None:
        """Refuse, before allocating, a buffer that touching would not fit in: with
        MAP_NORESERVE nothing fails at the allocation, the pages run out one by one
        and the OOM killer chooses whom to end (not necessarily this demo)."""
        if self.args.force:
            return
        info = read_meminfo()
        available_kb = info.get("MemAvailable", info.get("MemFree"))
        if available_kb is not None and size > available_kb * 1024:
            raise UsageError(
                f"--size {format_bytes(size)} is more than the memory available now"
                f" ({format_bytes(available_kb * 1024)} MemAvailable): touching it would"
                " swap and then wake the OOM killer; --force to do it anyway"
            )

    def _backend_name(self) -> str:
        return get_backend(self.backend).name


class _Progress:
    """A rich progress bar on a terminal, a line per step otherwise."""

    def __init__(self, env: Environment, total: int) -> None:
        self.env, self.total = env, total
        self.bar: Any = None
        if env.interactive:  # rich.progress: ~35 ms, not paid when piped
            from rich.progress import BarColumn, Progress, TextColumn

            self.bar = Progress(
                TextColumn("checking"),
                BarColumn(),
                TextColumn("{task.fields[done]} / {task.fields[size]}"),
                TextColumn("committed (RSS) [bold]{task.fields[committed]}"),
                console=console(env),
            )
            self.task = self.bar.add_task(
                "touch", total=total, done="0 B", size=format_bytes(total), committed="?"
            )

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def advance(self, done: int, committed_kb: int) -> None:
        committed = format_bytes(committed_kb * 1024)
        if self.bar is not None:
            self.bar.update(self.task, completed=done, done=format_bytes(done), committed=committed)
        else:
            self.env.info(
                f"checked {format_bytes(done)} of {format_bytes(self.total)},"
                f" {COMMITTED} {committed}"
            )


def run(args: argparse.Namespace, env: Environment) -> int:
    return _Demo(args, env).run()
