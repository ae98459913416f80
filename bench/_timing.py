"""Timing helpers shared by the benchmarks: best-of timing, idle process fleets and a
results table with PASS/FAIL per target.

Importing it puts this work tree's src/ first on sys.path, so that a benchmark measures
the code beside it even where another tamalloc is installed: import it before tamalloc.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

# Forks N children that sleep until killed; it reaps them itself when its stdin closes,
# so no zombies are left to whatever init the machine has. -S: no site imports, to keep
# each child's address space and page tables small (10,000 of them fit in a small VM).
_FLEET = r"""
import os, signal, sys
pids = []
for _ in range(int(sys.argv[1])):
    pid = os.fork()
    if pid == 0:
        while True:
            signal.pause()
    pids.append(pid)
sys.stdout.write("ready\n")
sys.stdout.flush()
sys.stdin.read()
for pid in pids:
    os.kill(pid, signal.SIGKILL)
for pid in pids:
    os.waitpid(pid, 0)
"""


@contextmanager
def idle_processes(count: int) -> Iterator[int]:
    """``count`` extra idle processes for the duration of the block; yields the count."""
    if count <= 0:
        yield 0
        return
    fleet = subprocess.Popen(
        [sys.executable, "-S", "-c", _FLEET, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Ctrl-C on the benchmark must not hit the fleet first
    )
    try:
        assert fleet.stdout is not None and fleet.stdin is not None
        if fleet.stdout.readline() != "ready\n":
            raise RuntimeError(f"could not start {count} idle processes")
        yield count
    finally:
        if fleet.stdin is not None:
            fleet.stdin.close()
        try:
            fleet.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(fleet.pid, signal.SIGKILL)
            fleet.wait()


def best_of(fn: Callable[[], object], *, repeat: int = 5, number: int = 1) -> float:
    """Seconds per call: the best of ``repeat`` runs of ``number`` calls (after one
    warm-up call), the usual way to filter out noise from other load."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def best_of_each(*fns: Callable[[], object], repeat: int = 5, number: int = 1) -> list[float]:
    """best_of for several functions in alternating rounds, so that all meet the same
    conditions: measured one after the other, the first paid for whatever the machine
    was still doing (settling after a fleet of processes starts or is reaped)."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], best_of(fn, repeat=1, number=number))
    return best


def best_of_each_wall_cpu(*fns: Callable[[], object], repeat: int = 5) -> list[tuple[float, float]]:
    """(wall, CPU) seconds per call of each function: the best of ``repeat`` alternating
    rounds of each, after one warm-up call. CPU time is this process's (user + system,
    every thread): on a machine shared with other work it counts what a call costs
    whatever the scheduler gave to others, where wall time counts what a user waits."""
    for fn in fns:
        fn()
    wall = [float("inf")] * len(fns)
    cpu = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            w1, c1 = time.perf_counter(), time.process_time()
            wall[i], cpu[i] = min(wall[i], w1 - w0), min(cpu[i], c1 - c0)
    return list(zip(wall, cpu, strict=True))


def spread(values: list[float]) -> tuple[float, float, float]:
    """(min, median, max)."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return ordered[0], median, ordered[-1]


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as uptime prints them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def count_user_processes() -> int:
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/statm", "rb") as f:
                    if f.read(2) != b"0 ":
                        count += 1
            except OSError:
                pass
    return count


def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.2f} µs"


@dataclass
class Report:
    """Rows of measurements, and target lines judged PASS or FAIL."""

    title: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    targets: list[tuple[str, bool]] = field(default_factory=list)

    def time(self, label: str, seconds: float, per: int | None = None) -> None:
        extra = f"  ({fmt_time(seconds / per)} per process)" if per else ""
        self.rows.append((label, fmt_time(seconds) + extra))

    def note(self, label: str, text: str) -> None:
        self.rows.append((label, text))

    def target(self, text: str, ok: bool) -> None:
        self.targets.append((text, ok))

    def print(self) -> None:
        width = max((len(label) for label, _ in self.rows), default=0)
        print(f"== {self.title}")
        for label, value in self.rows:
            print(f"  {label.ljust(width)}  {value}")
        if self.targets:
            print("targets:")
            for text, ok in self.targets:
                print(f"  {'PASS' if ok else 'FAIL'}  {text}")
        sys.stdout.flush()

    @property
    def failed(self) -> bool:
        return not all(ok for _, ok in self.targets)


def minimal_statm_oom_reader() -> list[tuple[int, bytes, int]]:
    """The least a Python reader can do for reserved/committed and the OOM score:
    statm and oom_score of every process, with plain open()."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/statm", "rb") as f:
                statm = f.read()
            with open(f"/proc/{name}/oom_score", "rb") as f:
                score = int(f.read())
        except OSError:
            continue
        out.append((int(name), statm, score))
    return out
