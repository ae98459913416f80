"""`tamalloc exporter` scraped by a real Prometheus server (Debian package prometheus).

One Prometheus per module, on loopback with a temporary config and storage directory,
scrapes one exporter per backend present (procfs always; kernel on the patched kernel;
bpf where it can run) every second; the tests query its HTTP API and compare with the
Python API read at the same moment. A child with a known, still allocation and
oom_score_adj 1000 is the anchor: it is first by OOM score, so it is among the exported
processes, and its figures do not drift. Every wait is bounded; everything started is
killed at teardown.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tamalloc
from _support import CHILD_SCRIPT, MiB, subprocess_env
from conftest import IN_VM
from tamalloc.backends import bpf_unavailable_reason

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "examples" / "prometheus" / "rules.yml"
MISSING = (
    "is not installed: `make deps` installs it (Debian package prometheus, vm/install-deps.sh)"
)
# Generous: the guest emulates every instruction of a debug kernel, and the host is
# shared with kernel builds. Waits end as soon as their condition holds.
WAIT = 600.0 if IN_VM else 120.0
SCRAPE_INTERVAL = "5s" if IN_VM else "1s"  # a scrape also answers in time under emulation
TOP = 3
ANCHOR_RESERVE, ANCHOR_TOUCH = 96 * MiB, 24 * MiB
# Raising one's own oom_score_adj needs no privilege: 1000 puts the anchor first.
ANCHOR_SCRIPT = "open('/proc/self/oom_score_adj', 'w').write('1000')\n" + CHILD_SCRIPT


def require_program(name: str) -> str:
    """The program's path; a FAILURE (never a skip) when it is missing."""
    path = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin")
    if path is None:
        pytest.fail(f"{name} {MISSING}")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback_works() -> bool:
    with socket.socket() as server, socket.socket() as client:
        client.settimeout(5)
        try:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            client.connect(server.getsockname())
        except OSError:
            return False
    return True


def bring_up_loopback() -> None:
    """``ip link set lo up`` by ioctl (root only)."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(s, siocgifflags, ifreq))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sh14x", b"lo", flags | iff_up))


def ensure_loopback() -> None:
    """TCP over 127.0.0.1 works, or the test fails saying why. The guest's init leaves
    the loopback interface down: there (only), as root, it is brought up here."""
    if loopback_works():
        return
    if IN_VM and os.geteuid() == 0:
        bring_up_loopback()
        if loopback_works():
            return
    pytest.fail("no TCP over 127.0.0.1: the loopback interface is down (ip link set lo up)")


@pytest.fixture(scope="module", autouse=True)
def loopback() -> None:
    ensure_loopback()


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The next stdout line of ``proc``, waiting at most ``timeout`` seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def stop(proc: subprocess.Popen[Any], grace: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(timeout=grace)


@dataclass
class Server:
    url: str
    log: Path
    exporters: dict[str, int]  # backend -> port
    anchor_pid: int

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=30) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=promql)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def value(self, promql: str) -> float:
        result = self.query(promql)
        assert len(result) == 1, f"{promql}: {result}"
        return float(result[0]["value"][1])

    def wait_for(self, promql: str, what: str) -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, AssertionError, ValueError):
                if self.query(promql):
                    return
            time.sleep(0.5)
        pytest.fail(f"Prometheus: no {what} within {WAIT:.0f} s; its log:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])


def start_exporter(backend: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tamalloc",
            "--backend",
            backend,
            "exporter",
            "--listen",
            "127.0.0.1:0",
            "--top",
            str(TOP),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    line = read_line(proc, WAIT)
    if "serving http://127.0.0.1:" not in line:
        stop(proc)
        assert proc.stderr is not None
        pytest.fail(f"the {backend} exporter did not start: {line!r} {proc.stderr.read()!r}")
    port = int(line.split("127.0.0.1:")[1].split("/")[0])
    return proc, port


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    binary = require_program("prometheus")
    ensure_loopback()
    tmp = tmp_path_factory.mktemp("prometheus")
    started: list[subprocess.Popen[Any]] = []
    anchor = subprocess.Popen(
        [sys.executable, "-c", ANCHOR_SCRIPT, str(ANCHOR_RESERVE), str(ANCHOR_TOUCH)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    started.append(anchor)
    try:
        assert read_line(anchor, WAIT) == "ready\n", "the anchor child failed to allocate"
        backends = [
            "procfs",
            *(["kernel"] if tamalloc.kernel_available() else []),
            *(["bpf"] if bpf_unavailable_reason() is None else []),
        ]
        exporters = {}
        for backend in backends:
            proc, port = start_exporter(backend)
            started.append(proc)
            exporters[backend] = port
        jobs = "".join(
            f"  - job_name: tamalloc-{backend}\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
            for backend, port in exporters.items()
        )
        config = tmp / "prometheus.yml"
        config.write_text(
            f"global: {{scrape_interval: {SCRAPE_INTERVAL}, scrape_timeout: {SCRAPE_INTERVAL},"
            f" evaluation_interval: {SCRAPE_INTERVAL}}}\n"
            f"rule_files: ['{RULES}']\n"
            f"scrape_configs:\n{jobs}"
        )
        port = free_port()
        log = tmp / "prometheus.log"
        with log.open("wb") as log_file:
            server_proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(server_proc)
        server = Server(f"http://127.0.0.1:{port}", log, exporters, anchor.pid)
        deadline = time.monotonic() + WAIT
        while True:
            if server_proc.poll() is not None:
                pytest.fail(
                    f"prometheus exited with {server_proc.returncode}:\n{server.log_tail()}"
                )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{server.url}/-/ready", timeout=10) as ready,
            ):
                if ready.status == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus not ready within {WAIT:.0f} s:\n{server.log_tail()}")
            time.sleep(0.5)
        for backend in exporters:
            server.wait_for(
                f'sum_over_time(tamalloc_scrape_success{{job="tamalloc-{backend}"}}[10m]) >= 2',
                f"two successful scrapes of the {backend} exporter",
            )
        yield server
    finally:
        for proc in reversed(started):
            stop(proc)


def api_snapshot(backend: str) -> dict[str, float]:
    stats = tamalloc.all_mem_stats(backend=backend)
    total = tamalloc.total_mem_stats(backend=backend)
    return {
        "processes": len(stats),
        "resident": sum(s.committed_kb for s in stats) * 1024,
        "reserved": sum(s.reserved_kb for s in stats) * 1024,
        "committed_as": total.committed_as_kb * 1024,
    }


def test_prometheus_values_equal_the_python_api(prometheus: Server, backend: str) -> None:
    job = f'job="tamalloc-{backend}"'
    anchor = f'{job},pid="{prometheus.anchor_pid}"'
    assert prometheus.value(f"up{{{job}}}") == 1
    assert prometheus.query(f'tamalloc_exporter_info{{{job},backend="{backend}"}}')

    before = api_snapshot(backend)
    scraped = {
        "processes": prometheus.value(f"tamalloc_processes{{{job}}}"),
        "resident": prometheus.value(f"tamalloc_processes_resident_bytes{{{job}}}"),
        "reserved": prometheus.value(f"tamalloc_processes_reserved_bytes{{{job}}}"),
        "committed_as": prometheus.value(f"tamalloc_system_committed_as_bytes{{{job}}}"),
        "mem_total": prometheus.value(f"tamalloc_system_memory_bytes{{{job}}}"),
        "commit_limit": prometheus.value(f"tamalloc_system_commit_limit_bytes{{{job}}}"),
        "overcommit": prometheus.value(f"tamalloc_system_overcommit_mode{{{job}}}"),
        "anchor_reserved": prometheus.value(f"tamalloc_process_reserved_bytes{{{anchor}}}"),
        "anchor_resident": prometheus.value(f"tamalloc_process_resident_bytes{{{anchor}}}"),
        "anchor_score": prometheus.value(f"tamalloc_process_oom_score{{{anchor}}}"),
    }
    me = tamalloc.mem_stats(prometheus.anchor_pid, backend=backend)
    total = tamalloc.total_mem_stats(backend=backend)
    after = api_snapshot(backend)

    # Still figures: equal (the anchor sits on stdin, the sysctls and RAM do not move).
    assert scraped["mem_total"] == total.mem_total_kb * 1024
    assert scraped["commit_limit"] == total.commit_limit_kb * 1024
    assert scraped["overcommit"] == total.overcommit_memory
    assert scraped["anchor_reserved"] == me.reserved_kb * 1024
    assert abs(scraped["anchor_resident"] - me.committed_kb * 1024) <= 256 * 1024
    assert me.committed_kb * 1024 >= ANCHOR_TOUCH
    assert me.oom_score_adj == 1000 and me.oom_score >= 1332  # (1000 + 1000) x 2/3
    assert abs(scraped["anchor_score"] - me.oom_score) <= 5
    names = {
        r["metric"]["name"]
        for r in prometheus.query(f"tamalloc_process_resident_bytes{{{anchor}}}")
    }
    assert names == {me.name}
    # Figures of a live system (other work starts and ends processes): within the
    # readings just before and after, widened by a quarter, which a wrong unit (kB for
    # bytes) or a missed part of the sum would overshoot many times.
    for key in ("processes", "resident", "reserved", "committed_as"):
        low = min(before[key], after[key]) * 0.75
        high = max(before[key], after[key]) * 1.25 + 2
        assert low <= scraped[key] <= high, (key, scraped[key], before[key], after[key])
    # What the README's "Fleet monitoring" shows (seen with pytest -s).
    print(f"\n$ curl -s http://127.0.0.1:{prometheus.exporters[backend]}/metrics")
    with urllib.request.urlopen(
        f"http://127.0.0.1:{prometheus.exporters[backend]}/metrics", timeout=60
    ) as response:
        print(response.read().decode())
    promql = f"tamalloc_process_resident_bytes{{{anchor}}}"
    print(f"$ curl -s {prometheus.url}/api/v1/query --data-urlencode 'query={promql}'")
    query = urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/query?{query}", timeout=60) as r:
        print(r.read().decode())
    # At most 2 * TOP processes per scrape, however many exist.
    assert len(prometheus.query(f"tamalloc_process_resident_bytes{{{job}}}")) <= 2 * TOP


def test_prometheus_reads_types_and_help(prometheus: Server) -> None:
    # Prometheus negotiates OpenMetrics, where a family is named without its _total.
    metadata = prometheus.get("/api/v1/metadata")
    ours = {name: entries[0] for name, entries in metadata.items() if name.startswith("tamalloc_")}
    counters = {name for name, meta in ours.items() if meta["type"] == "counter"}
    assert counters == {"tamalloc_scrape_errors"}
    assert ours["tamalloc_process_resident_bytes"]["type"] == "gauge"
    assert "VmRSS" in ours["tamalloc_process_resident_bytes"]["help"]
    assert all(meta["help"] for meta in ours.values())
    for backend in prometheus.exporters:
        job = f'job="tamalloc-{backend}"'
        assert prometheus.value(f"tamalloc_scrape_errors_total{{{job}}}") == 0
        assert prometheus.value(f"tamalloc_scrape_duration_seconds{{{job}}}") > 0


def test_prometheus_loads_the_example_rules(prometheus: Server) -> None:
    groups = prometheus.get("/api/v1/rules")["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["name"] for rule in rules} >= {
        "TamallocCommitHeadroomLow",
        "TamallocProcessNearOomLine",
        "TamallocCgroupHeadroomLow",
        "TamallocOomForecast",  # its query template too: health "ok" below
    }
    prometheus.wait_for(
        'ALERTS{alertname="TamallocProcessNearOomLine"}', "evaluation of the example rules"
    )
    assert all(rule["health"] in ("ok", "unknown") for rule in rules), rules
