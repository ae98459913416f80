"""``tamalloc exporter``: its options, and the one-line errors of a port in use or an
unwritable textfile. The metrics, the server and the textfile writer are in the
:mod:`tamalloc.exporter` package."""

from __future__ import annotations

import argparse
import errno
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import TamallocError
from ..exporter.server import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    MAX_CONNECTIONS_RANGE,
    MAX_HEAD_BYTES,
    TIMEOUT_RANGE,
    Limits,
    make_server,
)
from ..exporter.service import raise_open_files_limit, stop_on_sigterm
from .env import (
    Environment,
    ExitStatus,
    UsageError,
    non_negative_int,
    positive_float,
    positive_int,
)

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

# Not among the ports of the Prometheus project's list of exporter defaults that we
# know of; --listen changes it.
DEFAULT_PORT = 9847
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
_MISSING = (
    "tamalloc exporter needs prometheus_client: pip install prometheus_client"
    " (from a checkout: pip install '.[exporter]'; Debian: python3-prometheus-client)"
)


class ExporterError(TamallocError):
    """A runtime failure of the exporter (port in use, unwritable textfile): exit 1."""


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int
    family: socket.AddressFamily

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.family == socket.AF_INET6 else self.host
        return f"{host}:{self.port}"


def listen_address(text: str) -> ListenAddress:
    """``ADDR:PORT``: an IPv4 address, ``[IPv6]``, or a host name that resolves; an
    empty ADDR (``:9847``) is every IPv4 interface. PORT 0 picks a free port."""
    host, sep, port_text = text.rpartition(":")
    # isascii: str.isdigit() is also true of Arabic-Indic digits, which int() reads.
    if not sep or not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
        raise argparse.ArgumentTypeError(
            f"expected ADDR:PORT with a port 0-65535 (e.g. {DEFAULT_LISTEN}), not {text!r}")
    port = int(port_text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        import ipaddress  # 3 ms of every command's start-up, for [IPv6] only

        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an IPv6 address: {host!r}") from None
        return ListenAddress(host, port, socket.AF_INET6)
    if not host:
        return ListenAddress("0.0.0.0", port, socket.AF_INET)
    if ":" in host:
        raise argparse.ArgumentTypeError(
            f"write an IPv6 address in brackets, as [{host}]:{port}, not {text!r}")
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as err:
        reason = getattr(err, "strerror", None) or err
        raise argparse.ArgumentTypeError(f"cannot resolve {host!r}: {reason}") from None
    family, *_, sockaddr = info[0]
    return ListenAddress(str(sockaddr[0]), port, family)


def max_connections(text: str) -> int:
    value, (low, high) = positive_int(text), MAX_CONNECTIONS_RANGE
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be {low}-{high}, not {text!r}")
    return value


def timeout(text: str) -> float:
    value, (low, high) = positive_float(text), TIMEOUT_RANGE
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be {low:g}-{high:g} seconds, not {text!r}")
    return value


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    p = commands.add_parser(
        "exporter",
        parents=[common],
        help="Prometheus metrics over HTTP, or into a textfile",
        description="Serve Prometheus metrics at /metrics: commit accounting (Committed_AS,"
        " CommitLimit, MemTotal, overcommit mode), reserved (VSZ), resident (RSS) and swap"
        " summed over every user process, the same per process for the top N by OOM score"
        " and the top N by resident memory, and the scrape's own duration and errors;"
        " read at each scrape. With --oom, also each OOM domain's limit, usage and"
        " headroom and the victim its OOM killer would choose. With --textfile, write"
        " them for node_exporter's textfile collector instead (atomically: a reader"
        " never sees half a file). Needs the 'exporter' extra (prometheus_client).",
    )
    p.add_argument("--listen", type=listen_address, default=None, metavar="ADDR:PORT",
                   help=f"where to serve /metrics (default {DEFAULT_LISTEN}, loopback"
                   " only; ':PORT' for every interface, port 0 for a free one)")
    p.add_argument("--textfile", metavar="PATH",
                   help="write the metrics to PATH (a *.prom file in node_exporter's"
                   " --collector.textfile.directory) instead of serving them")
    p.add_argument("--interval", type=positive_float, metavar="SECONDS",
                   help="with --textfile: write again every SECONDS until stopped"
                   " (default: write once and exit)")
    # positive_int as `stats --top`: the same option takes the same numbers.
    p.add_argument("--top", type=positive_int, default=None, metavar="N",
                   help="export per-process figures for the N processes with the highest"
                   " OOM score and the N with the most resident memory (default 10)")
    p.add_argument("--oom", action="store_true",
                   help="also export the OOM prediction of `tamalloc oom`: limit, usage and"
                   " headroom of the system and of each cgroup with a memory.max, and the"
                   " process its OOM killer would kill now. Off by default: each scrape"
                   " then walks every process a second time and reads the whole cgroup"
                   " tree")
    p.add_argument("--oom-domains", type=non_negative_int, default=None, metavar="N",
                   help="with --oom: export the N cgroups with the least headroom, besides"
                   " the system (default 20; 0: the system alone); tamalloc_oom_domains"
                   " counts them all")
    p.add_argument("--max-connections", type=max_connections, default=None, metavar="N",
                   help=f"serve at most N connections at once, one thread each (default"
                   f" {DEFAULT_MAX_CONNECTIONS}); past N, a new connection takes the place"
                   " of the one that has waited longest for its request, or is answered"
                   " 503 when all N are answering one")
    p.add_argument("--header-timeout", type=timeout, default=None, metavar="SECONDS",
                   help="close a connection that has not sent its whole request head"
                   f" (at most {MAX_HEAD_BYTES // 1024} KiB) within SECONDS of connecting"
                   " or of its first byte, and one that does not take its answer within"
                   f" SECONDS (default {DEFAULT_HEADER_TIMEOUT:g})")
    p.add_argument("--idle-timeout", type=timeout, default=None, metavar="SECONDS",
                   help="close a kept-alive connection that sends no new request for"
                   f" SECONDS (default {DEFAULT_IDLE_TIMEOUT:g}; Prometheus reopens it)")
    p.set_defaults(run=run, needs_backend=True)


def run(args: argparse.Namespace, env: Environment) -> int:
    if args.interval is not None and args.textfile is None:
        raise UsageError("--interval needs --textfile (a server is scraped when Prometheus"
                         " asks)")
    if args.textfile is not None and args.listen is not None:
        raise UsageError("--listen and --textfile exclude each other: serve, or write a file")
    server_options = [f"--{name.replace('_', '-')}" for name in
                      ("max_connections", "header_timeout", "idle_timeout")
                      if getattr(args, name) is not None]
    if args.textfile is not None and server_options:
        raise UsageError(f"{server_options[0]} is for the server, not --textfile")
    if args.oom_domains is not None and not args.oom:
        raise UsageError("--oom-domains needs --oom (the OOM prediction is exported only"
                         " when asked)")
    try:
        # prometheus_client: ~50 ms of every other command's start-up.
        from ..exporter.collector import (
            DEFAULT_OOM_DOMAINS,
            DEFAULT_TOP,
            MemoryCollector,
            make_registry,
        )
    except ImportError as err:
        raise ExporterError(f"{_MISSING} ({err})") from None
    collector = MemoryCollector(
        backend=getattr(args, "backend", None),
        top=DEFAULT_TOP if args.top is None else args.top,
        oom=args.oom,
        oom_domains=DEFAULT_OOM_DOMAINS if args.oom_domains is None else args.oom_domains,
        on_error=env.warn,
    )
    registry = make_registry(collector)
    raise_open_files_limit()
    if args.textfile is not None:
        return _write_textfiles(args.textfile, args.interval, registry, env)
    limits = Limits(
        max_connections=args.max_connections or DEFAULT_MAX_CONNECTIONS,
        header_timeout=args.header_timeout or DEFAULT_HEADER_TIMEOUT,
        idle_timeout=args.idle_timeout or DEFAULT_IDLE_TIMEOUT,
    )
    return _serve(args.listen or listen_address(DEFAULT_LISTEN), registry,
                  collector.backend.name, env, limits)


def _write_textfiles(
    path: str, interval: float | None, registry: CollectorRegistry, env: Environment
) -> int:
    from ..exporter.textfile import write_every, write_textfile  # prometheus_client: see run

    try:  # the first write must work: a wrong path is an error, not a warning
        write_textfile(path, registry)
    except OSError as err:
        raise ExporterError(f"cannot write textfile {path}: {err.strerror or err}") from None
    if not path.endswith(".prom"):
        env.warn(f"note: node_exporter's textfile collector reads only *.prom files, not {path}")
    if interval is not None:
        with stop_on_sigterm():
            write_every(path, interval, registry, lambda err: env.warn(
                f"error: cannot write textfile {path}: {err.strerror or err}"))
    return ExitStatus.SUCCESS


def _serve(address: ListenAddress, registry: CollectorRegistry, backend: str,
           env: Environment, limits: Limits | None = None) -> int:
    from prometheus_client.exposition import make_wsgi_app

    try:
        server = make_server(address.host, address.port, address.family,
                             make_wsgi_app(registry), limits or Limits(),
                             on_error=lambda message: env.warn(f"error: {message}"))
    except OSError as err:
        hint = ""
        if err.errno == errno.EADDRINUSE:
            hint = " (another program listens there; choose another with --listen)"
        raise ExporterError(
            f"cannot listen on {address}: {err.strerror or err}{hint}") from None
    with server:
        bound = ListenAddress(address.host, server.server_address[1], address.family)
        env.info(f"tamalloc exporter: serving http://{bound}/metrics (backend {backend})")
        with stop_on_sigterm():
            server.serve_forever()
    return ExitStatus.SUCCESS
