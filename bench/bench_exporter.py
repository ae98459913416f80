#!/usr/bin/env python3
"""Cost of a `tamalloc exporter` scrape against the bare all_mem_stats() call.

With --processes idle processes (default 1,000) added, each of --runs rounds (default 5)
times, in alternating calls (the best of --repeat each):
  * bare:   tamalloc.all_mem_stats(backend=B);
  * render: one scrape in this process, collect + text format (what the HTTP handler
            and the textfile writer do): MemoryCollector with the CLI's --top default;
  * HTTP:   GET /metrics from a `tamalloc exporter` started for the benchmark (its own
            process, on loopback), twice: with urllib on a new connection each time,
            and on one kept-alive connection with a minimal client, which is how
            Prometheus scrapes (its Go client keeps the connection and costs little).
Ratios are taken within a round, then reported as median, min and max over the rounds,
with the fixed work of a scrape (its time minus the bare call's). Target: a scrape
costs at most 2x the bare call (median, render in wall and CPU time, HTTP in wall
time). Exit status 0 whatever the results, unless --strict.

--emulate-kernel adds the same rounds for the kernel backend emulated on a host that
lacks it: the bare call is the kernel backend's decoding of recorded records, without
the system call, so those ratios (labelled "emulated kernel") are upper bounds of what
the guest measures.

Host: `.venv/bin/python bench/bench_exporter.py --emulate-kernel` (procfs backend). The
kernel backend: `make vm-run CMD='.venv/bin/python bench/bench_exporter.py --backend kernel'`.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from _timing import (
    ROOT,
    Report,
    best_of_each_wall_cpu,
    count_user_processes,
    fmt_time,
    idle_processes,
    load_average,
    spread,
)

# isort: split
import tamalloc
from tamalloc import abi
from tamalloc.backends.kernel import _from_records
from tamalloc.exporter import collector as exporter
from tamalloc.exporter.collector import DEFAULT_TOP, MemoryCollector, make_registry, render
from tamalloc.models import MemStats

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

TARGET = 2.0


def start_exporter(argv: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start a server (its own process) that prints tamalloc exporter's "serving" line."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen(
        [sys.executable, *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "serving http://" not in line:
        proc.kill()
        raise RuntimeError(f"the exporter did not start: {line!r}")
    return proc, line.split()[3]


def new_connection_get(url: str) -> Callable[[], bytes]:
    """GET with urllib, a new connection each time (urllib sends Connection: close)."""

    def get() -> bytes:
        with urllib.request.urlopen(url, timeout=60) as response:
            return bytes(response.read())

    return get


class KeptAliveGet:
    """GET on one connection kept open between calls, as Prometheus scrapes (its Go
    client reuses the connection), with the least client work: a fixed request, the
    answer read to its Content-Length. The client's own cost is in the wall time
    measured; urllib's is about half a millisecond a request here, more than the
    kernel backend's whole scan, where Prometheus's is tens of microseconds."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self.address = (parts.hostname, parts.port)
        self.request = f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode()
        self.sock: socket.socket | None = None

    def __call__(self) -> bytes:
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=60)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock = self.sock
        sock.sendall(self.request)
        data = b""
        while (end := data.find(b"\r\n\r\n")) < 0:
            data += self._recv(sock)
        head, body = data[:end].lower(), data[end + 4 :]
        if not head.startswith((b"http/1.1 200 ", b"http/1.0 200 ")):
            raise RuntimeError(f"unexpected answer: {head[:80]!r}")
        length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        while len(body) < length:
            body += self._recv(sock)
        # A server that does not keep connections (HTTP/1.0, as the exporter's earlier
        # wsgiref server) is still measured: then each call connects anew.
        if head.startswith(b"http/1.0") or b"\r\nconnection: close" in head:
            self.close()
        return body

    @staticmethod
    def _recv(sock: socket.socket) -> bytes:
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise RuntimeError("the exporter closed a kept-alive connection")
        return chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def measure(
    report: Report, title: str, fns: Sequence[Callable[[], object]], repeat: int, runs: int
) -> list[list[tuple[float, float]]]:
    """``runs`` rounds of best_of_each_wall_cpu over (bare, render, HTTP new
    connection, HTTP kept alive); one report line a round."""
    rounds = []
    for run in range(runs):
        bare, rendered, fetched, kept = result = best_of_each_wall_cpu(*fns, repeat=repeat)
        rounds.append(result)
        report.note(
            f"{title}run {run + 1} (load {load_average()})",
            f"bare {fmt_time(bare[0])}, render {fmt_time(rendered[0])}"
            f" ({rendered[0] / bare[0]:.2f}x wall, {rendered[1] / bare[1]:.2f}x CPU),"
            f" HTTP {fmt_time(fetched[0])} ({fetched[0] / bare[0]:.2f}x),"
            f" kept alive {fmt_time(kept[0])} ({kept[0] / bare[0]:.2f}x)",
        )
    return rounds


NAMES = (
    "bare all_mem_stats",
    "render (collect + format)",
    "HTTP GET, new connection",
    "HTTP GET, kept-alive connection",
)


def summarize(
    report: Report, title: str, rounds: list[list[tuple[float, float]]], target_note: str
) -> None:
    """Medians and min-max spreads over the rounds, the fixed work (scrape minus bare),
    and the target lines."""
    runs = len(rounds)
    for i, name in enumerate(NAMES):
        lo, mid, hi = spread([r[i][0] for r in rounds])
        report.note(
            f"{title}{name}, wall",
            f"median {fmt_time(mid)} (min {fmt_time(lo)}, max {fmt_time(hi)})",
        )
    for i in (1, 2, 3):
        lo, mid, hi = spread([r[i][0] - r[0][0] for r in rounds])
        report.note(
            f"{title}fixed work, {NAMES[i].split(' (')[0]} - bare",
            f"median {fmt_time(mid)} (min {fmt_time(lo)}, max {fmt_time(hi)})",
        )

    def ratio(label: str, i: int, k: int) -> float:
        lo, mid, hi = spread([r[i][k] / r[0][k] for r in rounds])
        report.note(
            f"{title}{label}", f"median {mid:.2f}x (min {lo:.2f}x, max {hi:.2f}x, {runs} runs)"
        )
        return mid

    render_wall = ratio("render / bare, wall", 1, 0)
    render_cpu = ratio("render / bare, CPU", 1, 1)
    http_wall = ratio("HTTP new connection / bare, wall", 2, 0)
    kept_wall = ratio("HTTP kept alive / bare, wall", 3, 0)
    report.target(
        f"{target_note}a scrape rendered <= {TARGET}x the bare call, wall ({render_wall:.2f}x)",
        render_wall <= TARGET,
    )
    report.target(f"{target_note}the same in CPU time ({render_cpu:.2f}x)", render_cpu <= TARGET)
    report.target(
        f"{target_note}an HTTP scrape, new connection (urllib) <= {TARGET}x the"
        f" bare call, wall ({http_wall:.2f}x)",
        http_wall <= TARGET,
    )
    report.target(
        f"{target_note}an HTTP scrape on a kept-alive connection (as Prometheus)"
        f" <= {TARGET}x the bare call, wall ({kept_wall:.2f}x)",
        kept_wall <= TARGET,
    )


def bench(report: Report, backend: str, repeat: int, runs: int) -> list[MemStats]:
    n = count_user_processes()
    report.note("user processes", str(n))
    registry = make_registry(MemoryCollector(backend=backend, top=DEFAULT_TOP))
    proc, url = start_exporter(
        ["-m", "tamalloc", "--backend", backend, "exporter", "--listen", "127.0.0.1:0"]
    )
    kept = KeptAliveGet(url)
    try:
        size = len(kept())
        report.note("scrape size", f"{size:,} bytes (--top {DEFAULT_TOP})")
        fns = (
            lambda: tamalloc.all_mem_stats(backend=backend),
            lambda: render(registry),
            new_connection_get(url),
            kept,
        )
        rounds = measure(report, "", fns, repeat, runs)
    finally:
        kept.close()
        proc.terminate()
        proc.wait(timeout=60)
    # The scrape's own work beyond the scan: the same collector on a list read once.
    # On the kernel backend, where the scan takes about a millisecond, this is the
    # part that the 2x target bounds.
    stats = tamalloc.all_mem_stats(backend=backend)

    class Replay:
        name = backend

        def all_mem_stats(self) -> list[tamalloc.MemStats]:
            return stats

        def total_mem_stats(self) -> tamalloc.TotalMemStats:
            return tamalloc.total_mem_stats(backend=backend)

    replay = MemoryCollector(backend=backend, top=DEFAULT_TOP)
    replay.backend = Replay()  # type: ignore[assignment]
    replay_registry = make_registry(replay)
    extra, _ = best_of_each_wall_cpu(lambda: render(replay_registry), repeat=repeat * 4)[0]
    report.note("scrape work beyond the scan", f"{fmt_time(extra)} (best of {repeat * 4})")
    summarize(report, "", rounds, "")
    return stats


# --- The kernel backend emulated on a host without it -------------------------------
#
# What the guest measures, approximated here: the kernel backend's all_mem_stats() is
# one get_mem_stats system call and the decoding of its records, and the decoding is
# most of it. The emulated bare call decodes a buffer of the records the kernel would
# have written for this host's processes (recorded once, through the procfs backend)
# with the kernel backend's own decoder; the emulated scrapes run the real collector
# and server on an emulated backend that does the same. Leaving the system call out
# makes the bare call cheaper than the real one, so the emulated ratios are upper
# bounds of the guest's (in the guest the call also walks every process). As in the
# guest, where the exporter runs as root, the hidden count is not asked for: the
# collector reads vm.tamalloc_stats_restrict (a stand-in file saying 1, the default)
# and its capabilities, as it does there.

EMULATED = "emulated kernel: "


def kernel_records(stats: Sequence[MemStats]) -> bytes:
    """The get_mem_stats records of ``stats``, as the kernel lays them out."""
    fields = [name for name, *_ in abi.TamallocMemStats._fields_]
    out = bytearray()
    for s in stats:
        record = dict.fromkeys(fields, 0)
        record.update(
            pid=s.pid,
            oom_score=s.oom_score,
            oom_score_adj=s.oom_score_adj,
            size=abi.MEM_STATS_STRUCT.size,
            comm=s.name.encode()[: abi.COMM_LEN - 1],
            reserved_kb=s.reserved_kb,
            committed_kb=s.committed_kb,
            anon_kb=s.anon_kb,
            file_kb=s.file_kb,
            shmem_kb=s.shmem_kb,
            swap_kb=s.swap_kb,
        )
        out += abi.MEM_STATS_STRUCT.pack(*record.values())
    return bytes(out)


class EmulatedKernel:
    """A kernel backend whose system call is replaced by a recorded buffer."""

    name = "kernel"

    def __init__(self, records: bytes) -> None:
        self.view = memoryview(records)

    def all_mem_stats(self) -> list[MemStats]:
        return _from_records(self.view)

    def total_mem_stats(self) -> tamalloc.TotalMemStats:
        # Not called when the capability check passes (root, as in the guest).
        return tamalloc.TotalMemStats(0, 0, 0, 0, 0, 0, 0, 0, some_hidden=False)


def emulated_registry(records: bytes, restrict_file: str) -> CollectorRegistry:
    exporter._RESTRICT_PATH = restrict_file  # the sysctl of the patched kernel
    collector = MemoryCollector(backend="procfs", top=DEFAULT_TOP)
    collector.backend = EmulatedKernel(records)  # type: ignore[assignment]
    return make_registry(collector)


def serve_emulated(records_file: str, restrict_file: str) -> int:
    """The server process of the emulated mode: tamalloc exporter's own HTTP server."""
    from tamalloc.cli.env import Environment
    from tamalloc.cli.exporter import _serve, listen_address

    registry = emulated_registry(Path(records_file).read_bytes(), restrict_file)
    return _serve(listen_address("127.0.0.1:0"), registry, "kernel (emulated)", Environment())


def bench_emulated(report: Report, stats: list[MemStats], repeat: int, runs: int) -> None:
    records = kernel_records(stats)
    view = memoryview(records)
    with tempfile.TemporaryDirectory(prefix="bench-exporter-") as tmp:
        records_file, restrict_file = Path(tmp, "records"), Path(tmp, "restrict")
        records_file.write_bytes(records)
        restrict_file.write_text("1\n")
        registry = emulated_registry(records, str(restrict_file))
        proc, url = start_exporter(
            [__file__, "--serve-emulated", str(records_file), str(restrict_file)]
        )
        kept = KeptAliveGet(url)
        try:
            report.note(
                f"{EMULATED}records",
                f"{len(stats)} recorded, decoded by"
                " tamalloc.backends.kernel._from_records; no system call, so the"
                " ratios are upper bounds of the guest's",
            )
            fns = (
                lambda: _from_records(view),
                lambda: render(registry),
                new_connection_get(url),
                kept,
            )
            rounds = measure(report, EMULATED, fns, repeat, runs)
        finally:
            kept.close()
            proc.terminate()
            proc.wait(timeout=60)
    summarize(report, EMULATED, rounds, "(emulated kernel, host) ")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend",
        choices=("kernel", "procfs"),
        default=tamalloc.default_backend_name(),
        help="default: the one in use (kernel where present)",
    )
    parser.add_argument(
        "--processes", type=int, default=1000, help="extra idle processes (default 1000)"
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="each timing is the best of N calls (default 5)"
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=5,
        help="independent rounds, reported as min/median/max (default 5)",
    )
    parser.add_argument(
        "--emulate-kernel",
        action="store_true",
        help="also time the kernel backend emulated on this host: its"
        " records decoded from a recorded buffer, without the system call"
        " (ratios labelled 'emulated kernel', upper bounds of the guest's)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target fails")
    parser.add_argument(
        "--serve-emulated", nargs=2, metavar=("RECORDS", "RESTRICT"), help=argparse.SUPPRESS
    )  # the server process of --emulate-kernel
    args = parser.parse_args()
    if args.serve_emulated:
        return serve_emulated(*args.serve_emulated)

    report = Report(
        f"tamalloc exporter benchmark, backend {args.backend} (kernel"
        f" {os.uname().release}, {os.cpu_count()} CPUs, load {load_average()})"
    )
    with idle_processes(args.processes):
        stats = bench(report, args.backend, args.repeat, args.runs)
        if args.emulate_kernel:
            bench_emulated(report, stats, args.repeat, args.runs)
    report.note("load at the end", load_average())
    report.print()
    return 1 if args.strict and report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
