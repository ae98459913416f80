"""The HTTP server of `tamalloc exporter` (tamalloc.exporter.server): it
answers with prometheus_client's own WSGI app, byte for byte, over HTTP/1.1 with
keep-alive, and bounds what a client can hold (connections, head time and size). The
scrape's content is tested in test_exporter.py; here a fixed registry makes every answer
predictable. Also the kernel emulation of bench/bench_exporter.py."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import http.server
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import (
    CONTENT_TYPE_PLAIN_0_0_4,
    generate_latest,
    make_wsgi_app,
)
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector, CollectorRegistry

import tamalloc
from _support import proc_status, subprocess_env
from conftest import IN_VM
from tamalloc.exporter.server import (
    DEFAULT_MAX_CONNECTIONS,
    MAX_HEAD_BYTES,
    Limits,
    WSGIApp,
    make_server,
    metrics_handler,
)
from test_exporter_prometheus import ensure_loopback

WAIT = 600.0 if IN_VM else 120.0
BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module", autouse=True)
def loopback() -> None:
    ensure_loopback()


class Fixed(Collector):
    """Two families with labels to escape and a non-ASCII name: always the same text."""

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily("t_bytes", 'Help with a \\ and "quotes".', labels=("pid", "name"))
        g.add_metric(["1", 'a"b\\c'], 4096)
        g.add_metric(["22", "café"], 1.5e10)
        yield g
        yield GaugeMetricFamily("t_up", "Up.", value=1)


@pytest.fixture(scope="module")
def registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    return registry


@pytest.fixture(scope="module")
def server(registry: CollectorRegistry) -> Iterator[tuple[str, int]]:
    """The handler under a plain ThreadingHTTPServer on loopback, in this process."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), metrics_handler(make_wsgi_app(registry)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.1", httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=WAIT)


def request(
    conn: http.client.HTTPConnection, method: str, path: str = "/metrics", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    conn.request(method, path, headers={k.replace("_", "-"): v for k, v in headers.items()})
    response = conn.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def library_answer(
    registry: CollectorRegistry, method: str, path: str, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    """What prometheus_client's WSGI app answers, called directly."""
    environ: dict[str, Any] = {"REQUEST_METHOD": method}
    environ["PATH_INFO"], _, environ["QUERY_STRING"] = path.partition("?")
    environ.update({"HTTP_" + k.upper(): v for k, v in headers.items()})
    setup_testing_defaults(environ)
    answer: list[Any] = []
    body = b"".join(make_wsgi_app(registry)(environ, lambda s, h: answer.append((s, h))))
    ((status, header_list),) = answer
    return int(status.split()[0]), {k.lower(): v for k, v in header_list}, body


def test_get_is_generate_latest_byte_for_byte(
    server: tuple[str, int], registry: CollectorRegistry
) -> None:
    conn = http.client.HTTPConnection(*server, timeout=WAIT)
    status, headers, body = request(conn, "GET")
    assert status == 200
    assert body == generate_latest(registry)
    assert 'name="café"' in body.decode()
    assert headers["content-type"] == CONTENT_TYPE_PLAIN_0_0_4
    assert headers["content-length"] == str(len(body))
    assert "content-encoding" not in headers
    conn.close()


def test_connection_is_kept_alive_across_scrapes(
    server: tuple[str, int], registry: CollectorRegistry
) -> None:
    conn = http.client.HTTPConnection(*server, timeout=WAIT)
    request(conn, "GET")
    sock = conn.sock
    for _ in range(3):
        assert request(conn, "GET")[2] == generate_latest(registry)
        assert conn.sock is sock  # the same TCP connection: no reconnection
    conn.close()


def test_http_1_0_is_answered_and_closed(
    server: tuple[str, int], registry: CollectorRegistry
) -> None:
    with socket.create_connection(server, timeout=WAIT) as s:
        s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):  # ends: the server closes the connection
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert body == generate_latest(registry)


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/metrics", {}),
        ("GET", "/", {}),  # every path serves the metrics, as the library's app does: no 404
        ("GET", "/anything/else?x=1", {}),
        ("GET", "/metrics?name[]=t_up", {}),
        ("GET", "/metrics", {"Accept_Encoding": "gzip"}),
        ("GET", "/metrics", {"Accept_Encoding": "deflate, GZIP;q=0.5"}),
        ("GET", "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}),
        ("GET", "/metrics", {"Accept": "text/plain;version=1.0.0;escaping=allow-utf-8"}),
        ("GET", "/favicon.ico", {}),
        ("OPTIONS", "/metrics", {}),
        ("POST", "/metrics", {}),
        ("DELETE", "/metrics", {}),
        ("BREW", "/metrics", {}),  # http.server alone would say 501; the library says 405
    ],
)
def test_every_answer_is_the_library_apps(
    server: tuple[str, int],
    registry: CollectorRegistry,
    method: str,
    path: str,
    headers: dict[str, str],
) -> None:
    conn = http.client.HTTPConnection(*server, timeout=WAIT)
    status, got_headers, body = request(conn, method, path, **headers)
    want_status, want_headers, want_body = library_answer(registry, method, path, **headers)
    assert status == want_status
    if got_headers.get("content-encoding") == "gzip":
        body, want_body = gzip.decompress(body), gzip.decompress(want_body)
    assert body == want_body
    for name in ("content-type", "content-encoding", "allow"):
        assert got_headers.get(name) == want_headers.get(name)
    assert (
        int(got_headers["content-length"]) == len(body)
        or got_headers.get("content-encoding") == "gzip"
    )
    # and the connection still serves the next scrape
    assert request(conn, "GET")[2] == generate_latest(registry)
    conn.close()


def test_gzip_when_asked(server: tuple[str, int], registry: CollectorRegistry) -> None:
    conn = http.client.HTTPConnection(*server, timeout=WAIT)
    status, headers, body = request(conn, "GET", Accept_Encoding="gzip")
    assert (status, headers["content-encoding"]) == (200, "gzip")
    assert headers["content-length"] == str(len(body))
    assert gzip.decompress(body) == generate_latest(registry)
    conn.close()


def test_openmetrics_when_asked(server: tuple[str, int], registry: CollectorRegistry) -> None:
    conn = http.client.HTTPConnection(*server, timeout=WAIT)
    status, headers, body = request(
        conn, "GET", Accept="application/openmetrics-text; version=1.0.0; charset=utf-8"
    )
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert body == openmetrics.generate_latest(registry, version="1.0.0")
    conn.close()


def test_head_is_the_libraries_405_without_a_body(server: tuple[str, int]) -> None:
    conn = http.client.HTTPConnection(*server, timeout=WAIT)
    status, headers, body = request(conn, "HEAD")
    assert (status, headers["allow"], body) == (405, "OPTIONS,GET", b"")
    # Content-Length is that of the body a GET-like answer would carry (RFC 9110 9.3.2),
    # and no body follows, so the kept-alive connection stays in step:
    assert headers["content-length"] == str(
        len(b"# HTTP 405 Method Not Allowed: HEAD; use OPTIONS or GET\n")
    )
    assert request(conn, "GET")[0] == 200
    conn.close()


def test_a_request_body_closes_the_connection(server: tuple[str, int]) -> None:
    """The app reads no body: what follows one cannot be told from the next request."""
    with socket.create_connection(server, timeout=WAIT) as s:
        s.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 405 Method Not Allowed\r\n")
    assert b"\r\nConnection: close\r\n" in data
    assert data.count(b"HTTP/1.1 ") == 1


def test_a_malformed_request_is_400_and_closed(server: tuple[str, int]) -> None:
    with socket.create_connection(server, timeout=WAIT) as s:
        s.sendall(b"garbage\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    # http.server's error page (no status line: it takes such a request for HTTP/0.9)
    assert b"Error code: 400" in data


def test_an_idle_kept_alive_connection_is_closed_after_the_timeout(
    registry: CollectorRegistry,
) -> None:
    handler = metrics_handler(make_wsgi_app(registry))
    handler.idle_timeout = 0.2  # the default is minutes: a vanished scraper's thread ends
    errors: list[BaseException | None] = []

    class Server(ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            errors.append(sys.exc_info()[1])

    httpd = Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", httpd.server_address[1]), timeout=WAIT) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):  # the answer, then the server's close
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        assert data.endswith(generate_latest(registry))
        assert errors == []
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=WAIT)


@contextmanager
def running_exporter(*args: str) -> Iterator[tuple[subprocess.Popen[str], tuple[str, int]]]:
    """`tamalloc exporter --listen 127.0.0.1:0 --top 2 ARGS` (procfs): (process, address)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tamalloc",
            "--backend",
            "procfs",
            "exporter",
            "--listen",
            "127.0.0.1:0",
            "--top",
            "2",
            *args,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    try:
        assert proc.stdout is not None
        assert select.select([proc.stdout], [], [], WAIT)[0], "the exporter did not start"
        url = proc.stdout.readline().split()[3]
        host, port = url.split("/")[2].split(":")
        yield proc, (host, int(port))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=WAIT)


@pytest.fixture
def exporter_process() -> Iterator[tuple[subprocess.Popen[str], tuple[str, int]]]:
    with running_exporter() as started:
        yield started


def reset(s: socket.socket) -> None:
    """Close with a TCP RST instead of a FIN."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def test_scrapers_ending_kept_alive_connections_are_no_error(
    exporter_process: tuple[subprocess.Popen[str], tuple[str, int]],
) -> None:
    proc, address = exporter_process
    for end in ("close", "reset"):
        for _ in range(5):
            conn = http.client.HTTPConnection(*address, timeout=WAIT)
            assert request(conn, "GET")[0] == 200
            assert request(conn, "GET")[0] == 200
            assert conn.sock is not None
            if end == "reset":
                reset(conn.sock)
                conn.sock = None
            conn.close()
    # a scraper that asks and hangs up before the answer: at most one line each
    for _ in range(5):
        s = socket.create_connection(address, timeout=WAIT)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        reset(s)
    conn = http.client.HTTPConnection(*address, timeout=WAIT)
    assert request(conn, "GET")[0] == 200  # still answering
    conn.close()
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) <= 5
    assert all(line.startswith("tamalloc: error: answering 127.0.0.1: ") for line in lines)


def test_cap_sys_ptrace_is_read_once_per_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tamalloc.exporter.collector as exporter

    status = tmp_path / "status"
    status.write_text("CapEff:\t0000000000080000\n")
    monkeypatch.setattr(exporter, "_STATUS_PATH", str(status))
    collector = exporter.MemoryCollector(backend="procfs")
    assert collector._has_cap_sys_ptrace()
    status.write_text("CapEff:\t0000000000000000\n")  # no process's own caps change so
    assert collector._has_cap_sys_ptrace()
    assert not exporter.MemoryCollector(backend="procfs")._has_cap_sys_ptrace()


@pytest.fixture
def bench_exporter(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(BENCH))
    import bench_exporter

    return bench_exporter


def test_bench_emulated_records_decode_to_the_processes(bench_exporter: Any) -> None:
    from tamalloc.backends.kernel import _from_records

    stats = tamalloc.all_mem_stats(backend="procfs")
    decoded = _from_records(memoryview(bench_exporter.kernel_records(stats)))
    assert decoded == [
        s._replace(name=s.name.encode()[:15].decode("utf-8", "replace")) for s in stats
    ]


def test_bench_kept_alive_client_reads_whole_answers(
    bench_exporter: Any, server: tuple[str, int], registry: CollectorRegistry
) -> None:
    get = bench_exporter.KeptAliveGet(f"http://{server[0]}:{server[1]}/metrics")
    try:
        assert get() == get() == generate_latest(registry)
        assert get.sock is not None
    finally:
        get.close()


def test_a_writer_app_is_answered_in_order(tmp_path: Path) -> None:
    """PEP 3333's start_response writer (prometheus_client's app does not use it): what
    it writes comes before the returned parts, after the headers."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"a")
        return [b"b", b"c"]

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), metrics_handler(app))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", httpd.server_address[1], timeout=WAIT)
        status, headers, body = request(conn, "GET")
        assert (status, headers["content-length"], body) == (200, "3", b"abc")
        conn.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=WAIT)


def test_a_sigterm_while_a_request_starts_still_stops_the_server() -> None:
    # The SIGTERM handler raises _Stop in the main thread wherever it is; when that is
    # socketserver starting a request's thread, socketserver treats an Exception as the
    # request's failure and serves on (the exporter then ignored systemctl stop).
    from tamalloc.exporter.service import _Stop

    class Server(ThreadingHTTPServer):
        def process_request(self, request: Any, client_address: Any) -> None:
            raise _Stop

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass

    with (
        Server(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler) as server,
        socket.create_connection(server.server_address[:2], timeout=10),
        pytest.raises(_Stop),
    ):
        server.handle_request()


@contextmanager
def serving(app: WSGIApp, limits: Limits) -> Iterator[tuple[Any, tuple[str, int], list[str]]]:
    """make_server's server on loopback in a thread: (server, address, error lines)."""
    errors: list[str] = []
    httpd = make_server("127.0.0.1", 0, socket.AF_INET, app, limits, on_error=errors.append)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd, ("127.0.0.1", httpd.server_address[1]), errors
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=WAIT)


def wait_until(condition: Any) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "waited in vain"
        time.sleep(0.01)


def read_to_end(s: socket.socket) -> bytes:
    """What the server sends until it closes (a reset ends it too)."""
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_past_the_limit_the_longest_waiting_connection_makes_room(
    registry: CollectorRegistry,
) -> None:
    limits = Limits(max_connections=3, header_timeout=WAIT * 10)
    with serving(make_wsgi_app(registry), limits) as (httpd, address, errors):
        silent = []
        for count in range(1, 4):  # one at a time: the server sees them in this order
            silent.append(socket.create_connection(address, timeout=WAIT))
            wait_until(lambda count=count: len(httpd.connections) == count)
        conn = http.client.HTTPConnection(*address, timeout=WAIT)
        assert request(conn, "GET")[2] == generate_latest(registry)  # the 4th is served
        assert silent[0].recv(1) == b""  # the one that waited longest closed, unanswered
        assert select.select(silent[1:], [], [], 0)[0] == []  # the others still open
        wait_until(lambda: httpd.connections.counts() == (3, 0))  # conn answered
        # Each newcomer closes the longest waiting: the two silent ones, then the
        # kept-alive connection idle since its answer (its scraper reconnects).
        newcomers = []
        for old in (silent[1], silent[2], conn.sock):
            assert old is not None
            newcomers.append(socket.create_connection(address, timeout=WAIT))
            assert old.recv(1) == b""
        for s in newcomers:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(12) == b"HTTP/1.1 200"
            s.close()
        for s in silent:
            s.close()
        conn.close()
    assert errors == []


def test_when_every_connection_is_answering_a_new_one_is_answered_503() -> None:
    entered = threading.Semaphore(0)
    release = threading.Event()

    def slow_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        entered.release()
        release.wait(WAIT)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok\n"]

    with serving(slow_app, Limits(max_connections=2)) as (_httpd, address, errors):
        busy = [socket.create_connection(address, timeout=WAIT) for _ in range(2)]
        for s in busy:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in busy:
            assert entered.acquire(timeout=WAIT)
        with socket.create_connection(address, timeout=WAIT) as refused:
            answer = read_to_end(refused)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"\r\nConnection: close\r\n" in answer
        release.set()
        for s in busy:  # the two being answered were not cut
            assert s.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
            s.close()
        conn = http.client.HTTPConnection(*address, timeout=WAIT)
        assert request(conn, "GET")[2] == b"ok\n"  # room again
        conn.close()
    assert errors == []


def trickle(s: socket.socket, head: bytes) -> bytes:
    """Send ``head`` then one more header byte every 0.05 s until the server closes;
    what it answered. A per-read timeout would never close this connection."""
    s.sendall(head)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if select.select([s], [], [], 0.05)[0]:
            return read_to_end(s)
        try:
            s.send(b"a")
        except (BrokenPipeError, ConnectionResetError):
            return b""
    raise AssertionError("the server kept a trickling connection open")


@pytest.mark.parametrize("kept_alive", [False, True])
def test_a_trickled_head_is_closed_at_its_deadline_not_per_byte(
    registry: CollectorRegistry, kept_alive: bool
) -> None:
    # The idle timeout is long: a kept-alive connection's head has its own deadline,
    # from its first byte.
    limits = Limits(header_timeout=0.5, idle_timeout=WAIT * 10)
    with (
        serving(make_wsgi_app(registry), limits) as (httpd, address, errors),
        socket.create_connection(address, timeout=WAIT) as s,
    ):
        if kept_alive:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            head = s.recv(65536)  # the whole answer: small, one write
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert trickle(s, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ") == b""
        wait_until(lambda: len(httpd.connections) == 0)
    assert errors == []


def test_an_answer_read_slowly_is_cut_at_its_deadline() -> None:
    """A client that takes its answer 1 MiB at a time every 0.01 s lets no send wait
    long, so a timeout per send would not cut it; the whole answer takes 0.64 s or more,
    past its deadline."""
    body = b"x" * (64 << 20)

    def big_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    with (
        serving(big_app, Limits(header_timeout=0.2)) as (httpd, address, errors),
        socket.socket() as s,
    ):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.settimeout(WAIT)
        s.connect(address)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        received = 0
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(1 << 20):
                received += len(chunk)
                time.sleep(0.01)
        assert received < len(body)
        wait_until(lambda: len(httpd.connections) == 0)
    assert errors == []


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /" + b"m" * MAX_HEAD_BYTES + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
        (
            b"GET /metrics HTTP/1.1\r\n"
            + b"".join(
                b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(MAX_HEAD_BYTES // 1000 + 1)
            )
            + b"\r\n",
            b"431",
        ),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"v" * (MAX_HEAD_BYTES - 32) + b"\r\n\r\n", b"200"),
    ],
)
def test_the_request_head_is_bounded_in_size(
    server: tuple[str, int], head: bytes, status: bytes
) -> None:
    with socket.create_connection(server, timeout=WAIT) as s:
        s.sendall(head)
        if status != b"200":  # refused, and the connection closed
            assert read_to_end(s).startswith(b"HTTP/1.1 " + status + b" ")
        else:
            assert s.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")


def exporter_threads_and_fds(pid: int) -> tuple[int, int, int]:
    """(threads, sockets, other fds but the procfs scan's kept /proc files)."""
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed meanwhile
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    sockets = sum(link.startswith("socket:") for link in links)
    others = sum(not link.startswith(("socket:", "/proc/")) for link in links)
    return int(proc_status(pid)["Threads"]), sockets, others


def test_silent_and_trickling_clients_hold_bounded_threads_and_fds(
    exporter_process: tuple[subprocess.Popen[str], tuple[str, int]],
) -> None:
    """200 connections that never finish their heads, against the default limits: the
    exporter keeps at most --max-connections of them (a thread and a socket each),
    closes every one by the header deadline without a word on stderr, and answers a
    scrape meanwhile."""
    proc, address = exporter_process
    conn = http.client.HTTPConnection(*address, timeout=WAIT)
    assert request(conn, "GET")[0] == 200
    conn.close()
    base_threads, _, base_others = exporter_threads_and_fds(proc.pid)
    silent = [socket.create_connection(address, timeout=WAIT) for _ in range(150)]
    tricklers = [socket.create_connection(address, timeout=WAIT) for _ in range(50)]
    for s in tricklers:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    open_ = set(silent + tricklers)
    peaks = [0, 0, 0]
    answered: list[bytes] = []
    scraped = None

    def sample() -> None:
        peaks[:] = map(max, peaks, exporter_threads_and_fds(proc.pid))

    try:
        deadline = time.monotonic() + WAIT
        while open_ and time.monotonic() < deadline:
            sample()
            if scraped is None:
                conn = http.client.HTTPConnection(*address, timeout=WAIT)
                scraped = request(conn, "GET")
                conn.close()
                sample()
            for s in select.select(list(open_), [], [], 0.2)[0]:
                data = read_to_end(s)
                if data:
                    answered.append(data)
                open_.discard(s)
                s.close()
            for s in open_.intersection(tricklers):
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    s.send(b"a")  # a closed one is seen at the next round
    finally:
        for s in silent + tricklers:
            s.close()
    assert scraped is not None and scraped[0] == 200
    assert b"\ntamalloc_scrape_success 1.0\n" in scraped[2]
    assert not open_, f"{len(open_)} connections left open"
    assert answered == []
    threads, sockets, others = peaks
    # Each connection a thread and a socket; one more of each while one closes for
    # another, and the listening socket.
    assert threads <= base_threads + DEFAULT_MAX_CONNECTIONS + 2, peaks
    assert sockets <= DEFAULT_MAX_CONNECTIONS + 3, peaks
    assert others <= base_others + 2, peaks
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=WAIT)
    assert (proc.returncode, err) == (0, "")


def test_the_server_options_reach_the_server() -> None:
    # Each closing below comes from its option alone: the other deadlines are an hour.
    with running_exporter(
        "--max-connections", "2", "--header-timeout", "3600", "--idle-timeout", "0.5"
    ) as (_proc, address):
        scraper = http.client.HTTPConnection(*address, timeout=WAIT)
        assert request(scraper, "GET")[0] == 200
        assert scraper.sock is not None
        assert scraper.sock.recv(1) == b""  # idle for 0.5 s after its answer
        scraper.close()
        silent = [socket.create_connection(address, timeout=WAIT) for _ in range(3)]
        assert silent[0].recv(1) == b""  # the third took its place
        for s in silent:
            s.close()
    with (
        running_exporter("--header-timeout", "0.5") as (_proc, address),
        socket.create_connection(address, timeout=WAIT) as s,
    ):
        assert trickle(s, b"GET /metrics HTTP/1.1\r\n") == b""
