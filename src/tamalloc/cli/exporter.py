"""``tamalloc exporter``: the Prometheus metrics over HTTP, or into a textfile for
node_exporter. The metrics themselves are in :mod:`tamalloc.exporter`."""

from __future__ import annotations

import argparse
import contextlib
import errno
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..errors import TamallocError
from .env import (
    Environment,
    ExitStatus,
    UsageError,
    non_negative_int,
    positive_float,
    positive_int,
)

if TYPE_CHECKING:
    from http.server import BaseHTTPRequestHandler

    from prometheus_client.registry import CollectorRegistry

# A WSGI application (PEP 3333), as prometheus_client's make_wsgi_app returns.
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# Not among the ports of the Prometheus project's list of exporter defaults that we
# know of; --listen changes it.
DEFAULT_PORT = 9847
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
_MISSING = (
    "tamalloc exporter needs prometheus_client: pip install 'tamalloc[exporter]'"
    " (or Debian's python3-prometheus-client)"
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
    p.set_defaults(run=run, needs_backend=True)


class _Stop(BaseException):
    """SIGTERM: the normal way out of a server (systemd stop). A BaseException, as
    KeyboardInterrupt is: socketserver answers an Exception raised while it starts a
    request's thread with handle_error() and serves on, so a SIGTERM arriving then was
    swallowed and the exporter never stopped."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        yield
    except (_Stop, KeyboardInterrupt):
        pass  # Ctrl-C or SIGTERM ends a server normally: exit 0
    finally:
        signal.signal(signal.SIGTERM, previous)


# The procfs scan keeps its files open from one scrape to the next only above half
# the soft limit on open files, so that the numbers a program gives select() stay
# below 1024; the usual soft limit of 1024 leaves no room. A program that needs many
# fds and never calls select() raises its soft limit towards the hard one (systemd's
# advice); the exporter is one (http.server waits with poll).
OPEN_FILES_WANTED = 65536


def raise_open_files_limit(wanted: int = OPEN_FILES_WANTED) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run(args: argparse.Namespace, env: Environment) -> int:
    if args.interval is not None and args.textfile is None:
        raise UsageError("--interval needs --textfile (a server is scraped when Prometheus"
                         " asks)")
    if args.textfile is not None and args.listen is not None:
        raise UsageError("--listen and --textfile exclude each other: serve, or write a file")
    if args.oom_domains is not None and not args.oom:
        raise UsageError("--oom-domains needs --oom (the OOM prediction is exported only"
                         " when asked)")
    try:
        # prometheus_client: ~50 ms of every other command's start-up.
        from ..exporter import DEFAULT_OOM_DOMAINS, DEFAULT_TOP, MemoryCollector, make_registry
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
    return _serve(args.listen or listen_address(DEFAULT_LISTEN), registry,
                  collector.backend.name, env)


def _write_textfiles(
    path: str, interval: float | None, registry: CollectorRegistry, env: Environment
) -> int:
    from ..exporter import write_textfile  # prometheus_client: see run

    def write() -> None:
        try:
            write_textfile(path, registry)
        except OSError as err:
            raise ExporterError(f"cannot write textfile {path}: {err.strerror or err}") from None

    write()  # the first write must work: a wrong path is an error, not a warning
    if not path.endswith(".prom"):
        env.warn(f"note: node_exporter's textfile collector reads only *.prom files, not {path}")
    if interval is None:
        return ExitStatus.SUCCESS
    with _stop_on_sigterm():
        deadline = time.monotonic()
        while True:
            deadline += interval
            time.sleep(max(0.0, deadline - time.monotonic()))
            try:
                write()
            except ExporterError as err:  # a full disk may pass: say so and go on
                env.warn(f"error: {err}")
    return ExitStatus.SUCCESS


# An idle kept-alive connection is closed after this long (Prometheus reopens one when
# it scrapes next): a scraper that vanished never holds a thread for ever.
_IDLE_TIMEOUT = 300.0


def _serve(address: ListenAddress, registry: CollectorRegistry, backend: str,
           env: Environment) -> int:
    # Imported here: http.server and its imports (~27 ms) would slow every other
    # command's start.
    from http.server import ThreadingHTTPServer

    from prometheus_client.exposition import make_wsgi_app

    class Server(ThreadingHTTPServer):
        address_family = address.family

        def handle_error(self, request: Any, client_address: Any) -> None:
            # socketserver would print a traceback (a scraper that hung up mid-answer).
            err = sys.exc_info()[1]
            env.warn(f"error: answering {client_address[0]}: {type(err).__name__}: {err}")

    handler = metrics_handler(make_wsgi_app(registry))
    try:
        server = Server((address.host, address.port), handler)
    except OSError as err:
        hint = ""
        if err.errno == errno.EADDRINUSE:
            hint = " (another program listens there; choose another with --listen)"
        raise ExporterError(
            f"cannot listen on {address}: {err.strerror or err}{hint}") from None
    with server:
        bound = ListenAddress(address.host, server.server_address[1], address.family)
        env.info(f"tamalloc exporter: serving http://{bound}/metrics (backend {backend})")
        with _stop_on_sigterm():
            server.serve_forever()
    return ExitStatus.SUCCESS


def metrics_handler(app: WSGIApp) -> type[BaseHTTPRequestHandler]:
    """An http.server request handler that answers every request with the WSGI ``app``
    (prometheus_client's ``make_wsgi_app``: content negotiation, gzip, 405 and the rest
    stay the library's), over HTTP/1.1 with keep-alive.

    Why not wsgiref, which served before: on the kernel backend the scan of 1,000
    processes costs about as much as the fixed work of an answer, and most of that was
    HTTP plumbing. wsgiref's handler closes the connection after every answer (so each
    scrape paid a TCP handshake and a new thread), copies os.environ into every request
    and sends the status line, headers and body in several writes. Here a scraper that
    keeps its connection (Prometheus does) pays for none of that, and the answer leaves
    in one write."""
    # Loaded by _serve already (http.server imports urllib.parse); here for the names.
    from http.server import BaseHTTPRequestHandler
    from urllib.parse import unquote

    class MetricsHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive; Content-Length is always sent
        wbufsize = -1  # buffered: head and body leave in one write (flushed per request)
        disable_nagle_algorithm = True  # a body larger than the buffer is never held back
        timeout = _IDLE_TIMEOUT
        _answered = 0
        _waiting = True  # no request line read yet on this round of the connection

        def handle_one_request(self) -> None:
            self._waiting = True
            try:
                super().handle_one_request()
            except ConnectionError:
                # A scraper closing (or resetting) a kept-alive connection between two
                # scrapes is its normal end; during a request it is an error (one line).
                if self._waiting and self._answered:
                    self.close_connection = True
                    return
                raise

        def parse_request(self) -> bool:
            self._waiting = False
            return super().parse_request()

        def __getattr__(self, name: str) -> Any:
            # Every method goes to the app, which answers 405 to all but GET and
            # OPTIONS (http.server would answer 501 to a method it has no do_X for).
            if name.startswith("do_"):
                return self._answer
            raise AttributeError(name)

        def _answer(self) -> None:
            path, _, query = self.path.partition("?")
            server_address: Any = self.server.server_address
            environ: dict[str, Any] = {
                "REQUEST_METHOD": self.command,
                "SCRIPT_NAME": "",
                "PATH_INFO": unquote(path, "iso-8859-1"),  # as wsgiref decodes it
                "QUERY_STRING": query,
                "SERVER_NAME": server_address[0],
                "SERVER_PORT": str(server_address[1]),
                "SERVER_PROTOCOL": self.request_version,
                "REMOTE_ADDR": self.client_address[0],
                "wsgi.version": (1, 0),
                "wsgi.url_scheme": "http",
                "wsgi.input": self.rfile,
                "wsgi.errors": sys.stderr,
                "wsgi.multithread": True,
                "wsgi.multiprocess": False,
                "wsgi.run_once": False,
            }
            for key, value in self.headers.items():  # as wsgiref: repeated ones joined
                key = "HTTP_" + key.replace("-", "_").upper()
                value = value.strip()
                environ[key] = f"{environ[key]},{value}" if key in environ else value
            answer: list[tuple[str, list[tuple[str, str]]]] = []
            parts: list[bytes] = []  # PEP 3333's write(), which the library's app skips

            def start_response(status: str, headers: list[tuple[str, str]],
                               exc_info: Any = None) -> Callable[[bytes], object]:
                answer[:] = [(status, headers)]
                return parts.append

            result = app(environ, start_response)
            try:
                parts.extend(result)  # the whole answer first: its length is a header
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            body = b"".join(parts)
            (status, headers), = answer
            code, _, reason = status.partition(" ")
            self.send_response(int(code), reason)
            for name, value in headers:
                self.send_header(name, value)
            if self.headers.get("Transfer-Encoding") or self.headers.get(
                    "Content-Length", "0").strip() != "0":
                # A request body the app left unread would be taken for the next request.
                self.send_header("Connection", "close")  # sets close_connection
            if not any(name.lower() == "content-length" for name, _ in headers):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":  # the length is HEAD's answer, the body is not
                self.wfile.write(body)
            self._answered += 1

        def log_message(self, format: str, *args: Any) -> None:
            """No access log line per scrape on stderr (a journal fills with them)."""

    return MetricsHandler
