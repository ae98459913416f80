"""The HTTP server of ``tamalloc exporter``: HTTP/1.1 with keep-alive, every request
answered by a WSGI app (prometheus_client's ``make_wsgi_app``), with bounded
connections, a deadline for each request's head and for each answer, and a bounded
head size, so that no client can hold the exporter's threads, file descriptors or
memory: a client that opens connections and sends nothing, or trickles its headers a
byte at a time (slowloris), costs one of at most ``max_connections`` threads for at
most ``header_timeout`` seconds, and is the first closed when a scraper needs its place.

http.server is imported by the two factories only: importing it costs every other
command's start-up."""

from __future__ import annotations

import contextlib
import io
import socket
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .limits import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    MAX_HEAD_BYTES,
)

if TYPE_CHECKING:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# A WSGI application (PEP 3333), as prometheus_client's make_wsgi_app returns.
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# Beyond the accept queue's first ones, a connection waits for the SYN retransmission
# (a second or more): enough for a burst of connections at once.
LISTEN_BACKLOG = 128
# How long a new connection waits for the thread of the one closed for it to end;
# past that it is refused (503), and the limit holds.
_CLOSE_WAIT = 5.0

_BUSY = b"503 Service Unavailable: too many connections, all answering a request\n"
_BUSY_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nConnection: close\r\nRetry-After: 1\r\n\r\n%s" % (len(_BUSY), _BUSY)
)


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may hold: see the module's docstring."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT


class ConnectionTable:
    """The open connections of a server, each waiting for a request (since when) or
    answering one. Past ``limit``, a new connection takes the place of the one that
    has waited longest (a client that sent nothing, or trickles its head, or a scraper's
    kept-alive connection between scrapes, which it reopens at its next scrape); one
    answering a request is never cut. When every connection is answering, the new one
    is refused (the server answers 503, as node_exporter does past --web.max-requests).

    Why not leave the extra connections in the listen backlog: the kernel hands them
    over in order, so a scraper would wait behind every silent connection queued before
    it, each taking its place for the header timeout; and why not only 503: a scraper
    would be refused for as long as silent connections fill the table."""

    def __init__(self, limit: int) -> None:
        import threading  # here: the CLI reads this module's defaults at every start

        self.limit = limit
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)
        self._waiting: dict[socket.socket, float] = {}
        self._answering: set[socket.socket] = set()
        # Closed for another, its thread not yet gone: still a thread and a socket.
        self._closing: set[socket.socket] = set()

    def __len__(self) -> int:
        return sum(self.counts())

    def counts(self) -> tuple[int, int]:
        """(waiting, answering)."""
        with self._lock:
            return len(self._waiting), len(self._answering)

    def admit(self, sock: socket.socket) -> bool:
        """Take ``sock`` in, closing the longest-waiting connection if the table is
        full; False when every connection is answering a request."""
        with self._lock:
            if len(self._waiting) + len(self._answering) + len(self._closing) >= self.limit:
                if not self._waiting:
                    return False
                oldest = min(self._waiting, key=self._waiting.__getitem__)
                del self._waiting[oldest]
                self._closing.add(oldest)
                # Its thread's read returns at once and it closes the socket; the socket
                # stays open until then (closed after release()), so this cannot touch a
                # reused descriptor.
                with contextlib.suppress(OSError):
                    oldest.shutdown(socket.SHUT_RDWR)
                # Its thread lets go before the new one starts, so that threads and
                # sockets stay within the limit however fast connections come (on a
                # busy machine a closed connection's thread may take a while to run).
                if not self._released.wait_for(lambda: oldest not in self._closing, _CLOSE_WAIT):
                    return False
            self._waiting[sock] = time.monotonic()
            return True

    def answer(self, sock: socket.socket) -> bool:
        """A whole request head arrived on ``sock``: it may be answered (and is no
        longer closed for another), unless it was closed for another already."""
        with self._lock:
            if self._waiting.pop(sock, None) is None:
                return False
            self._answering.add(sock)
            return True

    def wait(self, sock: socket.socket) -> None:
        """``sock`` answered and waits for its next request."""
        with self._lock:
            if sock in self._answering:
                self._answering.remove(sock)
                self._waiting[sock] = time.monotonic()

    def holds(self, sock: socket.socket) -> bool:
        """False once ``sock`` was closed for another (or released)."""
        with self._lock:
            return sock in self._waiting or sock in self._answering

    def release(self, sock: socket.socket) -> None:
        with self._lock:
            self._waiting.pop(sock, None)
            self._answering.discard(sock)
            if sock in self._closing:
                self._closing.remove(sock)
                self._released.notify_all()


class _HeadTooLarge(Exception):
    """Answered 414 in the request line, 431 in the headers, as http.server answers a
    line too long."""


class _TimedSocketIO(socket.SocketIO):
    """A socket's reads or writes with one deadline for a whole request head or answer,
    not a timeout per call as a socket's own: a client that sends a byte every second
    keeps each call short and would hold its connection for ever.

    ``then``: after the first byte read, the deadline becomes now + ``then`` (a kept-
    alive connection may idle long before its next request, not trickle it)."""

    def __init__(self, sock: socket.socket, mode: str) -> None:
        super().__init__(sock, mode)  # type: ignore[arg-type]
        self._socket = sock
        self.deadline = 0.0
        self.then: float | None = None

    def _arm(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        self._socket.settimeout(remaining)

    def readinto(self, b: Any) -> int | None:
        self._arm()
        count = super().readinto(b)
        if count and self.then is not None:
            self.deadline = time.monotonic() + self.then
            self.then = None
        return count

    def write(self, b: Any) -> int | None:
        self._arm()
        return super().write(b)


class _RequestReader(io.BufferedReader):
    """The handler's rfile: ``readline`` (all that http.server reads a request head
    with) stops at ``head_budget`` bytes in all; None once the head is read."""

    head_budget: int | None = None

    def readline(self, size: int | None = -1, /) -> bytes:
        budget = self.head_budget
        if budget is None:
            return super().readline(size)
        limit = budget + 1 if size is None or size < 0 else min(size, budget + 1)
        line = super().readline(limit)
        self.head_budget = budget - len(line)
        if self.head_budget < 0:
            raise _HeadTooLarge(f"request head longer than {MAX_HEAD_BYTES} bytes")
        return line


def metrics_handler(app: WSGIApp, limits: Limits = Limits()) -> type[BaseHTTPRequestHandler]:
    """An http.server request handler that answers every request with the WSGI ``app``
    (prometheus_client's ``make_wsgi_app``: content negotiation, gzip, 405 and the rest
    stay the library's), over HTTP/1.1 with keep-alive, with the deadlines of ``limits``
    (class attributes ``header_timeout`` and ``idle_timeout``). Under a server of
    :func:`make_server`, it also keeps that server's connection table.

    Why not wsgiref, which served before: on the kernel backend the scan of 1,000
    processes costs about as much as the fixed work of an answer, and most of that was
    HTTP plumbing. wsgiref's handler closes the connection after every answer (so each
    scrape paid a TCP handshake and a new thread), copies os.environ into every request
    and sends the status line, headers and body in several writes. Here a scraper that
    keeps its connection (Prometheus does) pays for none of that, and the answer leaves
    in one write."""
    from http import HTTPStatus
    from http.server import BaseHTTPRequestHandler
    from urllib.parse import unquote

    class MetricsHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive; Content-Length is always sent
        header_timeout = limits.header_timeout
        idle_timeout = limits.idle_timeout
        rfile: _RequestReader
        _answered = 0
        _waiting = True  # no request line read yet on this round of the connection

        def setup(self) -> None:
            # StreamRequestHandler's, with the deadline-keeping socket files. The answer
            # is buffered: head and body leave in one write (flushed per request).
            self.connection = self.request
            # No Nagle: a body larger than the buffer is never held back.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
            self._reads = _TimedSocketIO(self.connection, "rb")
            self._writes = _TimedSocketIO(self.connection, "wb")
            self.rfile = _RequestReader(self._reads)
            self.wfile = io.BufferedWriter(self._writes)

        def finish(self) -> None:
            for file in (self.wfile, self.rfile):  # each closed, whatever the other does
                with contextlib.suppress(OSError):
                    file.close()  # the writer flushes what is left first

        def _table(self) -> ConnectionTable | None:
            table = getattr(self.server, "connections", None)
            return table if isinstance(table, ConnectionTable) else None

        def _claim(self) -> bool:
            """A whole head arrived: answer it, unless the connection was closed for
            another meanwhile."""
            table = self._table()
            return table is None or table.answer(self.connection)

        def handle_one_request(self) -> None:
            # http.server's, with the deadlines and the head budget, every method
            # answered by the app (which answers 405 to all but GET and OPTIONS, where
            # http.server would say 501 to a method without a do_X).
            now = time.monotonic()
            if self._answered:
                table = self._table()
                if table is not None:
                    table.wait(self.connection)
                self._reads.deadline, self._reads.then = (
                    now + self.idle_timeout,
                    self.header_timeout,
                )
            else:
                self._reads.deadline, self._reads.then = now + self.header_timeout, None
            self._writes.deadline = now + self.header_timeout  # each answer sets its own
            self.rfile.head_budget = MAX_HEAD_BYTES
            self._waiting = True
            try:
                try:
                    self.raw_requestline = self.rfile.readline()
                except _HeadTooLarge:
                    self.requestline = self.request_version = self.command = ""
                    self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                    return
                if not self.raw_requestline:
                    self.close_connection = True
                    return
                if not self.parse_request():  # an error answered, or closed for another
                    return
                self.rfile.head_budget = None
                self._answer()
                self.wfile.flush()
                self._answered += 1
            except TimeoutError:
                self.close_connection = True  # a deadline passed: nothing more to say
            except OSError as err:
                self.close_connection = True
                # A scraper closing (or resetting) a kept-alive connection between two
                # scrapes is its normal end, as is a connection closed for another;
                # during a request it is an error (one line).
                if isinstance(err, ConnectionError) and self._waiting and self._answered:
                    return
                table = self._table()
                if table is not None and not table.holds(self.connection):
                    return
                raise

        def send_error(
            self, code: int, message: str | None = None, explain: str | None = None
        ) -> None:
            self._writes.deadline = time.monotonic() + self.header_timeout
            super().send_error(code, message, explain)

        def parse_request(self) -> bool:
            self._waiting = False
            try:
                if not super().parse_request():
                    return False
            except _HeadTooLarge as err:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, str(err))
                return False
            if not self._claim():
                self.close_connection = True
                return False
            return True

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

            def start_response(
                status: str, headers: list[tuple[str, str]], exc_info: Any = None
            ) -> Callable[[bytes], object]:
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
            # The answer too has a deadline, from now (a scrape may take long): a client
            # that stops reading it (the kernel's buffers full) holds its thread no
            # longer than a slow head would.
            self._writes.deadline = time.monotonic() + self.header_timeout
            ((status, headers),) = answer
            code, _, reason = status.partition(" ")
            self.send_response(int(code), reason)
            for name, value in headers:
                self.send_header(name, value)
            if (
                self.headers.get("Transfer-Encoding")
                or self.headers.get("Content-Length", "0").strip() != "0"
            ):
                # A request body the app left unread would be taken for the next request.
                self.send_header("Connection", "close")  # sets close_connection
            if not any(name.lower() == "content-length" for name, _ in headers):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":  # the length is HEAD's answer, the body is not
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """No access log line per scrape on stderr (a journal fills with them)."""

    return MetricsHandler


def make_server(
    host: str,
    port: int,
    family: socket.AddressFamily,
    app: WSGIApp,
    limits: Limits = Limits(),
    on_error: Callable[[str], None] | None = None,
) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (OSError when it cannot be) that answers with
    ``app`` under ``limits``: one thread per connection, at most
    ``limits.max_connections`` of them. ``on_error`` gets one line per failed answer
    (instead of socketserver's traceback on stderr)."""
    from http.server import ThreadingHTTPServer

    handler = metrics_handler(app, limits)

    class Server(ThreadingHTTPServer):
        address_family = family
        request_queue_size = LISTEN_BACKLOG

        def __init__(self) -> None:
            self.connections = ConnectionTable(limits.max_connections)
            super().__init__((host, port), handler)

        def process_request(self, request: Any, client_address: Any) -> None:
            if not self.connections.admit(request):
                with contextlib.suppress(OSError):  # the kernel's buffer takes it at once
                    request.send(_BUSY_ANSWER, socket.MSG_DONTWAIT)
                self.shutdown_request(request)
                return
            try:
                super().process_request(request, client_address)
            except BaseException:
                # No thread (or a SIGTERM while one started): nothing will release it.
                self.connections.release(request)
                raise

        def shutdown_request(self, request: Any) -> None:
            self.connections.release(request)  # before the close: see admit()
            super().shutdown_request(request)

        def handle_error(self, request: Any, client_address: Any) -> None:
            # socketserver would print a traceback (a scraper that hung up mid-answer).
            if on_error is not None:
                err = sys.exc_info()[1]
                on_error(f"answering {client_address[0]}: {type(err).__name__}: {err}")

    return Server()
