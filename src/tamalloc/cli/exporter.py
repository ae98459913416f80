"""``tamalloc exporter``: its option types, and the one-line errors of a port in use or an
unwritable textfile. The metrics, the server and the textfile writer are in the
:mod:`tamalloc.exporter` package."""

from __future__ import annotations

import argparse
import errno
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import TamallocError
from ..exporter.limits import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_LISTEN,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_OOM_WINDOW,
    MAX_CONNECTIONS_RANGE,
    OOM_WINDOW_RANGE,
    TIMEOUT_RANGE,
)
from ..exporter.server import Limits, make_server
from ..exporter.service import raise_open_files_limit, stop_on_sigterm
from .env import (
    Environment,
    ExitStatus,
    UsageError,
    positive_float,
    positive_int,
)

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

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
            f"expected ADDR:PORT with a port 0-65535 (e.g. {DEFAULT_LISTEN}), not {text!r}"
        )
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
            f"write an IPv6 address in brackets, as [{host}]:{port}, not {text!r}"
        )
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


def oom_window(text: str) -> float:
    value, (low, high) = positive_float(text), OOM_WINDOW_RANGE
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be {low:g}-{high:g} seconds, not {text!r}")
    return value


def run(args: argparse.Namespace, env: Environment) -> int:
    if args.interval is not None and args.textfile is None:
        raise UsageError("--interval needs --textfile (a server is scraped when Prometheus asks)")
    if args.textfile is not None and args.listen is not None:
        raise UsageError("--listen and --textfile exclude each other: serve, or write a file")
    server_options = [
        f"--{name.replace('_', '-')}"
        for name in ("max_connections", "header_timeout", "idle_timeout")
        if getattr(args, name) is not None
    ]
    if args.textfile is not None and server_options:
        raise UsageError(f"{server_options[0]} is for the server, not --textfile")
    for name in ("oom_domains", "oom_window"):
        if getattr(args, name) is not None and not args.oom:
            option = f"--{name.replace('_', '-')}"
            raise UsageError(
                f"{option} needs --oom (the OOM prediction is exported only when asked)"
            )
    if args.oom_window is not None and args.textfile is not None and args.interval is None:
        raise UsageError(
            "--oom-window needs scrapes to keep a window over: serve, or --textfile with"
            " --interval (a textfile written once has one sample, so no forecast)"
        )
    try:
        # prometheus_client: ~50 ms of every other command's start-up.
        from ..exporter.collector import (
            DEFAULT_OOM_DOMAINS,
            DEFAULT_TOP,
            MemoryCollector,
            make_registry,
        )
        from ..forecast import MIN_SAMPLES
    except ImportError as err:
        raise ExporterError(f"{_MISSING} ({err})") from None
    collector = MemoryCollector(
        backend=getattr(args, "backend", None),
        top=DEFAULT_TOP if args.top is None else args.top,
        oom=args.oom,
        oom_domains=DEFAULT_OOM_DOMAINS if args.oom_domains is None else args.oom_domains,
        oom_window=DEFAULT_OOM_WINDOW if args.oom_window is None else args.oom_window,
        on_error=env.warn,
    )
    if args.oom and args.interval is not None:
        window = DEFAULT_OOM_WINDOW if args.oom_window is None else args.oom_window
        writes = int(window / args.interval) + 1
        if writes < MIN_SAMPLES:
            env.warn(
                f"note: an --oom-window of {window:g} s holds {writes} writes every"
                f" {args.interval:g} s; the forecast needs {MIN_SAMPLES}, so no"
                " tamalloc_oom_domain_seconds_to_oom"
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
    return _serve(
        args.listen or listen_address(DEFAULT_LISTEN), registry, collector.backend.name, env, limits
    )


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
            write_every(
                path,
                interval,
                registry,
                lambda err: env.warn(f"error: cannot write textfile {path}: {err.strerror or err}"),
            )
    return ExitStatus.SUCCESS


def _serve(
    address: ListenAddress,
    registry: CollectorRegistry,
    backend: str,
    env: Environment,
    limits: Limits | None = None,
) -> int:
    from prometheus_client.exposition import make_wsgi_app

    try:
        server = make_server(
            address.host,
            address.port,
            address.family,
            make_wsgi_app(registry),
            limits or Limits(),
            on_error=lambda message: env.warn(f"error: {message}"),
        )
    except OSError as err:
        hint = ""
        if err.errno == errno.EADDRINUSE:
            hint = " (another program listens there; choose another with --listen)"
        raise ExporterError(f"cannot listen on {address}: {err.strerror or err}{hint}") from None
    with server:
        bound = ListenAddress(address.host, server.server_address[1], address.family)
        env.info(f"tamalloc exporter: serving http://{bound}/metrics (backend {backend})")
        with stop_on_sigterm():
            server.serve_forever()
    return ExitStatus.SUCCESS
