"""When each OOM domain will run out of memory, and who the OOM killer will kill then.

A :class:`ForecastWindow` keeps timestamped samples of the OOM model's inputs, reduced
to what a forecast needs (each domain's headroom, each task's rss + swap + page tables),
bounded by age and count. :meth:`ForecastWindow.forecast` fits each domain's headroom
against time and, when it falls, projects every candidate's own growth to the moment
it reaches 0 and ranks the projected tasks with :func:`tamalloc.oom.predict` (ties,
unkillable tasks and memory.oom.group included): the victim at the OOM, which is not
always today's.

The estimator (docs/oom.md says why and where it fails): the Theil-Sen slope (the
median of the pairwise slopes) of headroom against time, so that a few outlying
samples do not move it, with Sen's confidence interval from Kendall's statistic. A fall
counts as growth only when it is significant twice over: larger than three robust
standard deviations of the residuals and than a floor, and confirmed by the envelope:
the window cut in three, the least headroom of each third (the peaks of usage) and the
most (the troughs) must both fall by at least half of what the slope says. A
garbage-collected heap's sawtooth has a positive Theil-Sen slope (most pairs of samples
lie on one rising tooth) but its peaks do not rise: it does not read as a leak.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .errors import NoSuchCgroup
from .models import OomTask
from .oom import OomDomain, OomInputs, collect_inputs, predict
from .oom_inputs import plain_dict

# Defaults of the CLI and of sample_and_forecast().
DEFAULT_WINDOW = 30.0
DEFAULT_INTERVAL = 1.0
# A window holds at most this many samples whatever the interval: the oldest go first.
DEFAULT_MAX_SAMPLES = 600
# Fewer samples than this give no slope worth the name (and no envelope of thirds).
MIN_SAMPLES = 6
# A fall smaller than this over the window is not growth: the kernel's own
# bookkeeping (per-CPU charge batches of 64 pages, the page cache) moves by that much.
MIN_FALL_KB = 1024
# At most this many points are fitted (7,140 pairs); more are thinned evenly.
MAX_FIT_POINTS = 120
# The residuals' spread the fall must exceed, in robust standard deviations.
NOISE_SIGMAS = 3.0
# Sen's interval: 90 % two-sided.
_Z = 1.645


class ForecastVictim(NamedTuple):
    pid: int
    name: str
    points: int | None  # oom_badness() in pages (projected for victim_at_oom)

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


@dataclass(frozen=True, slots=True)
class DomainForecast:
    kind: str  # "system" or "cgroup", as OomDomain
    domain: str | None  # cgroup path; None for the system
    limit_kb: int
    headroom_kb: int  # now (the last sample)
    growth_kb_per_s: float | None  # the fitted growth of usage; None when not growing
    seconds_to_oom: float | None  # from now; None when not growing
    # Sen's 90 % interval on seconds_to_oom (the high end None: the slope's interval
    # reaches 0, so the OOM may never come).
    seconds_low: float | None
    seconds_high: float | None
    confidence: str  # "high", "medium", "low", or "none" when not growing
    victim_now: ForecastVictim | None
    victim_at_oom: ForecastVictim | None
    samples: int
    span_s: float  # time between the first and the last sample used
    notes: tuple[str, ...] = field(default=())
    candidates: int = 0  # the tasks the domain's OOM would weigh now

    def to_dict(self) -> dict[str, Any]:
        return plain_dict(self)


class Fit(NamedTuple):
    """A robust line through (t, y): y ≈ level + slope * (t - t_last)."""

    slope: float
    level: float  # the fitted value at the last sample
    slope_low: float  # Sen's interval on the slope
    slope_high: float
    sigma: float  # robust standard deviation of the residuals (1.4826 MAD)
    significant: bool  # a trend, not noise nor a sawtooth (module docstring)


def _median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    if not n:
        return 0.0
    mid = n // 2
    return s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2


def fit(ts: Sequence[float], ys: Sequence[float], *, min_change: float = MIN_FALL_KB) -> Fit:
    """Theil-Sen through the points, Sen's interval, and whether the trend is real: its
    change over the span beats the noise (NOISE_SIGMAS, ``min_change``) and the
    envelope of the three thirds moves with it (module docstring)."""
    n = len(ts)
    if n > MAX_FIT_POINTS:
        # The pairs grow as n²: a long window (an exporter's) is thinned evenly, which
        # keeps its span and its shape.
        keep = [round(i * (n - 1) / (MAX_FIT_POINTS - 1)) for i in range(MAX_FIT_POINTS)]
        ts, ys = [ts[i] for i in keep], [ys[i] for i in keep]
        n = MAX_FIT_POINTS
    if n < 2:
        level = float(ys[-1]) if ys else 0.0
        return Fit(0.0, level, 0.0, 0.0, 0.0, False)
    if min(ys) == max(ys):
        # The common case of a task's size (most sleep): no pairs to weigh.
        return Fit(0.0, float(ys[-1]), 0.0, 0.0, 0.0, False)
    slopes = sorted(
        (ys[j] - ys[i]) / (ts[j] - ts[i])
        for i in range(n)
        for j in range(i + 1, n)
        if ts[j] > ts[i]
    )
    if not slopes:
        return Fit(0.0, float(ys[-1]), 0.0, 0.0, 0.0, False)
    slope = _median(slopes)
    t_last = ts[-1]
    level = _median([y - slope * (t - t_last) for t, y in zip(ts, ys, strict=True)])
    residuals = [y - (level + slope * (t - t_last)) for t, y in zip(ts, ys, strict=True)]
    sigma = 1.4826 * _median([abs(r) for r in residuals])
    # Sen (1968): the ranks (N ∓ z·sqrt(var S)) / 2 of the sorted pairwise slopes.
    big_n = len(slopes)
    c = _Z * math.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    lo = max(int((big_n - c) / 2), 0)
    hi = min(math.ceil((big_n + c) / 2), big_n - 1)
    span = t_last - ts[0]
    change = slope * span
    significant = (
        n >= MIN_SAMPLES
        and abs(change) > max(NOISE_SIGMAS * sigma, min_change)
        and _envelope_agrees(ts, ys, slope)
    )
    return Fit(slope, level, slopes[lo], slopes[hi], sigma, significant)


def _envelope_agrees(ts: Sequence[float], ys: Sequence[float], slope: float) -> bool:
    """Whether the high and the low side of each third of the window both move the
    slope's way, by at least half of what it says between the thirds' middles. Each
    side is the second highest (lowest) point of its third, the highest (lowest) in a
    third of fewer than 4: one outlying sample does not make an envelope."""
    n = len(ts)
    thirds = [range(n * k // 3, n * (k + 1) // 3) for k in range(3)]
    if any(len(r) < 2 for r in thirds):
        return False
    first, last = thirds[0], thirds[2]
    middle = (ts[last[0]] + ts[last[-1]]) / 2 - (ts[first[0]] + ts[first[-1]]) / 2
    expected = slope * middle / 2
    for high in (True, False):
        a, m, b = (_side(sorted(ys[i] for i in r), high) for r in thirds)
        # Each step, not only end to end: peaks that rose then fell are no trend.
        if slope < 0 and not (b - a <= expected and m <= a and b <= m):
            return False
        if slope > 0 and not (b - a >= expected and m >= a and b >= m):
            return False
    return True


def _side(ordered: list[float], high: bool) -> float:
    skip = 1 if len(ordered) >= 4 else 0
    return ordered[-1 - skip] if high else ordered[skip]


class _Sample(NamedTuple):
    t: float
    # Per domain (None: the system): (kind, limit kB, headroom kB).
    domains: Mapping[str | None, tuple[str, int, int]]
    # Per pid: (name, rss + swap + page tables in kB).
    tasks: dict[int, tuple[str, int]]


def _reduce(t: float, inputs: OomInputs) -> _Sample:
    # The domains' budgets without their candidates: predict() with no tasks costs no
    # ranking; the tasks' sizes are read straight from the inputs.
    bare = predict(dataclasses.replace(inputs, tasks=()))
    domains = {d.cgroup: (d.kind, d.limit_kb, d.headroom_kb) for d in bare}
    tasks = {
        task.pid: (task.name, task.rss_kb + task.swap_kb + task.pgtables_kb)
        for task in inputs.tasks
    }
    return _Sample(t, domains, tasks)


def _check_sample(t: object, inputs: object, previous: float | None) -> None:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        raise ValueError(f"a sample's time must be a finite number of seconds, not {t!r}")
    if not isinstance(inputs, OomInputs):
        raise TypeError(f"a sample's inputs must be OomInputs, not {type(inputs).__name__}")
    if previous is not None and t < previous:
        raise ValueError(f"samples must come in time order: {t} after {previous}")


class ForecastWindow:
    """The last ``window`` seconds of samples, ``max_samples`` at most.

    ``add(t, inputs)`` with ``t`` from a monotonic clock, in seconds, never going back;
    ``forecast()`` whenever wanted. The window keeps each sample's reduced form and
    the last full inputs (the projection of the victim needs them).
    """

    def __init__(self, window: float = DEFAULT_WINDOW, *, max_samples: int = DEFAULT_MAX_SAMPLES):
        if isinstance(window, bool) or not isinstance(window, (int, float)):
            raise TypeError(f"window must be a number, not {type(window).__name__}")
        if not window > 0 or math.isinf(window):
            raise ValueError(f"window must be a positive number of seconds, not {window!r}")
        if isinstance(max_samples, bool) or not isinstance(max_samples, int):
            raise TypeError(f"max_samples must be an int, not {type(max_samples).__name__}")
        if max_samples < 2:
            raise ValueError(f"max_samples must be at least 2, not {max_samples}")
        self.window = float(window)
        self.max_samples = max_samples
        self._samples: deque[_Sample] = deque(maxlen=max_samples)
        self._last: OomInputs | None = None
        # An exporter's scrapes may add and forecast from several threads at once.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._samples)

    def add(self, t: float, inputs: OomInputs) -> None:
        _check_sample(t, inputs, None)
        reduced = _reduce(float(t), inputs)
        with self._lock:
            _check_sample(t, inputs, self._samples[-1].t if self._samples else None)
            self._samples.append(reduced)
            # The caller's mapping of cgroups may change after this: the projection
            # of the victim must see this sample's.
            self._last = dataclasses.replace(inputs, cgroups=dict(inputs.cgroups))
            self._expire(float(t))

    def _expire(self, now: float) -> None:
        while self._samples and now - self._samples[0].t > self.window:
            self._samples.popleft()

    def clear(self) -> None:
        with self._lock:
            self._samples.clear()
            self._last = None

    def forecast(
        self, now: float | None = None, *, cgroup: str | None = None
    ) -> list[DomainForecast]:
        """One forecast per domain of the last sample (system first, as predict()),
        with ``cgroup`` only those that are or contain it. ``now`` (same clock as
        ``add``; default the last sample's time) is where seconds_to_oom counts from."""
        with self._lock:
            samples, last = list(self._samples), self._last
        if last is None or not samples:
            return []
        return _forecast(samples, last, now, cgroup)


def forecast_oom(
    samples: Iterable[tuple[float, OomInputs]],
    *,
    cgroup: str | None = None,
    now: float | None = None,
) -> list[DomainForecast]:
    """The forecast from samples the caller took: ``(monotonic seconds, OomInputs)``
    in time order, all of them used (no window)."""
    reduced: list[_Sample] = []
    last: OomInputs | None = None
    for t, inputs in samples:
        _check_sample(t, inputs, reduced[-1].t if reduced else None)
        reduced.append(_reduce(float(t), inputs))
        last = inputs
    if last is None:
        return []
    return _forecast(reduced, last, now, cgroup)


def sample_and_forecast(
    window: float = DEFAULT_WINDOW,
    interval: float = DEFAULT_INTERVAL,
    *,
    cgroup: str | None = None,
    backend: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_sample: Callable[[int], None] | None = None,
) -> list[DomainForecast]:
    """Samples the live system every ``interval`` seconds for ``window`` seconds
    (the first sample at once, the last at the window's end), then forecasts."""
    check_timing(window, interval)
    if cgroup is not None:
        # A cgroup that does not exist is an error before the window, not after it.
        predict(dataclasses.replace(collect_inputs(backend), tasks=()), cgroup=cgroup)
    win = ForecastWindow(window + interval, max_samples=DEFAULT_MAX_SAMPLES)
    start = clock()
    count = 0
    while True:
        t = clock()
        win.add(t, collect_inputs(backend))
        count += 1
        if on_sample is not None:
            on_sample(count)
        if t - start >= window - 1e-9 or count >= DEFAULT_MAX_SAMPLES:
            break
        next_t = start + count * interval
        sleep(max(min(next_t, start + window) - clock(), 0.0))
    return win.forecast(cgroup=cgroup)


def check_timing(window: float, interval: float) -> None:
    """ValueError unless 0 < interval <= window, both finite numbers."""
    for name, value in (("window", window), ("interval", interval)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number, not {type(value).__name__}")
        if not value > 0 or math.isinf(value):
            raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    if interval > window:
        raise ValueError(f"interval ({interval:g} s) must not exceed the window ({window:g} s)")
    if window / interval + 1 > DEFAULT_MAX_SAMPLES:
        raise ValueError(
            f"window / interval must be at most {DEFAULT_MAX_SAMPLES - 1} samples,"
            f" not {window / interval:g}"
        )


def _forecast(
    samples: list[_Sample], last: OomInputs, now: float | None, cgroup: str | None
) -> list[DomainForecast]:
    domains_now = predict(last, cgroup=cgroup)
    t_last = samples[-1].t
    ahead = 0.0 if now is None else max(now - t_last, 0.0)
    task_fits: dict[int, Fit] | None = None
    out = []
    for dom in domains_now:
        key = dom.cgroup
        points = [(s.t, s.domains[key][2]) for s in samples if key in s.domains]
        dts = [p[0] for p in points]
        hs = [float(p[1]) for p in points]
        f = fit(dts, hs)
        notes: list[str] = []
        if len(points) < MIN_SAMPLES:
            notes.append(
                f"{len(points)} sample{'s' if len(points) != 1 else ''} of this domain:"
                f" at least {MIN_SAMPLES} are needed for a trend"
            )
        victim_now = _victim(dom)
        growing = f.significant and f.slope < 0
        if not growing:
            out.append(
                DomainForecast(
                    kind=dom.kind,
                    domain=key,
                    limit_kb=dom.limit_kb,
                    headroom_kb=dom.headroom_kb,
                    growth_kb_per_s=None,
                    seconds_to_oom=None,
                    seconds_low=None,
                    seconds_high=None,
                    confidence="none",
                    victim_now=victim_now,
                    victim_at_oom=None,
                    samples=len(points),
                    span_s=(dts[-1] - dts[0]) if dts else 0.0,
                    notes=tuple(notes),
                    candidates=len(dom.candidates),
                )
            )
            continue
        growth = -f.slope
        room = max(f.level, 0.0)
        seconds = max(room / growth - ahead, 0.0)
        low = max(room / -f.slope_low - ahead, 0.0) if f.slope_low < 0 else None
        high = max(room / -f.slope_high - ahead, 0.0) if f.slope_high < 0 else None
        if low is None:
            low = 0.0
        confidence = _confidence(seconds, low, high)
        if dom.bound_by is not None and dom.bound_by != dom.cgroup:
            notes.append(f"the headroom is {dom.bound_by}'s, whose OOM comes first")
        if task_fits is None:  # the tasks' trends: fitted once, for every growing domain
            task_fits = _task_fits(samples)
        at_oom = _victim_at(dom, last, task_fits, seconds + ahead)
        if at_oom is not None and victim_now is not None and at_oom.pid != victim_now.pid:
            notes.append(
                f"{at_oom.pid} ({at_oom.name}) overtakes today's victim"
                f" {victim_now.pid} ({victim_now.name}) before the OOM"
            )
        out.append(
            DomainForecast(
                kind=dom.kind,
                domain=key,
                limit_kb=dom.limit_kb,
                headroom_kb=dom.headroom_kb,
                growth_kb_per_s=growth,
                seconds_to_oom=seconds,
                seconds_low=low,
                seconds_high=high,
                confidence=confidence,
                victim_now=victim_now,
                victim_at_oom=at_oom,
                samples=len(points),
                span_s=dts[-1] - dts[0],
                notes=tuple(notes),
                candidates=len(dom.candidates),
            )
        )
    return out


def _confidence(seconds: float, low: float, high: float | None) -> str:
    """How wide Sen's interval is around the estimate: within ±25 % high, within a
    factor of 2 medium, else (or unbounded) low."""
    if high is None or seconds <= 0:
        return "low" if high is None else "high"
    if low >= 0.75 * seconds and high <= 1.25 * seconds:
        return "high"
    if low >= 0.5 * seconds and high <= 2 * seconds:
        return "medium"
    return "low"


def _victim(dom: OomDomain) -> ForecastVictim | None:
    v = dom.victim
    return None if v is None else ForecastVictim(v.pid, v.name, v.points)


def _task_fits(samples: list[_Sample]) -> dict[int, Fit]:
    """Each task's size against time, over the samples of the same (pid, name): a pid
    reused by another program starts a new series."""
    last = samples[-1].tasks
    fits = {}
    for pid, (name, _) in last.items():
        pts = [(s.t, s.tasks[pid][1]) for s in samples if s.tasks.get(pid, ("", 0))[0] == name]
        fits[pid] = fit([p[0] for p in pts], [float(p[1]) for p in pts])
    return fits


def _victim_at(
    dom: OomDomain, last: OomInputs, fits: dict[int, Fit], seconds: float
) -> ForecastVictim | None:
    """predict()'s victim for the domain with every task's size projected ``seconds``
    ahead along its own significant trend (the growth counted as rss)."""
    projected = []
    for task in last.tasks:
        f = fits.get(task.pid)
        grow = f.slope * seconds if f is not None and f.significant and f.slope > 0 else 0.0
        projected.append(_grown(task, grow))
    future = dataclasses.replace(last, tasks=tuple(projected))
    try:
        domains = predict(future, cgroup=dom.cgroup)
    except NoSuchCgroup:
        return None
    for d in domains:
        if d.cgroup == dom.cgroup:
            return _victim(d)
    return None


def _grown(task: OomTask, grow_kb: float) -> OomTask:
    if grow_kb <= 0:
        return task
    # Saturated: a projection far out must not make an int the kernel could not hold.
    rss = min(task.rss_kb + int(grow_kb), (1 << 62))
    return task._replace(rss_kb=rss)
