"""Real leaks to real OOM kills in the guest against `tamalloc oom --forecast` (issue 19,
item 3).

Each scenario starts *leakers* (Python processes that hold a set size, then, on "go",
grow at a set rate, stop growing after a while, or run a sawtooth like a garbage-collected
heap), samples the OOM model's inputs for a short window (10 s every 0.5 s: the guest is
emulated), forecasts with tamalloc.forecast_oom() (one scenario with the `tamalloc oom
--forecast --json` command instead), then lets the leak run to the real OOM kill. The
kill's time comes from the kernel log's own clock: a mark written to /dev/kmsg right
after the last sample, and the "Killed process" record; who died from the wait
statuses, the domain's oom_kill counter and the log, as in test_oom_kills.py.

The checks: the time to the kill within ±20 % of the forecast or ±5 s, whichever is
larger; the forecast victim is the process the kernel killed (and, for the overtaking
leaker, not the top candidate of the moment); a leak that stopped and a sawtooth that
never reaches its limit read "not growing" and nothing is killed. Each record line
also says what least squares and a bare Theil-Sen slope (without the noise and
envelope checks) would have forecast from the same samples, where the scenario sampled
them itself: the sawtooth is where they are wrong.

Only in the guest boot of `make vm-oom-test` (see test_oom_kills.py's header).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import oom_support as sup
import pytest

from _support import meminfo_kb, subprocess_env
from tamalloc.forecast import DomainForecast, fit, forecast_oom
from tamalloc.oom import OomInputs, collect_inputs, predict

sup.skip_unless_real_oom_kills()

pytestmark = pytest.mark.usefixtures("require_kernel")

RUN = sup.load_run_py()
VMSTAT = Path("/proc/vmstat")
WINDOW = 10.0
INTERVAL = 0.5
# The tolerance on the time to the kill: ±20 % of the forecast, at least ±5 s.
REL_TOLERANCE = 0.2
ABS_TOLERANCE = 5.0
# How long a scenario without a forecast OOM watches for a kill all the same.
QUIET_WATCH = 10.0

# A leaker: imports first, then joins its cgroup (what it charges from then on is its
# own allocations), sets its oom_score_adj, optionally locks its code in memory (a
# system-wide OOM's reclaim would otherwise evict the interpreter's text and refault it
# from 9p at every step: minutes of thrashing under emulation), holds INITIAL MiB, says
# "ready PID", and on "go" grows: at ELAPSED seconds it holds
#   leak:      INITIAL + RATE * min(ELAPSED, STOP) MiB (STOP 0: never stops), less
#              the time it was starved of CPU
#   sawtooth:  INITIAL + RATE * (ELAPSED mod PERIOD) MiB, freed back at each period
# in 1 MiB mappings, each byte written. EOF on stdin ends it.
LEAKER_SCRIPT = r"""
import ctypes, mmap, os, select, sys, time
cgroup, adj, initial, rate, stop, period, lock = sys.argv[1:8]
initial, rate, stop, period = int(initial), float(rate), float(stop), float(period)
chunk = b"\x5a" * (1 << 20)
if cgroup:
    with open(cgroup + "/cgroup.procs", "w") as f:
        f.write(str(os.getpid()))
with open("/proc/self/oom_score_adj", "w") as f:
    f.write(adj)
if lock == "1":
    ctypes.CDLL(None).mlockall(1)  # MCL_CURRENT
held = []

def grow_to(mib):
    while len(held) < mib:
        m = mmap.mmap(-1, len(chunk), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        m.write(chunk)
        held.append(m)
    while len(held) > mib:
        held.pop().close()

grow_to(initial)
print("ready", os.getpid(), flush=True)
if sys.stdin.readline() != "go\n":
    os._exit(0)
start = last = time.monotonic()
leaked = 0.0
while True:
    now = time.monotonic()
    elapsed = now - start
    if period:
        grow_to(initial + int(rate * (elapsed % period)))
    else:
        # At most 0.2 s worth at a time: starved of CPU (an emulated guest on a busy
        # host) it leaks less rather than catching up in a burst the window never saw.
        if not stop or elapsed < stop:
            leaked += rate * min(now - last, 0.2)
        grow_to(initial + int(leaked))
    last = now
    if select.select([sys.stdin], [], [], 0.05)[0] and not sys.stdin.read(1):
        os._exit(0)
"""


@dataclass
class Leaker:
    label: str
    initial_mib: int
    rate: float = 0.0  # MiB/s
    stop: float = 0.0  # seconds of leaking, 0: until killed
    period: float = 0.0  # a sawtooth's period, 0: none
    adj: int = 0
    proc: subprocess.Popen[str] | None = None
    pid: int = 0


@dataclass(frozen=True)
class Scenario:
    name: str
    limit: str | None  # the memcg's memory.max; None: system-wide
    leakers: tuple[Leaker, ...]
    expect_oom: bool  # a forecast OOM and a real kill; else "not growing" and no kill
    expect_victim: str | None = None
    # The top candidate at the forecast is another (the overtaking leaker).
    overtakes: str | None = None
    cli: bool = False  # forecast with `tamalloc oom --forecast --json`, not the API
    # Seconds to let the leak run after "go" before the window opens (a leak that stops).
    delay: float = 0.0
    # Leave MemAvailable minus this many MiB to a -1000 ballast (system-wide only).
    system_room_mib: int = 0


SCENARIOS = [
    Scenario(
        # 192 MiB: the command's own start-up in the guest (~10 s) eats into the leak
        "steady-leak",
        "192M",
        (Leaker("leak", 8, rate=4), Leaker("static", 24)),
        True,
        expect_victim="leak",
        cli=True,
    ),
    Scenario(
        "two-leakers",
        "192M",
        (Leaker("slow", 8, rate=2), Leaker("fast", 8, rate=6)),
        True,
        expect_victim="fast",
    ),
    Scenario(
        # at the forecast small holds ~64 MiB against big's 96: big is the top candidate;
        # at the OOM (~21 s after go) small holds ~128
        "small-leaker-overtakes",
        "224M",
        (Leaker("big", 96), Leaker("small", 4, rate=6)),
        True,
        expect_victim="small",
        overtakes="big",
    ),
    Scenario(
        # 4 MiB/s for 8 s (32 MiB of a 128 MiB limit), then nothing: the window opens
        # after the stop; a first forecast during the leak says it grows
        "leak-stops",
        "128M",
        (Leaker("stops", 8, rate=4, stop=8),),
        False,
        delay=9.0,
    ),
    Scenario(
        # 16 MiB, up 24 MiB/s for 2 s (to 64 MiB), freed back: five teeth in the window
        "sawtooth",
        "128M",
        (Leaker("heap", 16, rate=24, period=2.0),),
        False,
    ),
    Scenario(
        "system-wide-leak",
        None,
        (Leaker("leak", 8, rate=8), Leaker("static", 32)),
        True,
        expect_victim="leak",
        system_room_mib=480,
    ),
]


@dataclass
class Record:
    name: str
    forecast: str = "-"
    killed: str = "none"
    other: str = ""
    match: bool = False

    def line(self) -> str:
        return (
            f"forecast scenario {self.name}: forecast {self.forecast}; killed {self.killed}"
            f"{'; ' + self.other if self.other else ''}; {'match' if self.match else 'MISMATCH'}"
        )


RECORDS: list[Record] = []


@pytest.fixture(scope="session", autouse=True)
def summary() -> Iterator[None]:
    yield
    if not RECORDS:
        return
    print()
    for record in RECORDS:
        print(record.line())
    matched = sum(1 for r in RECORDS if r.match)
    print(f"forecast scenarios: {len(RECORDS)} run, {matched} matched")


class Kmsg:
    """/dev/kmsg records from now on, with the kernel's microsecond timestamps."""

    def __init__(self) -> None:
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def records(self) -> list[tuple[int, str]]:
        out = []
        while True:
            try:
                raw = os.read(self.fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:
                continue
            if not raw:
                break
            head, _, text = raw.decode(errors="replace").partition(";")
            out.append((int(head.split(",")[2]), text.rstrip("\n")))
        return out

    def close(self) -> None:
        os.close(self.fd)


MARK = "tamalloc-forecast: last sample"


def mark() -> None:
    with open("/dev/kmsg", "w") as f:
        f.write(MARK + "\n")


def start(leakers: tuple[Leaker, ...], cgroup: Path | None, lock: bool) -> None:
    for leaker in leakers:
        leaker.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                LEAKER_SCRIPT,
                str(cgroup or ""),
                str(leaker.adj),
                str(leaker.initial_mib),
                str(leaker.rate),
                str(leaker.stop),
                str(leaker.period),
                "1" if lock else "0",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )
    for leaker in leakers:
        assert leaker.proc is not None and leaker.proc.stdout is not None
        ready, _, _ = select.select([leaker.proc.stdout], [], [], sup.READY_TIMEOUT)
        assert ready, f"leaker {leaker.label} not ready"
        words = leaker.proc.stdout.readline().split()
        assert words[:1] == ["ready"], (leaker.label, words, leaker.proc.poll())
        leaker.pid = int(words[1])


def go(leakers: tuple[Leaker, ...]) -> None:
    for leaker in leakers:
        assert leaker.proc is not None and leaker.proc.stdin is not None
        leaker.proc.stdin.write("go\n")
        leaker.proc.stdin.flush()


def stop_all(leakers: tuple[Leaker, ...]) -> dict[str, int]:
    statuses = {}
    for leaker in leakers:
        if leaker.proc is not None and leaker.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                leaker.proc.stdin.close()
    for leaker in leakers:
        if leaker.proc is not None:
            try:
                statuses[leaker.label] = leaker.proc.wait(timeout=sup.READY_TIMEOUT)
            except subprocess.TimeoutExpired:
                leaker.proc.kill()
                statuses[leaker.label] = leaker.proc.wait()
    return statuses


def forecast_cli(domain: str | None) -> list[dict[str, object]]:
    cmd = [*sup.cli_command(), "oom", "--forecast", "--json", "--backend", "kernel"]
    cmd += ["--window", str(WINDOW), "--interval", str(INTERVAL)]
    if domain is not None:
        cmd += ["--cgroup", domain]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    data: list[dict[str, object]] = json.loads(result.stdout)
    return data


def other_estimators(samples: list[tuple[float, OomInputs]], domain: str | None) -> str:
    """What least squares and the bare Theil-Sen slope would have said."""
    ts, hs = [], []
    for t, inputs in samples:
        (d,) = [d for d in predict(inputs, cgroup=domain) if d.cgroup == domain]
        ts.append(t)
        hs.append(float(d.headroom_kb))
    mt, mh = sum(ts) / len(ts), sum(hs) / len(hs)
    ls = sum((t - mt) * (h - mh) for t, h in zip(ts, hs, strict=True)) / sum(
        (t - mt) ** 2 for t in ts
    )
    ls_level = mh + ls * (ts[-1] - mt)
    bare = fit(ts, hs)

    def when(slope: float, level: float) -> str:
        return f"{max(level, 0) / -slope:.1f} s" if slope < 0 else "not growing"

    return f"least squares {when(ls, ls_level)}, bare Theil-Sen {when(bare.slope, bare.level)}"


def oom_kills(events: Path) -> int:
    return sup.read_events(events)


def describe(f: DomainForecast | dict[str, object]) -> tuple[float | None, int | None, str]:
    data = f.to_dict() if isinstance(f, DomainForecast) else f
    seconds = data["seconds_to_oom"]
    victim = data["victim_at_oom"]
    assert seconds is None or isinstance(seconds, float | int)
    pid = victim["pid"] if isinstance(victim, dict) else None
    if seconds is None:
        text = f"not growing ({data['samples']} samples)"
    else:
        text = (
            f"OOM in {seconds:.1f} s ({data['seconds_low']:.1f}-"
            f"{'never' if data['seconds_high'] is None else format(data['seconds_high'], '.1f')}"
            f" s, {data['confidence']}), growth {float(data['growth_kb_per_s']) / 1024:.1f} MiB/s"  # type: ignore[arg-type]
        )
    return (None if seconds is None else float(seconds)), pid, text


@pytest.mark.usefixtures("no_oom_dump_lost")
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_forecast_meets_the_real_kill(scenario: Scenario) -> None:
    record = Record(scenario.name)
    RECORDS.append(record)
    leakers = tuple(Leaker(**{**vars(x), "proc": None}) for x in scenario.leakers)
    groups = sup.Cgroups(f"tamalloc-forecast-{SCENARIOS.index(scenario) + 1}")
    system = scenario.limit is None
    adj_path = Path("/proc/self/oom_score_adj")
    own_adj = adj_path.read_text()
    ballast: tuple[Leaker, ...] = ()
    kmsg = Kmsg()
    statuses: dict[str, int] = {}
    try:
        if system:
            adj_path.write_text("-1000")
            events = VMSTAT
            domain = None
            available = meminfo_kb()["MemAvailable"] // 1024
            size = available - scenario.system_room_mib
            if size > 0:
                ballast = (Leaker("ballast", size, adj=-1000),)
                start(ballast, None, lock=False)
            cgroup_dir = None
        else:
            cgroup_dir = groups.make("", {"memory.max": scenario.limit or ""})
            events = cgroup_dir / "memory.events"
            domain = groups.domain("")
        start(leakers, cgroup_dir, lock=system)
        labels = {x.pid: x.label for x in leakers}
        before = oom_kills(events)
        go(leakers)
        if scenario.delay:
            # A first forecast while it leaks: it grows.
            during = forecast_oom(sample_for(scenario.delay - 1.0), cgroup=domain)
            (first,) = [f for f in during if f.domain == domain]
            print(f"{scenario.name}: during the leak {describe(first)[2]}")
            assert first.seconds_to_oom is not None, first
            time.sleep(1.0)
        samples: list[tuple[float, OomInputs]] = []
        if scenario.cli:
            chosen = [f for f in forecast_cli(domain) if f["domain"] == domain]
        else:
            samples = sample_for(WINDOW)
            chosen = [f for f in forecast_oom(samples, cgroup=domain) if f.domain == domain]
        mark()
        assert len(chosen) == 1, chosen
        seconds, victim_pid, text = describe(chosen[0])
        data = chosen[0].to_dict() if isinstance(chosen[0], DomainForecast) else chosen[0]
        now = data["victim_now"]
        now_pid = now["pid"] if isinstance(now, dict) else None
        record.forecast = text + (
            f", victim {labels.get(victim_pid or 0, victim_pid)} {victim_pid}" if victim_pid else ""
        )
        if now_pid != victim_pid and victim_pid is not None:
            record.forecast += f" (now {labels.get(now_pid or 0, now_pid)} {now_pid})"
        if samples:
            record.other = other_estimators(samples, domain)
        print(f"{scenario.name}: {record.forecast}; {record.other}")
        deadline = time.monotonic() + (
            max(seconds * 3, seconds + 60) if seconds is not None else QUIET_WATCH
        )
        # Sampling goes on until the kill, as a forecasting exporter would: the guest's
        # CPUs stay as busy as in the window, and the leakers as fast.
        while oom_kills(events) == before and time.monotonic() < deadline:
            collect_inputs("kernel")
            time.sleep(INTERVAL)
        killed_count = oom_kills(events) - before
        statuses = stop_all(leakers)
    finally:
        for x in (*leakers, *ballast):
            if x.proc is not None and x.proc.poll() is None:
                x.proc.kill()
                x.proc.wait()
        adj_path.write_text(own_adj)
        groups.close()
    records = kmsg.records()
    kmsg.close()
    lines = [text for _, text in records]
    evidence = sup.parse_log(lines)
    print("\n".join(evidence.lines[:60]))
    bad = RUN.splats("\n".join(lines), allow_oom=True)
    assert not bad, "kernel log:\n" + "\n".join(bad[:40])

    if not scenario.expect_oom:
        record.match = seconds is None and killed_count == 0
        record.killed = "none" if killed_count == 0 else f"{killed_count} processes"
        assert seconds is None, record.line()
        assert killed_count == 0 and not evidence.reports, record.line()
        assert all(s == 0 for s in statuses.values()), statuses
        return

    assert seconds is not None, record.line()
    mark_usec = next(u for u, text in records if text == MARK)
    killed_at = [
        (u, int(m.group(2))) for u, text in records if (m := sup.KILLED.search(text)) is not None
    ]
    assert killed_at, f"no kill in the kernel log ({killed_count} counted): {record.line()}"
    usec, first_tid = killed_at[0]
    real = (usec - mark_usec) / 1e6
    first_killed = evidence.reports[0].killed_tids
    by_status = sorted(x.pid for x in leakers if statuses.get(x.label) == -9)
    record.killed = f"{labels.get(first_tid, '?')} {first_tid} after {real:.1f} s" + (
        f" (then {len(killed_at) - 1} more)" if len(killed_at) > 1 else ""
    )
    tolerance = max(REL_TOLERANCE * seconds, ABS_TOLERANCE)
    expected_pid = next(x.pid for x in leakers if x.label == scenario.expect_victim)
    record.match = (
        abs(real - seconds) <= tolerance
        and victim_pid == first_tid == expected_pid
        and first_tid in by_status
    )
    print(record.line())
    assert first_killed[:1] == [first_tid], evidence.reports[0]
    assert first_tid in by_status, (statuses, first_tid)
    assert killed_count >= 1
    # The forecast's victim is the one the kernel killed, and the one the scenario is for.
    assert victim_pid == first_tid, record.line()
    assert labels.get(first_tid) == scenario.expect_victim, record.line()
    if scenario.overtakes is not None:
        overtaken = next(x.pid for x in leakers if x.label == scenario.overtakes)
        assert now_pid == overtaken, record.line()
    assert abs(real - seconds) <= tolerance, record.line()


def sample_for(seconds: float) -> list[tuple[float, OomInputs]]:
    """``seconds`` of the kernel backend's inputs, every INTERVAL."""
    samples: list[tuple[float, OomInputs]] = []
    begin = time.monotonic()
    while True:
        t = time.monotonic()
        samples.append((t, collect_inputs("kernel")))
        if t - begin >= seconds:
            return samples
        time.sleep(max(begin + len(samples) * INTERVAL - time.monotonic(), 0.0))


@pytest.fixture
def no_oom_dump_lost() -> Iterator[None]:
    """The task dump of each report is kept: the record of a mismatch."""
    path = Path("/proc/sys/vm/oom_dump_tasks")
    before = path.read_text()
    path.write_text("1")
    yield
    path.write_text(before)


def test_an_idle_guest_is_not_growing() -> None:
    """Nothing of the scenarios runs: every domain reads "not growing"."""
    record = Record("idle")
    RECORDS.append(record)
    forecasts = forecast_cli(None)
    growing = [f for f in forecasts if f["seconds_to_oom"] is not None]
    record.forecast = (
        f"{len(forecasts)} domain{'s' if len(forecasts) != 1 else ''}, {len(growing)} growing"
    )
    record.match = not growing
    print(record.line(), json.dumps(growing))
    assert not growing, growing
