"""The command line: every command's options and help, apart from the commands' code,
so that parsing loads only the module of the command chosen (``main`` imports it).

argparse needs every sub-command's options for ``--help``, but not the code that runs
it: loading all of them (the exporter's server and sockets, the OOM model, the watch's
JSON lines) was most of the start-up of each command. The argument types that only
one command uses are here too, with what their help quotes (``SORT_KEYS``,
``MAX_HISTORY``); the exporter's, which resolve host names, import their module when
called.
"""

from __future__ import annotations

import argparse
import pwd

from ..backends import BACKEND_NAMES
from ..models import FIELD_NAMES
from ..sizes import parse_size
from .env import (
    MIN_INTERVAL,
    ascii_int,
    interval,
    interval_or_zero,
    non_negative_int,
    pid,
    pid_or_zero,
    positive_float,
    positive_int,
)
from .output import add_units_argument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .exporter import ListenAddress

    # What add_subparsers() returns (a private class of argparse), of main's parser class.
    _SubParsers = argparse._SubParsersAction[Any]

# CLI sort key → (MemStats field, biggest first?). Names sort A→Z, pids ascending,
# everything else biggest first, which is what one looks for.
SORT_KEYS: dict[str, tuple[str, bool]] = {
    "pid": ("pid", False),
    "name": ("name", False),
    "reserved": ("reserved_kb", True),
    "committed": ("committed_kb", True),
    "committed_pct": ("committed_pct", True),
    "pct": ("committed_pct", True),
    "anon": ("anon_kb", True),
    "file": ("file_kb", True),
    "shmem": ("shmem_kb", True),
    "swap": ("swap_kb", True),
    "oom_score": ("oom_score", True),
    "oom": ("oom_score", True),
    "oom_score_adj": ("oom_score_adj", True),
    "oom_adj": ("oom_score_adj", True),
}
for _field in FIELD_NAMES:  # the JSON field names work too (reserved_kb, ...)
    SORT_KEYS.setdefault(_field, (_field, _field not in ("pid", "name")))

# The commands, in the order --help lists them.
COMMANDS = ("stats", "total", "system", "oom", "watch", "demo", "exporter", "bpf")

# `tamalloc oom --forecast`'s defaults (tamalloc.forecast's; not imported: the model
# costs every command's start-up).
FORECAST_WINDOW = 30.0
FORECAST_INTERVAL = 1.0

# `tamalloc oom --top`'s default for the table (--json lists every candidate unless given).
DEFAULT_TOP = 10

# A sparkline is one character a sample: a longer one than any terminal is wide shows
# nothing more (and 10**20 overflowed the deque's C size).
MAX_HISTORY = 1000

_MIB = 1 << 20


def add_commands(commands: _SubParsers, only: str | None = None) -> None:
    """Every command's sub-parser, in the order ``--help`` lists them; with ``only``,
    that command's alone, which parses a command line that starts with its name just
    as all of them would (see ``main._parse``)."""
    adders = (_stats, _total, _system, _oom, _watch, _demo, _exporter, _bpf)
    for name, add in zip(COMMANDS, adders, strict=True):
        if only is None or name == only:
            add(commands)


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    """--backend, on the top level and on every command (a parser of its own for it,
    as argparse's parents=, cost each command's start-up argparse's translations
    looked up for one more parser)."""
    parser.add_argument(
        "--backend",
        choices=BACKEND_NAMES,
        default=argparse.SUPPRESS,  # so a sub-command default does not hide a global one
        help="kernel: the tamalloc syscalls; bpf: a BPF task iterator (root, or CAP_BPF and"
        " CAP_PERFMON); procfs: /proc and mmap (default: $TAMALLOC_BACKEND, else kernel"
        " when available, else bpf where `tamalloc bpf pin` pinned it (the exporter:"
        " where it loads), else procfs)",
    )


def _user(text: str) -> int:
    uid = ascii_int(text)
    if uid is not None:
        if uid < 0:
            raise argparse.ArgumentTypeError(f"not a user id: {text!r}")
        return uid
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no such user: {text!r}") from None


def _history(text: str) -> int:
    value = positive_int(text)
    if value > MAX_HISTORY:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_HISTORY}, not {text!r}")
    return value


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# The exporter's types need socket (and resolve names): imported when an option of
# `tamalloc exporter` is given, not at every start.
def listen_address(text: str) -> ListenAddress:
    from .exporter import listen_address as parse

    return parse(text)


def max_connections(text: str) -> int:
    from .exporter import max_connections as parse

    return parse(text)


def timeout(text: str) -> float:
    from .exporter import timeout as parse

    return parse(text)


def oom_window(text: str) -> float:
    from .exporter import oom_window as parse

    return parse(text)


def _stats(commands: _SubParsers) -> None:
    p = commands.add_parser(
        "stats",
        help="memory of processes (all, or the PIDs given)",
        description="Reserved (VSZ, virtual) and committed (RSS, resident) memory, swap"
        " and OOM score per process. No PID or 0 lists every process; when some are"
        " hidden from you, a line on stderr says so.",
    )
    add_backend_argument(p)
    p.add_argument("pids", nargs="*", type=pid_or_zero, metavar="PID", help="0 or none: all")
    p.add_argument(
        "--sort",
        choices=sorted(SORT_KEYS),
        metavar="FIELD",
        help=f"sort by FIELD (one of: {', '.join(sorted(SORT_KEYS))}); biggest"
        " first except pid and name; ties go to the larger committed (resident)"
        " memory, then the lower pid. Default pid, or oom_score with --top",
    )
    p.add_argument("-r", "--reverse", action="store_true", help="reverse the sort order")
    p.add_argument(
        "--top",
        type=positive_int,
        metavar="N",
        help="show the first N only: by default the N likeliest OOM victims,"
        " ranked by OOM score, equal scores by committed (resident) memory",
    )
    p.add_argument("--name", metavar="SUBSTR", help="names containing SUBSTR (any case)")
    p.add_argument("--user", type=_user, metavar="USER", help="processes of USER (name or uid)")
    add_units_argument(p, csv=True)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON list of MemStats objects")
    fmt.add_argument(
        "--csv",
        action="store_true",
        help="CSV with the MemStats field names (sizes in kB; --units mb: MiB"
        " columns named *_mib), percentages to 2 decimals",
    )
    p.set_defaults(needs_backend=True)


def _total(commands: _SubParsers) -> None:
    p = commands.add_parser(
        "total",
        help="memory summed over all processes",
        description="Reserved (VSZ), committed (RSS) and swap summed over every user"
        " process you may see, with the kernel's commit accounting (Committed_AS: memory"
        " promised to processes, not RSS; CommitLimit; overcommit mode).",
    )
    add_backend_argument(p)
    add_units_argument(p, csv=False)
    p.add_argument("--json", action="store_true", help="JSON object with the API's keys")
    p.set_defaults(needs_backend=True)


def _system(commands: _SubParsers) -> None:
    p = commands.add_parser(
        "system",
        help="system memory, CPU and disk",
        description="Memory total/used/free/available, swap, CPU use over an interval"
        " (as top) and CPU time shares since boot (all CPUs and each CPU), and disk usage"
        " (used % as df computes it). Read from /proc/system_stats when the module is"
        " loaded, else from /proc/meminfo, /proc/stat and statvfs; swap always from"
        " /proc/meminfo.",
    )
    add_backend_argument(p)
    p.add_argument("--path", default="/", help="filesystem to report (default /)")
    p.add_argument(
        "--interval",
        type=interval_or_zero,
        default=0.5,
        metavar="SECONDS",
        help=f"sample CPU use over SECONDS, at least {MIN_INTERVAL:g}, as top"
        " does (default 0.5; 0: since boot only)",
    )
    add_units_argument(p, csv=False)
    p.add_argument("--json", action="store_true", help="JSON object with the API's keys")
    # No backend is used, but a bad --backend/$TAMALLOC_BACKEND is still an error.
    p.set_defaults(needs_backend=False)


def _oom(commands: _SubParsers) -> None:
    p = commands.add_parser(
        "oom",
        help="predict the OOM killer's victim, system-wide and per cgroup",
        description="Predicts which process Linux's OOM killer (6.1's oom_badness) would"
        " kill if memory ran out now: in the whole system (against RAM + swap), and in"
        " each cgroup v2 with a finite memory.max (against that limit, its tasks only),"
        " with memory.oom.group kills of a whole cgroup. POINTS is the kernel's badness"
        " in pages (rss + swap + page tables + the oom_score_adj share), SCORE the 0..2000"
        " of /proc/PID/oom_score against that domain. Notes under each table say what"
        " the prediction cannot see: the allocating task (vm.oom_kill_allocating_task),"
        " cpuset and mempolicy OOMs, vm.panic_on_oom, a victim still exiting, swapoff's"
        " oom_origin, cgroup v1 limits.",
    )
    add_backend_argument(p)
    p.add_argument(
        "--cgroup",
        metavar="PATH",
        help="only the OOM domains that are or contain cgroup PATH (as in"
        " /proc/PID/cgroup, e.g. /system.slice/foo.service)",
    )
    p.add_argument(
        "--top",
        type=positive_int,
        metavar="N",
        help=f"candidates shown per domain (default {DEFAULT_TOP}; with --json, all"
        " unless given); whoever would die is shown as well",
    )
    p.add_argument(
        "--forecast",
        action="store_true",
        help="sample every domain's usage and every candidate's size over --window"
        " and say when each domain will run out (or that it is not growing) and whom"
        " its OOM killer will kill then: a robust (Theil-Sen) trend that a sawtooth,"
        " such as a garbage-collected heap, does not pass for (docs/oom.md)",
    )
    p.add_argument(
        "--window",
        type=positive_float,
        metavar="SECONDS",
        help=f"with --forecast: sample over SECONDS (default {FORECAST_WINDOW:g});"
        " a sawtooth reads as a leak unless the window holds three of its teeth",
    )
    p.add_argument(
        "--interval",
        type=interval,
        metavar="SECONDS",
        help=f"with --forecast: SECONDS between samples, at least {MIN_INTERVAL:g}"
        f" and at most the window (default {FORECAST_INTERVAL:g})",
    )
    add_units_argument(p, csv=False)
    p.add_argument(
        "--json",
        action="store_true",
        help="JSON list of the domains (sizes in kB and pages, plain numbers); with"
        " --forecast, of the domains' forecasts",
    )
    p.set_defaults(needs_backend=True)


def _watch(commands: _SubParsers) -> None:
    p = commands.add_parser(
        "watch",
        help="live view of one process",
        description="Refresh one process's memory every INTERVAL seconds with a sparkline"
        " history of committed vs reserved. Stops on Ctrl-C or when the process exits"
        " (exit status 0 either way).",
    )
    add_backend_argument(p)
    p.add_argument("pid", type=pid, metavar="PID")
    p.add_argument(
        "--interval",
        type=interval,
        default=2.0,
        metavar="SECONDS",
        help=f"seconds between samples, at least {MIN_INTERVAL:g} (default 2)",
    )
    p.add_argument("--count", type=positive_int, metavar="N", help="stop after N samples")
    p.add_argument(
        "--history",
        type=_history,
        default=40,
        metavar="N",
        help=f"samples kept for the sparklines (default 40, at most"
        f" {MAX_HISTORY}), each scaled from its minimum to its maximum, the"
        " range printed beside it",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="JSON lines: one object per sample (the MemStats keys and time),"
        " for as long as the process lives or --count N samples",
    )
    add_units_argument(p, csv=False)
    p.set_defaults(needs_backend=True)


def _demo(commands: _SubParsers) -> None:
    p = commands.add_parser(
        "demo",
        help="demonstrate lazy zeroing on a fresh buffer",
        description="Allocate a buffer, show reserved vs committed memory of this process,"
        " then touch every page checking that each byte reads 0 before it is written.",
    )
    add_backend_argument(p)
    p.add_argument(
        "--size", type=_size, default=10 * _MIB, help="bytes, e.g. 10M, 1GiB (default 10M)"
    )
    p.add_argument("--huge", action="store_true", help="2 MiB aligned, for huge pages")
    p.add_argument(
        "--pause",
        action="store_true",
        help="wait for Enter before allocating, before touching and before exit",
    )
    p.add_argument(
        "--delay",
        type=positive_float,
        metavar="SECONDS",
        help="sleep after each MiB so the growth can be watched",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="touch the buffer even when it is larger than the memory available"
        " now (MemAvailable): the buffer is mapped MAP_NORESERVE, so the"
        " allocation succeeds whatever its size, and touching it then ends in"
        " swapping and the OOM killer",
    )
    p.set_defaults(needs_backend=True)


def _exporter(commands: _SubParsers) -> None:
    # Imported here: the figures its help quotes, of a package (two modules) that
    # every other command's start-up would load for nothing.
    from ..exporter.limits import (
        DEFAULT_HEADER_TIMEOUT,
        DEFAULT_IDLE_TIMEOUT,
        DEFAULT_LISTEN,
        DEFAULT_MAX_CONNECTIONS,
        DEFAULT_OOM_WINDOW,
        MAX_HEAD_BYTES,
    )

    p = commands.add_parser(
        "exporter",
        help="Prometheus metrics over HTTP, or into a textfile",
        description="Serve Prometheus metrics at /metrics: commit accounting (Committed_AS,"
        " CommitLimit, MemTotal, overcommit mode), reserved (VSZ), resident (RSS) and swap"
        " summed over every user process, the same per process for the top N by OOM score"
        " and the top N by resident memory, and the scrape's own duration and errors;"
        " read at each scrape. With --oom, also each OOM domain's limit, usage and"
        " headroom and the victim its OOM killer would choose, when it will run out"
        " and who dies then (forecast over --oom-window), and the cgroups'"
        " memory.events and memory pressure. With --textfile, write"
        " them for node_exporter's textfile collector instead (atomically: a reader"
        " never sees half a file). Needs the 'exporter' extra (prometheus_client).",
    )
    add_backend_argument(p)
    p.add_argument(
        "--listen",
        type=listen_address,
        default=None,
        metavar="ADDR:PORT",
        help=f"where to serve /metrics (default {DEFAULT_LISTEN}, loopback"
        " only; ':PORT' for every interface, port 0 for a free one)",
    )
    p.add_argument(
        "--textfile",
        metavar="PATH",
        help="write the metrics to PATH (a *.prom file in node_exporter's"
        " --collector.textfile.directory) instead of serving them",
    )
    p.add_argument(
        "--interval",
        type=positive_float,
        metavar="SECONDS",
        help="with --textfile: write again every SECONDS until stopped"
        " (default: write once and exit)",
    )
    # positive_int as `stats --top`: the same option takes the same numbers.
    p.add_argument(
        "--top",
        type=positive_int,
        default=None,
        metavar="N",
        help="export per-process figures for the N processes with the highest"
        " OOM score and the N with the most resident memory (default 10)",
    )
    p.add_argument(
        "--oom",
        action="store_true",
        help="also export the OOM prediction of `tamalloc oom`: limit, usage and"
        " headroom of the system and of each cgroup with a memory.max, and the"
        " process its OOM killer would kill now; the forecast of `tamalloc oom"
        " --forecast` (seconds to the OOM, the victim then); the exported cgroups'"
        " memory.events and memory.pressure counters. Off by default: each scrape"
        " then walks every process a second time and reads the whole cgroup"
        " tree",
    )
    p.add_argument(
        "--oom-domains",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="with --oom: export the N cgroups with the least headroom, besides"
        " the system (default 20; 0: the system alone), and the N others with"
        " the soonest forecast OOM; tamalloc_oom_domains counts them all",
    )
    p.add_argument(
        "--oom-window",
        type=oom_window,
        default=None,
        metavar="SECONDS",
        help="with --oom: forecast each domain's OOM (tamalloc_oom_domain_seconds_to_oom)"
        f" from the scrapes of the last SECONDS (default {DEFAULT_OOM_WINDOW:g}: 10 to 40"
        " scrapes at Prometheus's usual 15 s to 1 min; a longer window tells a"
        " garbage collector's sawtooth from a leak better, a shorter one sees a leak"
        " start or stop sooner). A textfile written once has no window",
    )
    p.add_argument(
        "--max-connections",
        type=max_connections,
        default=None,
        metavar="N",
        help=f"serve at most N connections at once, one thread each (default"
        f" {DEFAULT_MAX_CONNECTIONS}); past N, a new connection takes the place"
        " of the one that has waited longest for its request, or is answered"
        " 503 when all N are answering one",
    )
    p.add_argument(
        "--header-timeout",
        type=timeout,
        default=None,
        metavar="SECONDS",
        help="close a connection that has not sent its whole request head"
        f" (at most {MAX_HEAD_BYTES // 1024} KiB) within SECONDS of connecting"
        " or of its first byte, and one that does not take its answer within"
        f" SECONDS (default {DEFAULT_HEADER_TIMEOUT:g})",
    )
    p.add_argument(
        "--idle-timeout",
        type=timeout,
        default=None,
        metavar="SECONDS",
        help="close a kept-alive connection that sends no new request for"
        f" SECONDS (default {DEFAULT_IDLE_TIMEOUT:g}; Prometheus reopens it)",
    )
    # Long-running: worth loading the bpf backend's program when nothing is pinned.
    p.set_defaults(needs_backend=True, long_running=True)


def _bpf(commands: _SubParsers) -> None:
    p = commands.add_parser(
        "bpf",
        help="pin the bpf backend's task iterator for every later command",
        description="On a stock kernel with BTF (5.8+), the bpf backend reads every"
        " process with one pass of a BPF task iterator. Loading it costs 20-70 ms a"
        " process, so one-shot commands use it only where it is pinned in bpffs. pin:"
        " load it and pin it in /sys/fs/bpf/tamalloc (root only; the pin is root's"
        " alone, mode 0600, as it shows every process whatever hidepid says; until"
        " reboot); commands run as root then use it. unpin: remove every tamalloc pin."
        " status: whether this user can use the pin (exit status 1 if not).",
    )
    add_backend_argument(p)
    p.add_argument("action", choices=("pin", "unpin", "status"), help="pin, unpin or status")
    p.set_defaults(needs_backend=False)
