"""`tamalloc exporter` and tamalloc.exporter: the metrics, their bounds, the textfile,
bad input, and scrapes while processes come and go. (The real Prometheus server is in
test_exporter_prometheus.py, the alerting rules in test_exporter_rules.py.)"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import tamalloc
from _support import Child, assert_clean_error, run_cli, subprocess_env
from conftest import IN_VM
from tamalloc.exporter import MemoryCollector, make_registry, render, top_processes, write_textfile
from tamalloc.models import MemStats, TotalMemStats
from test_exporter_prometheus import ensure_loopback

WAIT = 600.0 if IN_VM else 120.0  # the guest emulates every instruction


@pytest.fixture(scope="module", autouse=True)
def loopback() -> None:
    """The HTTP tests need TCP over 127.0.0.1 (down in the guest until brought up)."""
    ensure_loopback()

FAMILIES = {
    "tamalloc_exporter_info": "gauge",  # an info metric is a gauge in the text format
    "tamalloc_system_committed_as_bytes": "gauge",
    "tamalloc_system_commit_limit_bytes": "gauge",
    "tamalloc_system_memory_bytes": "gauge",
    "tamalloc_system_overcommit_mode": "gauge",
    "tamalloc_processes_all_visible": "gauge",
    "tamalloc_processes_hidden": "gauge",
    "tamalloc_processes": "gauge",
    "tamalloc_processes_reserved_bytes": "gauge",
    "tamalloc_processes_resident_bytes": "gauge",
    "tamalloc_processes_swap_bytes": "gauge",
    "tamalloc_process_reserved_bytes": "gauge",
    "tamalloc_process_resident_bytes": "gauge",
    "tamalloc_process_swap_bytes": "gauge",
    "tamalloc_process_oom_score": "gauge",
    "tamalloc_scrape_success": "gauge",
    "tamalloc_scrape_errors": "counter",
    "tamalloc_scrape_duration_seconds": "gauge",
}


def scrape(collector: MemoryCollector) -> dict[str, list[tuple[dict[str, str], float]]]:
    """One scrape through the text format, parsed back: {sample name: [(labels, value)]}."""
    text = render(make_registry(collector)).decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((dict(s.labels), s.value))
    return samples


def one(metrics: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    (_labels, value), = metrics[name]
    return value


def fake_stats(count: int) -> list[MemStats]:
    """``count`` processes with distinct figures: OOM score rising with the pid, resident
    memory falling, so the two rankings pick different processes."""
    return [
        MemStats.build(pid, f"p{pid}", 4 * pid, count - pid, count - pid, 0, 0, pid % 3,
                       pid % 1000, 0)
        for pid in range(1, count + 1)
    ]


class FakeBackend:
    def __init__(self, stats: list[MemStats] | Exception, name: str = "procfs",
                 hidden: int | None = 0) -> None:
        self.name = name
        self.stats = stats
        self.hidden = hidden
        self.total_calls = 0

    def all_mem_stats(self) -> list[MemStats]:
        if isinstance(self.stats, Exception):
            raise self.stats
        return self.stats

    def total_mem_stats(self) -> TotalMemStats:
        self.total_calls += 1
        return TotalMemStats(0, 0, 0, 0, 0, 0, 0, 0, hidden_processes=self.hidden)


def with_backend(fake: FakeBackend, **kwargs: Any) -> MemoryCollector:
    collector = MemoryCollector(backend="procfs", **kwargs)
    collector.backend = fake  # type: ignore[assignment]
    return collector


def test_every_family_with_its_type_and_help(backend: str) -> None:
    metrics = scrape(MemoryCollector(backend=backend))
    text = render(make_registry(MemoryCollector(backend=backend))).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected = dict(FAMILIES)
    if tamalloc.visibility(backend=backend).hidden is None:  # /proc hidepid, not root
        del expected["tamalloc_processes_hidden"]
    assert {name: f.type for name, f in families.items()} == expected
    assert all(len(f.documentation) > 20 for f in families.values())
    info, = metrics["tamalloc_exporter_info"]
    assert info[0] == {"backend": backend, "version": tamalloc.__version__}
    assert one(metrics, "tamalloc_scrape_success") == 1
    assert one(metrics, "tamalloc_scrape_errors_total") == 0
    assert one(metrics, "tamalloc_processes") > 0


def test_sizes_are_bytes_of_the_python_api(backend: str, child: Child) -> None:
    metrics = scrape(MemoryCollector(backend=backend, top=100_000))
    me = tamalloc.mem_stats(child.pid, backend=backend)
    total = tamalloc.total_mem_stats(backend=backend)
    assert one(metrics, "tamalloc_system_memory_bytes") == total.mem_total_kb * 1024
    assert one(metrics, "tamalloc_system_commit_limit_bytes") == total.commit_limit_kb * 1024
    assert one(metrics, "tamalloc_system_overcommit_mode") == total.overcommit_memory
    mine = {name: [v for labels, v in samples if labels.get("pid") == str(child.pid)]
            for name, samples in metrics.items()}
    assert mine["tamalloc_process_reserved_bytes"] == [me.reserved_kb * 1024]
    assert abs(mine["tamalloc_process_resident_bytes"][0] - me.committed_kb * 1024) <= 256 * 1024
    assert mine["tamalloc_process_resident_bytes"][0] >= child.touch
    assert abs(mine["tamalloc_process_oom_score"][0] - me.oom_score) <= 5


def test_totals_and_top_processes_come_from_one_scan() -> None:
    stats = fake_stats(5000)
    metrics = scrape(with_backend(FakeBackend(stats), top=7))
    assert one(metrics, "tamalloc_processes") == 5000
    for name, field in (("reserved", "reserved_kb"), ("resident", "committed_kb"),
                        ("swap", "swap_kb")):
        expected = sum(getattr(s, field) for s in stats) * 1024
        assert one(metrics, f"tamalloc_processes_{name}_bytes") == expected
    pids = {labels["pid"] for labels, _ in metrics["tamalloc_process_resident_bytes"]}
    by_oom = sorted(stats, key=lambda s: (s.oom_score, s.committed_kb))[-7:]
    by_rss = sorted(stats, key=lambda s: s.committed_kb)[-7:]
    assert pids == {str(s.pid) for s in by_oom + by_rss}
    assert len(pids) == 14
    for name in ("reserved", "resident", "swap", "oom_score"):
        labels = [lab for lab, _ in metrics[f"tamalloc_process_{name}" + ("_bytes" if name in (
            "reserved", "resident", "swap") else "")]]
        assert {lab["pid"] for lab in labels} == pids
        assert all(lab["name"] == f"p{lab['pid']}" for lab in labels)


@pytest.mark.parametrize("count", [0, 1, 10, 30, 10_000])
def test_per_process_series_stay_bounded(count: int) -> None:
    stats = fake_stats(count)
    chosen = top_processes(stats, 10)
    assert len(chosen) == min(count, 20)  # the two rankings differ in fake_stats
    assert [s.pid for s in chosen] == sorted(s.pid for s in chosen)
    if stats:
        assert max(stats, key=lambda s: s.oom_score) in chosen
        assert max(stats, key=lambda s: s.committed_kb) in chosen
    assert top_processes(stats, 0) == []


@pytest.mark.parametrize(("error", "line"), [
    (OSError(5, "Input/output error"), "[Errno 5] Input/output error"),
    (RuntimeError("unexpected"), "RuntimeError: unexpected"),
])
def test_a_failed_part_still_answers_and_is_counted(error: Exception, line: str) -> None:
    errors: list[str] = []
    collector = with_backend(FakeBackend(error), on_error=errors.append)
    for n in (1, 2):
        metrics = scrape(collector)
        assert one(metrics, "tamalloc_scrape_success") == 0
        assert one(metrics, "tamalloc_scrape_errors_total") == n
        assert "tamalloc_processes" not in metrics  # absent, never a wrong 0
        assert one(metrics, "tamalloc_system_memory_bytes") > 0  # the other part still read
    assert errors == [f"scrape: cannot read the processes: {line}"] * 2


@pytest.mark.parametrize(("restrict", "cap_eff", "calls", "hidden"), [
    ("0\n", "0000000000000000", 0, 0),  # nothing is restricted
    ("1\n", "000001ffffffffff", 0, 0),  # root's capabilities: CAP_SYS_PTRACE sees all
    ("1\n", "0000000000080000", 0, 0),  # CAP_SYS_PTRACE alone (the systemd unit)
    ("1\n", "0000000000000000", 1, 3),  # unprivileged: the kernel counts what it hides
])
def test_kernel_backend_asks_for_the_hidden_count_only_when_some_may_be_hidden(
    restrict: str, cap_eff: str, calls: int, hidden: int, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tamalloc.exporter as exporter

    (tmp_path / "restrict").write_text(restrict)
    (tmp_path / "status").write_text(f"Name:\tx\nCapInh:\t0\nCapEff:\t{cap_eff}\n")
    monkeypatch.setattr(exporter, "_RESTRICT_PATH", str(tmp_path / "restrict"))
    monkeypatch.setattr(exporter, "_STATUS_PATH", str(tmp_path / "status"))
    fake = FakeBackend(fake_stats(10), name="kernel", hidden=3)
    metrics = scrape(with_backend(fake))
    assert fake.total_calls == calls
    assert one(metrics, "tamalloc_processes_hidden") == hidden
    assert one(metrics, "tamalloc_processes_all_visible") == (0 if hidden else 1)
    assert one(metrics, "tamalloc_system_memory_bytes") > 0  # /proc/meminfo either way


def test_hidden_count_is_the_python_apis(backend: str) -> None:
    metrics = scrape(MemoryCollector(backend=backend))
    seen = tamalloc.visibility(backend=backend)
    if seen.hidden is None:
        assert "tamalloc_processes_hidden" not in metrics
    else:
        assert one(metrics, "tamalloc_processes_hidden") == seen.hidden
    assert one(metrics, "tamalloc_processes_all_visible") == (1 if seen.complete else 0)


# Keeps about 40 short-lived children (1-30 ms each) going until its stdin closes, so
# that processes exit in the middle of every scan.
CHURN = r"""
import os, random, select, sys, time
alive = set()
print("ready", flush=True)
deadline = time.monotonic() + 300
while time.monotonic() < deadline and not select.select([sys.stdin], [], [], 0)[0]:
    while len(alive) < 40:
        delay = random.uniform(0.001, 0.03)
        pid = os.fork()
        if pid == 0:
            time.sleep(delay)
            os._exit(0)
        alive.add(pid)
    pid, _ = os.wait()
    alive.discard(pid)
for pid in alive:
    os.waitpid(pid, 0)
"""


@pytest.fixture
def churn() -> Iterator[None]:
    proc = subprocess.Popen([sys.executable, "-c", CHURN], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    assert select.select([proc.stdout], [], [], WAIT)[0], "the churning child did not start"
    assert proc.stdout.readline() == "ready\n"
    yield
    proc.stdin.close()
    try:
        proc.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0


def test_scrapes_succeed_while_processes_exit(backend: str, churn: None) -> None:
    errors: list[str] = []
    collector = MemoryCollector(backend=backend, on_error=errors.append)
    for _ in range(30):
        metrics = scrape(collector)
        assert one(metrics, "tamalloc_scrape_success") == 1, errors
        assert one(metrics, "tamalloc_processes") > 0
    assert errors == []


@pytest.fixture
def exporter() -> Iterator[Callable[..., tuple[subprocess.Popen[str], str]]]:
    """Factory: start `tamalloc exporter ARGS --listen 127.0.0.1:0`; (process, URL)."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> tuple[subprocess.Popen[str], str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tamalloc", *args, "exporter", "--listen", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=subprocess_env(),
        )
        started.append(proc)
        assert proc.stdout is not None
        assert select.select([proc.stdout], [], [], WAIT)[0], "the exporter did not start"
        line = proc.stdout.readline()
        assert line.startswith("tamalloc exporter: serving http://127.0.0.1:"), line
        return proc, line.split()[3]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=WAIT)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as response:
        assert response.status == 200
        return str(response.read().decode())


def test_http_scrapes_while_processes_exit_then_sigterm_exits_0(
    exporter: Callable[..., tuple[subprocess.Popen[str], str]], churn: None
) -> None:
    proc, url = exporter()
    for _ in range(10):
        text = get(url)
        assert "\ntamalloc_scrape_success 1.0\n" in text
        assert 'backend="' in text
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=WAIT)
    assert (proc.returncode, err) == (0, "")


def test_a_scraper_hanging_up_gives_no_traceback(
    exporter: Callable[..., tuple[subprocess.Popen[str], str]]
) -> None:
    proc, url = exporter()
    host, port = url.split("/")[2].split(":")
    for _ in range(20):  # ask, then reset the connection before the answer is read
        with socket.create_connection((host, int(port)), timeout=WAIT) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert "\ntamalloc_scrape_success 1.0\n" in get(url)  # still answering
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0
    assert "Traceback" not in err
    assert all(line.startswith("tamalloc: error: answering ") for line in err.splitlines())


def test_port_in_use_is_one_line_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli("exporter", "--listen", f"127.0.0.1:{port}")
    line = assert_clean_error(result, 1)
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in line


@pytest.mark.parametrize("listen", [
    "9847", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:http",
    "::1:9847", "[not-ipv6]:9847", "no-such-host.invalid:9847",
])
def test_invalid_listen_is_a_usage_error(listen: str) -> None:
    line = assert_clean_error(run_cli("exporter", "--listen", listen), 2)
    assert "--listen" in line


@pytest.mark.parametrize("args", [
    ["--interval", "5"],
    ["--textfile", "x.prom", "--listen", "127.0.0.1:0"],
    ["--top", "-1"],
    ["--textfile", "x.prom", "--interval", "0"],
])
def test_conflicting_or_bad_options_are_usage_errors(args: list[str], tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "tamalloc", "exporter", *args],
                            capture_output=True, text=True, timeout=WAIT, cwd=tmp_path,
                            env=subprocess_env(), stdin=subprocess.DEVNULL)
    assert_clean_error(result, 2)
    assert not (tmp_path / "x.prom").exists()


def test_unwritable_textfile_is_one_line_exit_1(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    for path, reason in [
        (tmp_path / "missing" / "t.prom", "No such file or directory"),
        (a_file / "t.prom", "Not a directory"),
        (tmp_path, "Is a directory"),
    ]:
        line = assert_clean_error(run_cli("exporter", "--textfile", str(path)), 1)
        assert line == f"tamalloc: error: cannot write textfile {path}: {reason}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no temporary left


def test_without_prometheus_client_the_error_says_what_to_install() -> None:
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "from tamalloc.cli.main import main; sys.exit(main(['exporter']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=WAIT, env=subprocess_env(), stdin=subprocess.DEVNULL)
    line = assert_clean_error(result, 1)
    assert "pip install 'tamalloc[exporter]'" in line


def test_textfile_once(tmp_path: Path) -> None:
    path = tmp_path / "tamalloc.prom"
    result = run_cli("exporter", "--textfile", str(path), "--top", "2")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    assert set(families) == set(FAMILIES)
    assert len(families["tamalloc_process_resident_bytes"].samples) <= 4
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # node_exporter may be another user
    assert [p.name for p in tmp_path.iterdir()] == ["tamalloc.prom"]


def test_textfile_not_named_prom_gets_a_note(tmp_path: Path) -> None:
    result = run_cli("exporter", "--textfile", str(tmp_path / "tamalloc.txt"))
    assert result.returncode == 0
    assert result.stderr == (f"tamalloc: note: node_exporter's textfile collector reads only"
                             f" *.prom files, not {tmp_path / 'tamalloc.txt'}\n")


def test_textfile_every_interval_until_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "tamalloc.prom"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tamalloc", "exporter", "--textfile", str(path),
         "--interval", "0.2"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=subprocess_env(),
    )
    try:
        inodes = set()
        deadline = time.monotonic() + WAIT
        while len(inodes) < 3 and time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):
                inodes.add(path.stat().st_ino)  # each write is a new file renamed over
            time.sleep(0.05)
        assert len(inodes) >= 3, "fewer than 3 writes"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=WAIT)
        assert (proc.returncode, out, err) == (0, "", "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [p.name for p in tmp_path.iterdir()] == ["tamalloc.prom"]


def test_a_reader_never_sees_a_partial_textfile(tmp_path: Path) -> None:
    path = tmp_path / "tamalloc.prom"
    registry = make_registry(MemoryCollector(backend="procfs", top=50))
    write_textfile(path, registry)
    stop = threading.Event()
    seen: list[str] = []

    def read() -> None:
        while not stop.is_set():
            seen.append(path.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(100):
            write_textfile(path, registry)
    finally:
        stop.set()
        reader.join(timeout=WAIT)
    assert seen
    for text in seen:
        assert text.startswith("# HELP tamalloc_exporter_info ")
        assert "\ntamalloc_scrape_duration_seconds " in text and text.endswith("\n")


def test_a_failed_write_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tamalloc.prom"
    path.write_text("old\n")

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        write_textfile(path, make_registry(MemoryCollector(backend="procfs")))
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["tamalloc.prom"]


def test_promtool_finds_no_naming_problem() -> None:
    promtool = shutil.which("promtool") or shutil.which("promtool", path="/usr/bin")
    if promtool is None:
        pytest.fail("promtool is not installed: `make deps` installs it (Debian package"
                    " prometheus, vm/install-deps.sh)")
    text = render(make_registry(MemoryCollector(backend="procfs")))
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                            timeout=WAIT)
    assert (result.returncode, result.stdout + result.stderr) == (0, b"")

