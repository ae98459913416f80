"""What a scrape of ``tamalloc exporter`` reads and exports: a ``prometheus_client``
collector and its registry.

Everything is read when Prometheus scrapes, not on a timer: one ``all_mem_stats()``
call gives the per-process figures and their sums (so the totals and the top processes
of a scrape are one consistent picture), and the system's commit accounting comes from
``/proc/meminfo`` (``total_mem_stats()`` would walk every process a second time; on
the kernel backend it is called only to learn whether processes are hidden, when some
may be). Scrapes are serialized: two Prometheus servers scraping at once cost one scan
each, never more.

With ``oom=True`` a scrape also makes one ``predict_oom()``: the OOM domains (the
system and every cgroup with a finite memory.max), their headroom and the victim each
would kill. It is opt-in because it walks every process a second time and reads the
cgroup tree, which the default scrape (benchmarked at most twice the scan) must not pay.
The same inputs feed a :class:`~tamalloc.forecast.ForecastWindow` kept across scrapes
(read once, used twice): when each domain will run out and who dies then. The exported
cgroups' memory.events and memory.pressure counters, and the system's
/proc/pressure/memory, come with it.

Needs the ``exporter`` extra (prometheus_client).
"""

from __future__ import annotations

import heapq
import operator
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from .. import forecast as forecast_model
from .. import oom as oom_model
from .._version import __version__
from ..backends import Backend, get_backend
from ..cgroupfs import (
    PRESSURE_MEMORY,
    cgroup2_mount,
    cgroup_directory,
    read_memory_events,
    read_pressure,
)
from ..errors import TamallocError
from ..forecast import DomainForecast, ForecastWindow
from ..models import MemStats
from ..oom import OomDomain, OomInputs
from ..process_visibility import kernel_visibility, procfs_visibility
from ..system import read_meminfo, read_overcommit_memory
from .limits import DEFAULT_OOM_WINDOW

__all__ = [
    "DEFAULT_OOM_DOMAINS",
    "DEFAULT_OOM_WINDOW",
    "DEFAULT_TOP",
    "FORECAST_SAMPLES",
    "MemoryCollector",
    "exported_domains",
    "least_headroom_domains",
    "make_registry",
    "render",
    "top_processes",
]

DEFAULT_TOP = 10
DEFAULT_OOM_DOMAINS = 20
# DEFAULT_OOM_WINDOW, the forecast's window (--oom-window, in limits for the help):
# Prometheus scrapes every 15 s to 1 min (its own default is 1 min), so 10 minutes hold
# 10 to 40 samples; the forecast needs 6 for a trend (tamalloc.forecast.MIN_SAMPLES),
# and a window three times a garbage collector's period to tell its sawtooth from a
# leak (the envelope of its thirds); a leak that stops reads as stopped after about a
# third of the window.
# At most this many samples in the window, spaced at least window / FORECAST_SAMPLES
# apart (a scrape closer to the last sample forecasts without adding one): two
# Prometheus servers, or a person with curl, do not shorten the window's span, and the
# cost of a forecast (pairwise slopes: n^2 / 2 per domain and per task) stays bounded.
FORECAST_SAMPLES = 40
# A scrape a little early (Prometheus's jitter) still adds its sample.
_SPACING_SLACK = 0.9
# No forecast is exported before the window spans this share of --oom-window: in the
# first minutes after the exporter starts, the rising ramp of a garbage collector's
# sawtooth (up to half the window long) is all the window holds, and reads as a leak.
# A leak already running when the exporter starts is forecast that much later.
_MIN_SPAN_SHARE = 0.5
_KIB = 1024
_RESTRICT_PATH = "/proc/sys/vm/tamalloc_stats_restrict"
_CAP_SYS_PTRACE = 19  # include/uapi/linux/capability.h
_STATUS_PATH = "/proc/self/status"
# Per-process series carry these labels: the name alone is ambiguous, the pid alone unreadable.
_PROCESS_LABELS = ("pid", "name")
_TOP_NOTE = (
    " Exported only for the processes among the top N by OOM score or by resident memory"
    " (tamalloc exporter --top N), so at most 2N processes."
)
# Cgroup paths always start with "/", so this label value cannot be taken by a cgroup.
_SYSTEM_DOMAIN = "system"
_OOM_NOTE = (
    ' Label domain is "system" for the whole machine, else the cgroup\'s path; exported'
    " for the system, the N cgroups with the least headroom and the N with the soonest"
    " forecast OOM (tamalloc exporter --oom-domains N), so at most 2N + 1 domains."
)
_CGROUP_NOTE = (
    " Label cgroup is the cgroup's path; exported for the cgroups of the"
    " tamalloc_oom_domain_* series (tamalloc exporter --oom-domains N)."
)
_USEC_PER_S = 1_000_000


# Keys and fields as C callables: a scrape of 1,000 processes on the kernel backend
# must cost at most twice the scan itself, which takes about a millisecond.
_BY_OOM = operator.itemgetter(
    MemStats._fields.index("oom_score"), MemStats._fields.index("committed_kb")
)
_BY_RESIDENT = operator.itemgetter(MemStats._fields.index("committed_kb"))
_RESERVED = operator.itemgetter(MemStats._fields.index("reserved_kb"))
_SWAP = operator.itemgetter(MemStats._fields.index("swap_kb"))


@dataclass(frozen=True, slots=True)
class _System:
    """Commit accounting of the whole system, in kB as the kernel reports it."""

    committed_as_kb: int
    commit_limit_kb: int
    mem_total_kb: int
    overcommit_memory: int
    complete: bool  # the exporter sees every user process


def top_processes(stats: Iterable[MemStats], top: int) -> list[MemStats]:
    """The union of the ``top`` processes with the highest OOM score (equal scores by
    resident memory, as ``tamalloc stats --top``) and the ``top`` with the most resident
    memory, by increasing pid: at most ``2 * top`` processes however many exist."""
    if top <= 0:
        return []
    stats = stats if isinstance(stats, list) else list(stats)
    by_oom = heapq.nlargest(top, stats, key=_BY_OOM)
    by_rss = heapq.nlargest(top, stats, key=_BY_RESIDENT)
    chosen = {s.pid: s for s in (*by_oom, *by_rss)}
    return [chosen[pid] for pid in sorted(chosen)]


def least_headroom_domains(domains: Iterable[OomDomain], limit: int) -> list[OomDomain]:
    """The system domain and the ``limit`` cgroup domains with the least headroom (the
    effective one: a small ancestor's limit counts) as a share of their limit (what
    TamallocCgroupHeadroomLow alerts on: a large cgroup 5% from its OOM must not be left
    out behind small ones with less room in bytes; equal shares by path, so the choice
    does not flicker between scrapes), the system first and then by path: at most
    ``limit + 1`` domains however many cgroups are limited."""
    domains = list(domains)
    system = [d for d in domains if d.kind == "system"]
    cgroups = heapq.nsmallest(
        max(limit, 0),
        (d for d in domains if d.kind == "cgroup"),
        key=lambda d: (d.headroom_kb / max(d.limit_kb, 1), d.cgroup or ""),
    )
    return system + sorted(cgroups, key=lambda d: d.cgroup or "")


def exported_domains(
    domains: Iterable[OomDomain], forecasts: Iterable[DomainForecast], limit: int
) -> list[OomDomain]:
    """The domains of :func:`least_headroom_domains`, and the ``limit`` cgroup domains
    with the soonest forecast OOM among the others (a cgroup half full that fills fast
    runs out before one nearly full that holds still; equal times by path): the system
    first and then by path, at most ``2 * limit + 1`` domains."""
    domains = list(domains)
    chosen = least_headroom_domains(domains, limit)
    taken = {d.cgroup for d in chosen}
    soonest = heapq.nsmallest(
        max(limit, 0),
        (
            f
            for f in forecasts
            if f.kind == "cgroup" and f.seconds_to_oom is not None and f.domain not in taken
        ),
        key=lambda f: (f.seconds_to_oom, f.domain or ""),
    )
    wanted = {f.domain for f in soonest}
    extra = [d for d in domains if d.kind == "cgroup" and d.cgroup in wanted]
    system = [d for d in chosen if d.kind == "system"]
    cgroups = [d for d in chosen if d.kind == "cgroup"] + extra
    return system + sorted(cgroups, key=lambda d: d.cgroup or "")


def _restrict_off() -> bool | None:
    """Whether ``vm.tamalloc_stats_restrict`` is 0; None when it cannot be read."""
    try:
        with open(_RESTRICT_PATH, "rb") as f:
            return f.read().strip() == b"0"
    except OSError:
        return None


def _has_cap_sys_ptrace() -> bool:
    """Whether this process has CAP_SYS_PTRACE in its effective set, which passes the
    kernel's ptrace_may_access() check for every process (root has it)."""
    try:
        with open(_STATUS_PATH, "rb") as f:
            for line in f:
                if line.startswith(b"CapEff:"):
                    return bool(int(line.split()[1], 16) >> _CAP_SYS_PTRACE & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def _kernel_hides_nothing(has_cap_sys_ptrace: Callable[[], bool] = _has_cap_sys_ptrace) -> bool:
    """Whether the kernel backend can hide no process from this caller, known without a
    system call: ``vm.tamalloc_stats_restrict`` is 0, or the caller has CAP_SYS_PTRACE.
    An unreadable sysctl counts as restricting (the kernel is then asked)."""
    off = _restrict_off()
    if off is None:
        return False
    return off or has_cap_sys_ptrace()


def _system(
    backend: Backend, has_cap_sys_ptrace: Callable[[], bool] = _has_cap_sys_ptrace
) -> _System:
    """Commit accounting from /proc/meminfo on both backends (the syscall reports the
    same kernel counters), and whether processes are hidden. On the kernel backend that
    costs a get_total_mem_stats call, which walks every process again: it is made only
    when the caller may miss some, so that a privileged exporter's scrape stays within
    twice the scan."""
    meminfo = read_meminfo()
    if backend.name == "kernel":
        some_hidden = (
            False
            if _kernel_hides_nothing(has_cap_sys_ptrace)
            else backend.total_mem_stats().some_hidden
        )
        visibility = kernel_visibility(some_hidden)
    else:
        visibility = procfs_visibility()
    return _System(
        meminfo.get("Committed_AS", 0),
        meminfo.get("CommitLimit", 0),
        meminfo.get("MemTotal", 0),
        read_overcommit_memory(),
        visibility.complete,
    )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class MemoryCollector(Collector):
    """The tamalloc metrics, read at each ``collect()`` (each scrape).

    ``backend``: "kernel", "procfs" or None for the default (resolved now, so a kernel
    backend on a stock kernel fails here, not at the first scrape). ``top``: how many
    processes each ranking exports. ``oom``: also export the OOM prediction, from one
    ``predict_oom()`` a scrape on the same backend, for the system and the
    ``oom_domains`` cgroups with the least headroom, and its forecast over the last
    ``oom_window`` seconds of scrapes (``clock``: monotonic seconds), with the exported
    cgroups' memory.events and memory.pressure counters. ``cgroup_mount`` (root,
    mount point) and ``pressure_path`` say where those are read (default: the cgroup v2
    mount of /proc/self/mountinfo at each scrape, and /proc/pressure/memory).
    ``on_error`` receives one line per failed part of a scrape (the scrape itself still
    answers, with ``tamalloc_scrape_success`` 0).
    """

    def __init__(
        self,
        *,
        backend: str | None = None,
        top: int = DEFAULT_TOP,
        oom: bool = False,
        oom_domains: int = DEFAULT_OOM_DOMAINS,
        oom_window: float = DEFAULT_OOM_WINDOW,
        on_error: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        cgroup_mount: tuple[str, str] | None = None,
        pressure_path: str = PRESSURE_MEMORY,
    ) -> None:
        if top < 0:
            raise ValueError(f"top must be >= 0, not {top}")
        if oom_domains < 0:
            raise ValueError(f"oom_domains must be >= 0, not {oom_domains}")
        self.backend: Backend = get_backend(backend)
        self.top = top
        self.oom = oom
        self.oom_domains = oom_domains
        # ValueError for a window that is not a positive number of seconds.
        self.window = ForecastWindow(oom_window, max_samples=FORECAST_SAMPLES)
        self._spacing = self.window.window / FORECAST_SAMPLES * _SPACING_SLACK
        self._min_span = self.window.window * _MIN_SPAN_SHARE
        self._last_sample: float | None = None
        self._clock = clock
        self._cgroup_mount = cgroup_mount
        self._pressure_path = pressure_path
        self._on_error = on_error
        self._lock = threading.Lock()
        self._failed_scrapes = 0
        self._cap_sys_ptrace: bool | None = None

    def _has_cap_sys_ptrace(self) -> bool:
        # Read once: a process's effective capabilities change only by its own capset()
        # or execve(), which the exporter never makes, and /proc/self/status is the
        # dearest file of a scrape (the kernel formats some 55 lines for it).
        if self._cap_sys_ptrace is None:
            self._cap_sys_ptrace = _has_cap_sys_ptrace()
        return self._cap_sys_ptrace

    def describe(self) -> Iterable[Metric]:
        return []  # nothing is read when the collector is registered

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            metrics = self._collect()
        yield from metrics

    def _fail(self, what: str, err: Exception) -> None:
        if self._on_error is not None:
            detail = (
                str(err)
                if isinstance(err, (TamallocError, OSError))
                else (f"{type(err).__name__}: {err}")
            )
            self._on_error(f"scrape: cannot read {what}: {detail}")

    def _collect(self) -> list[Metric]:
        start = time.perf_counter()
        ok = True
        metrics: list[Metric] = []
        info = InfoMetricFamily(
            "tamalloc_exporter",
            "Where the figures come from: backend kernel (the tamalloc system calls of a"
            " patched kernel) or procfs (/proc), and the tamalloc version.",
            value={"backend": self.backend.name, "version": __version__},
        )
        metrics.append(info)
        # Any failure (not only the expected TamallocError and OSError) becomes a line on
        # stderr and tamalloc_scrape_success 0: the server keeps answering.
        try:
            processes: list[MemStats] | None = self.backend.all_mem_stats()
        except Exception as err:
            processes = None
            ok = False
            self._fail("the processes", err)
        try:
            system: _System | None = _system(self.backend, self._has_cap_sys_ptrace)
        except Exception as err:
            system = None
            ok = False
            self._fail("the system's commit accounting", err)
        domains: list[OomDomain] | None = None
        forecasts: list[DomainForecast] = []
        if self.oom:
            try:
                # Looked up in the module at each scrape (tests feed recorded inputs
                # through tamalloc.oom.collect_inputs). The backend is named, so the
                # prediction reads the same data source as the rest of the scrape.
                inputs = oom_model.collect_inputs(self.backend.name)
                domains = oom_model.predict(inputs)
            except Exception as err:
                ok = False
                self._fail("the OOM prediction", err)
            else:
                try:
                    forecasts = self._forecast(inputs)
                except Exception as err:
                    ok = False
                    self._fail("the OOM forecast", err)
        if system is not None:
            metrics += self._system_metrics(system)
        if processes is not None:
            metrics += self._process_metrics(processes)
        if domains is not None:
            metrics += self._oom_metrics(domains, forecasts)
        if not ok:
            self._failed_scrapes += 1
        metrics += [
            _gauge(
                "tamalloc_scrape_success",
                "1 if this scrape read every figure, 0 if a part failed (the exporter's"
                " stderr says which).",
                1 if ok else 0,
            ),
            CounterMetricFamily(
                "tamalloc_scrape_errors",
                "Scrapes since the exporter started in which a part failed to read.",
                value=self._failed_scrapes,
            ),
            _gauge(
                "tamalloc_scrape_duration_seconds",
                "Seconds this scrape took to read and compute every tamalloc figure.",
                time.perf_counter() - start,
            ),
        ]
        return metrics

    def _forecast(self, inputs: OomInputs) -> list[DomainForecast]:
        """Adds this scrape's inputs to the window unless the last sample is too recent
        (see FORECAST_SAMPLES), then forecasts from now."""
        now = self._clock()
        last = self._last_sample
        if last is not None and now < last:
            # Only a clock that is not monotonic goes back: start the window afresh
            # rather than fit samples out of order.
            self.window.clear()
            last = None
        if last is None or now - last >= self._spacing:
            self.window.add(now, inputs)
            self._last_sample = now
        return self.window.forecast(now)

    @staticmethod
    def _system_metrics(system: _System) -> list[Metric]:
        metrics: list[Metric] = [
            _gauge(
                "tamalloc_system_committed_as_bytes",
                "Memory the kernel has promised to all processes (Committed_AS of"
                " /proc/meminfo): what they may still touch, not what is resident.",
                system.committed_as_kb * _KIB,
            ),
            _gauge(
                "tamalloc_system_commit_limit_bytes",
                "Ceiling for Committed_AS (CommitLimit of /proc/meminfo): allocations"
                " beyond it fail only when vm.overcommit_memory is 2.",
                system.commit_limit_kb * _KIB,
            ),
            _gauge(
                "tamalloc_system_memory_bytes",
                "Usable RAM (MemTotal of /proc/meminfo).",
                system.mem_total_kb * _KIB,
            ),
            _gauge(
                "tamalloc_system_overcommit_mode",
                "vm.overcommit_memory: 0 heuristic overcommit, 1 always overcommit,"
                " 2 never (Committed_AS may not pass CommitLimit).",
                system.overcommit_memory,
            ),
            _gauge(
                "tamalloc_processes_all_visible",
                "1 if the exporter sees every user process, 0 if some are or may be"
                " hidden from it and left out of every figure (run it as root).",
                1 if system.complete else 0,
            ),
        ]
        # No count of hidden processes: the kernel gives none, since a count would let
        # any caller follow other users' process starts and exits.
        return metrics

    def _process_metrics(self, stats: list[MemStats]) -> list[Metric]:
        reserved = sum(map(_RESERVED, stats))
        resident = sum(map(_BY_RESIDENT, stats))
        swap = sum(map(_SWAP, stats))
        metrics: list[Metric] = [
            _gauge(
                "tamalloc_processes",
                "User processes this scrape saw (kernel threads are not counted).",
                len(stats),
            ),
            _gauge(
                "tamalloc_processes_reserved_bytes",
                "Virtual memory reserved by all user processes: VmSize (VSZ) summed.",
                reserved * _KIB,
            ),
            _gauge(
                "tamalloc_processes_resident_bytes",
                "Memory of all user processes resident in RAM: VmRSS (RSS) summed, so"
                " a page shared by two processes counts twice.",
                resident * _KIB,
            ),
            _gauge(
                "tamalloc_processes_swap_bytes",
                "Memory of all user processes swapped out: VmSwap summed.",
                swap * _KIB,
            ),
        ]
        # Four figures a process (oom_score_adj is in the score, and each sample costs
        # formatting time at every scrape).
        families = {
            "reserved": GaugeMetricFamily(
                "tamalloc_process_reserved_bytes",
                "Virtual memory the process has reserved (VmSize, VSZ)." + _TOP_NOTE,
                labels=_PROCESS_LABELS,
            ),
            "resident": GaugeMetricFamily(
                "tamalloc_process_resident_bytes",
                "Memory of the process resident in RAM (VmRSS, RSS)." + _TOP_NOTE,
                labels=_PROCESS_LABELS,
            ),
            "swap": GaugeMetricFamily(
                "tamalloc_process_swap_bytes",
                "Memory of the process swapped out (VmSwap)." + _TOP_NOTE,
                labels=_PROCESS_LABELS,
            ),
            "oom": GaugeMetricFamily(
                "tamalloc_process_oom_score",
                "The process's OOM score as /proc/PID/oom_score prints it: (1000 + its"
                " share of RAM + swap in thousandths + oom_score_adj) x 2/3, so 666 for a"
                " small process with no adjustment, 1333 for one holding everything; the"
                " OOM killer kills the highest." + _TOP_NOTE,
                labels=_PROCESS_LABELS,
            ),
        }
        for s in top_processes(stats, self.top):
            labels = [str(s.pid), s.name]
            families["reserved"].add_metric(labels, s.reserved_kb * _KIB)
            families["resident"].add_metric(labels, s.committed_kb * _KIB)
            families["swap"].add_metric(labels, s.swap_kb * _KIB)
            families["oom"].add_metric(labels, s.oom_score)
        return metrics + list(families.values())

    def _oom_metrics(
        self, domains: list[OomDomain], forecasts: list[DomainForecast]
    ) -> list[Metric]:
        limited = sum(1 for d in domains if d.kind == "cgroup")
        label = ["domain"]
        limit = GaugeMetricFamily(
            "tamalloc_oom_domain_limit_bytes",
            "Memory an OOM domain may use before its OOM killer runs: RAM + swap for the"
            " system; for a cgroup, memory.max plus the swap it may use (memory.swap.max,"
            " at most the swap there is; none when vm.swappiness is 0)." + _OOM_NOTE,
            labels=label,
        )
        usage = GaugeMetricFamily(
            "tamalloc_oom_domain_usage_bytes",
            "Memory an OOM domain uses now, as its limit counts it: for the system RAM in"
            " use (MemTotal - MemAvailable) + swap in use; for a cgroup memory.current"
            " (+ memory.swap.current when its limit includes swap), page cache the kernel"
            " would reclaim before an OOM included." + _OOM_NOTE,
            labels=label,
        )
        headroom = GaugeMetricFamily(
            "tamalloc_oom_domain_headroom_bytes",
            "Bytes an OOM domain can still take before its OOM killer runs: limit minus"
            " usage, 0 at the limit. For a cgroup, the least of that and the same of each"
            " ancestor with a memory.max (a smaller ancestor's OOM comes first), and a"
            " floor: reclaimable page cache counts as used." + _OOM_NOTE,
            labels=label,
        )
        victim = GaugeMetricFamily(
            "tamalloc_oom_victim",
            "Who the kernel would kill if this domain ran out of memory now (tamalloc's"
            " model of the Linux OOM killer): the victim's OOM score against the domain,"
            " 0..2000 like /proc/PID/oom_score but weighed against the domain's limit."
            " One series per domain with a victim; none when nothing in it can be killed"
            " or an earlier victim is still exiting." + _OOM_NOTE,
            labels=["domain", *_PROCESS_LABELS],
        )
        group = GaugeMetricFamily(
            "tamalloc_oom_group_kill",
            "1 when an OOM in this domain now would kill the whole cgroup named by label"
            " group, because memory.oom.group is set there: every process in it dies"
            " with the victim, not the victim alone." + _OOM_NOTE,
            labels=["domain", "group"],
        )
        killed = GaugeMetricFamily(
            "tamalloc_oom_killed_processes",
            "Processes an OOM in this domain now would kill: 1 (the victim); under"
            " memory.oom.group every process of that cgroup but those with oom_score_adj"
            " -1000; 0 when it would kill none." + _OOM_NOTE,
            labels=label,
        )
        seconds = GaugeMetricFamily(
            "tamalloc_oom_domain_seconds_to_oom",
            "Seconds until this domain's OOM killer runs, forecast from its headroom over"
            " the last scrapes (tamalloc exporter --oom-window; a robust slope that a"
            " garbage collector's sawtooth does not pass for a leak). Absent when the"
            " domain is not growing, or the window holds too few samples or spans less"
            " than half its length (the first minutes after the exporter starts)." + _OOM_NOTE,
            labels=label,
        )
        growth = GaugeMetricFamily(
            "tamalloc_oom_domain_growth_bytes_per_second",
            "How fast this domain's usage grows, by the same forecast; absent when it is"
            " not growing." + _OOM_NOTE,
            labels=label,
        )
        future = InfoMetricFamily(
            "tamalloc_oom_domain_forecast_victim",
            "Who the kernel will kill when this domain runs out, by the forecast: each"
            " process's own growth projected to that moment, so not always today's"
            " victim (tamalloc_oom_victim). Absent when the domain is not growing." + _OOM_NOTE,
            labels=label,
        )
        growing = [
            f for f in forecasts if f.seconds_to_oom is not None and f.span_s >= self._min_span
        ]
        by_domain = {f.domain: f for f in growing}
        exported = exported_domains(domains, growing, self.oom_domains)
        for d in exported:
            name = _SYSTEM_DOMAIN if d.cgroup is None else d.cgroup
            limit.add_metric([name], d.limit_kb * _KIB)
            usage.add_metric([name], d.usage_kb * _KIB)
            headroom.add_metric([name], d.headroom_kb * _KIB)
            if d.victim is not None:
                victim.add_metric([name, str(d.victim.pid), d.victim.name], d.victim.score)
            if d.kill_group is not None:
                group.add_metric([name, d.kill_group], 1)
            killed.add_metric([name], len(d.killed_pids))
            f = by_domain.get(d.cgroup)
            if f is None or f.seconds_to_oom is None:
                continue
            seconds.add_metric([name], f.seconds_to_oom)
            if f.growth_kb_per_s is not None:
                growth.add_metric([name], f.growth_kb_per_s * _KIB)
            if f.victim_at_oom is not None:
                # Labels of the process's own choosing: the text format escapes them.
                future.add_metric(
                    [name],
                    {"pid": str(f.victim_at_oom.pid), "name": f.victim_at_oom.name},
                )
        return [
            _gauge(
                "tamalloc_oom_domains",
                "Cgroups with a finite memory.max, each an OOM domain of its own, all of"
                " them: the tamalloc_oom_domain_* series cover only the N with the least"
                " headroom (tamalloc exporter --oom-domains N), and the system.",
                limited,
            ),
            limit,
            usage,
            headroom,
            victim,
            group,
            killed,
            _gauge(
                "tamalloc_oom_forecast_samples",
                "Samples in the forecast's window (at most one a scrape, one every"
                f" --oom-window / {FORECAST_SAMPLES} seconds); a forecast needs"
                f" {forecast_model.MIN_SAMPLES}: a textfile written once has 1, so no"
                " tamalloc_oom_domain_seconds_to_oom.",
                len(self.window),
            ),
            seconds,
            growth,
            future,
            *self._cgroup_counters([d.cgroup for d in exported if d.cgroup is not None]),
        ]

    def _cgroup_counters(self, paths: list[str]) -> list[Metric]:
        """memory.events and memory.pressure of each of ``paths``, and the system's
        memory pressure. A cgroup removed meanwhile, or a file that cannot be read
        (PSI off: psi=0), leaves its series out without failing the scrape: cgroups
        come and go between the walk and this read."""
        events = CounterMetricFamily(
            "tamalloc_cgroup_memory_events",
            "Events of the cgroup and its descendants since it was created (memory.events):"
            " high (throttled over memory.high), max (reclaim at memory.max), oom (the"
            " limit reached, reclaim failed), oom_kill (processes killed by an OOM"
            " killer), oom_group_kill (whole-group OOM kills)." + _CGROUP_NOTE,
            labels=["cgroup", "event"],
        )
        pressure = CounterMetricFamily(
            "tamalloc_cgroup_memory_pressure_seconds",
            "Time the cgroup's tasks stalled waiting for memory (memory.pressure, PSI):"
            " kind some (at least one task stalled), full (all non-idle tasks stalled at"
            " once). rate() of it is the share of time lost." + _CGROUP_NOTE,
            labels=["cgroup", "kind"],
        )
        mount = self._cgroup_mount if self._cgroup_mount is not None else cgroup2_mount()
        for path in paths:
            directory = None if mount is None else cgroup_directory(mount, path)
            if directory is None:
                continue
            for event, count in sorted((read_memory_events(directory) or {}).items()):
                if event != "low":  # memory.low is protection, not pressure
                    events.add_metric([path, event], count)
            totals = read_pressure(f"{directory}/memory.pressure") or {}
            for kind, usec in sorted(totals.items()):
                pressure.add_metric([path, kind], usec / _USEC_PER_S)
        system = CounterMetricFamily(
            "tamalloc_system_memory_pressure_seconds",
            "Time tasks stalled waiting for memory, machine-wide (/proc/pressure/memory,"
            " PSI): kind some (at least one task stalled), full (all non-idle tasks"
            " at once). node_exporter's pressure collector exports the same.",
            labels=["kind"],
        )
        for kind, usec in sorted((read_pressure(self._pressure_path) or {}).items()):
            system.add_metric([kind], usec / _USEC_PER_S)
        return [events, pressure, system]


def make_registry(collector: MemoryCollector) -> CollectorRegistry:
    """A registry holding ``collector`` alone: no Python process or GC metrics of the
    exporter itself, which would clash with node_exporter's in a textfile."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """One scrape in the Prometheus text format (0.0.4)."""
    return generate_latest(registry)
