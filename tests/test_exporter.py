"""`tamalloc exporter` and tamalloc.exporter: the metrics, their bounds, the textfile,
bad input, and scrapes while processes come and go. (The real Prometheus server is in
test_exporter_prometheus.py, the alerting rules in test_exporter_rules.py.)"""

from __future__ import annotations

import contextlib
import os
import resource
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
import tamalloc.oom
from _support import Child, assert_clean_error, run_cli, run_python, subprocess_env
from conftest import IN_VM
from tamalloc.exporter.collector import MemoryCollector, make_registry, render, top_processes
from tamalloc.exporter.service import OPEN_FILES_WANTED
from tamalloc.exporter.textfile import write_textfile
from tamalloc.models import MemStats, OomTask, TotalMemStats
from tamalloc.oom import OomCgroup, OomInputs
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
OOM_FAMILIES = {  # with --oom only
    "tamalloc_oom_domains": "gauge",
    "tamalloc_oom_domain_limit_bytes": "gauge",
    "tamalloc_oom_domain_usage_bytes": "gauge",
    "tamalloc_oom_domain_headroom_bytes": "gauge",
    "tamalloc_oom_victim": "gauge",
    "tamalloc_oom_group_kill": "gauge",
    "tamalloc_oom_killed_processes": "gauge",
    "tamalloc_oom_forecast_samples": "gauge",
    # Families without samples in a scrape are still declared (HELP, TYPE).
    "tamalloc_oom_domain_seconds_to_oom": "gauge",
    "tamalloc_oom_domain_growth_bytes_per_second": "gauge",
    "tamalloc_oom_domain_forecast_victim_info": "gauge",
}
COUNTER_FAMILIES = {  # with --oom only: memory.events and PSI
    "tamalloc_cgroup_memory_events": "counter",
    "tamalloc_cgroup_memory_pressure_seconds": "counter",
    "tamalloc_system_memory_pressure_seconds": "counter",
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
    ((_labels, value),) = metrics[name]
    return value


def fake_stats(count: int) -> list[MemStats]:
    """``count`` processes with distinct figures: OOM score rising with the pid, resident
    memory falling, so the two rankings pick different processes."""
    return [
        MemStats.build(
            pid, f"p{pid}", 4 * pid, count - pid, count - pid, 0, 0, pid % 3, pid % 1000, 0
        )
        for pid in range(1, count + 1)
    ]


class FakeBackend:
    def __init__(
        self,
        stats: list[MemStats] | Exception,
        name: str = "procfs",
        some_hidden: bool | None = False,
    ) -> None:
        self.name = name
        self.stats = stats
        self.some_hidden = some_hidden
        self.total_calls = 0

    def all_mem_stats(self) -> list[MemStats]:
        if isinstance(self.stats, Exception):
            raise self.stats
        return self.stats

    def total_mem_stats(self) -> TotalMemStats:
        self.total_calls += 1
        return TotalMemStats(0, 0, 0, 0, 0, 0, 0, 0, some_hidden=self.some_hidden)


def with_backend(fake: FakeBackend, **kwargs: Any) -> MemoryCollector:
    collector = MemoryCollector(backend="procfs", **kwargs)
    collector.backend = fake  # type: ignore[assignment]
    return collector


def test_every_family_with_its_type_and_help(backend: str) -> None:
    metrics = scrape(MemoryCollector(backend=backend))
    text = render(make_registry(MemoryCollector(backend=backend))).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {name: f.type for name, f in families.items()} == FAMILIES
    assert all(len(f.documentation) > 20 for f in families.values())
    (info,) = metrics["tamalloc_exporter_info"]
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
    mine = {
        name: [v for labels, v in samples if labels.get("pid") == str(child.pid)]
        for name, samples in metrics.items()
    }
    assert mine["tamalloc_process_reserved_bytes"] == [me.reserved_kb * 1024]
    assert abs(mine["tamalloc_process_resident_bytes"][0] - me.committed_kb * 1024) <= 256 * 1024
    assert mine["tamalloc_process_resident_bytes"][0] >= child.touch
    assert abs(mine["tamalloc_process_oom_score"][0] - me.oom_score) <= 5


def test_totals_and_top_processes_come_from_one_scan() -> None:
    stats = fake_stats(5000)
    metrics = scrape(with_backend(FakeBackend(stats), top=7))
    assert one(metrics, "tamalloc_processes") == 5000
    for name, field in (
        ("reserved", "reserved_kb"),
        ("resident", "committed_kb"),
        ("swap", "swap_kb"),
    ):
        expected = sum(getattr(s, field) for s in stats) * 1024
        assert one(metrics, f"tamalloc_processes_{name}_bytes") == expected
    pids = {labels["pid"] for labels, _ in metrics["tamalloc_process_resident_bytes"]}
    by_oom = sorted(stats, key=lambda s: (s.oom_score, s.committed_kb))[-7:]
    by_rss = sorted(stats, key=lambda s: s.committed_kb)[-7:]
    assert pids == {str(s.pid) for s in by_oom + by_rss}
    assert len(pids) == 14
    for name in ("reserved", "resident", "swap", "oom_score"):
        labels = [
            lab
            for lab, _ in metrics[
                f"tamalloc_process_{name}"
                + ("_bytes" if name in ("reserved", "resident", "swap") else "")
            ]
        ]
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


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (OSError(5, "Input/output error"), "[Errno 5] Input/output error"),
        (RuntimeError("unexpected"), "RuntimeError: unexpected"),
    ],
)
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


@pytest.mark.parametrize(
    ("restrict", "cap_eff", "calls", "hidden"),
    [
        ("0\n", "0000000000000000", 0, False),  # nothing is restricted
        ("1\n", "000001ffffffffff", 0, False),  # root's capabilities: CAP_SYS_PTRACE sees all
        ("1\n", "0000000000080000", 0, False),  # CAP_SYS_PTRACE alone (the systemd unit)
        ("1\n", "0000000000000000", 1, True),  # unprivileged: the kernel says some are hidden
    ],
)
def test_kernel_backend_asks_whether_any_is_hidden_only_when_some_may_be(
    restrict: str,
    cap_eff: str,
    calls: int,
    hidden: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tamalloc.exporter.collector as exporter

    (tmp_path / "restrict").write_text(restrict)
    (tmp_path / "status").write_text(f"Name:\tx\nCapInh:\t0\nCapEff:\t{cap_eff}\n")
    monkeypatch.setattr(exporter, "_RESTRICT_PATH", str(tmp_path / "restrict"))
    monkeypatch.setattr(exporter, "_STATUS_PATH", str(tmp_path / "status"))
    fake = FakeBackend(fake_stats(10), name="kernel", some_hidden=True)
    metrics = scrape(with_backend(fake))
    assert fake.total_calls == calls
    assert "tamalloc_processes_hidden" not in metrics  # no count: it would be a side channel
    assert one(metrics, "tamalloc_processes_all_visible") == (0 if hidden else 1)
    assert one(metrics, "tamalloc_system_memory_bytes") > 0  # /proc/meminfo either way


def test_visibility_is_the_python_apis(backend: str) -> None:
    metrics = scrape(MemoryCollector(backend=backend))
    seen = tamalloc.visibility(backend=backend)
    assert "tamalloc_processes_hidden" not in metrics
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
    proc = subprocess.Popen(
        [sys.executable, "-c", CHURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
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
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
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


def test_the_server_keeps_its_scan_files_open_between_scrapes(
    exporter: Callable[..., tuple[subprocess.Popen[str], str]],
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, soft), hard))  # the usual default
    try:
        proc, url = exporter("--backend", "procfs")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    wanted = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(OPEN_FILES_WANTED, hard)
    with open(f"/proc/{proc.pid}/limits") as f:
        line = next(line for line in f if line.startswith("Max open files"))
    assert int(line.split()[3]) == wanted
    for _ in range(3):
        assert "\ntamalloc_scrape_success 1.0\n" in get(url)
    high = [int(fd) for fd in os.listdir(f"/proc/{proc.pid}/fd") if int(fd) >= 1024]
    if wanted >= 2048:
        # Each process's status, oom_score and oom_score_adj, kept above the low numbers.
        assert len(high) >= 3
        assert os.readlink(f"/proc/{proc.pid}/fd/{max(high)}").startswith("/proc/")


def test_a_scraper_hanging_up_gives_no_traceback(
    exporter: Callable[..., tuple[subprocess.Popen[str], str]],
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
    assert all(line.startswith("tamalloc: error: answering ") for line in err.splitlines()), err


def test_port_in_use_is_one_line_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli("exporter", "--listen", f"127.0.0.1:{port}")
    line = assert_clean_error(result, 1)
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in line


@pytest.mark.parametrize(
    "listen",
    [
        "9847",
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "127.0.0.1:http",
        "::1:9847",
        "[not-ipv6]:9847",
        "no-such-host.invalid:9847",
    ],
)
def test_invalid_listen_is_a_usage_error(listen: str) -> None:
    line = assert_clean_error(run_cli("exporter", "--listen", listen), 2)
    assert "--listen" in line


@pytest.mark.parametrize(
    "args",
    [
        ["--interval", "5"],
        ["--textfile", "x.prom", "--listen", "127.0.0.1:0"],
        ["--top", "-1"],
        ["--textfile", "x.prom", "--interval", "0"],
    ],
)
def test_conflicting_or_bad_options_are_usage_errors(args: list[str], tmp_path: Path) -> None:
    result = run_cli("exporter", *args, timeout=WAIT, cwd=tmp_path)
    assert_clean_error(result, 2)
    assert not (tmp_path / "x.prom").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["--max-connections", "0"],
        ["--max-connections", "10001"],
        ["--max-connections", "many"],
        ["--header-timeout", "0"],
        ["--header-timeout", "0.01"],
        ["--header-timeout", "1e300"],  # beyond what a socket timeout can hold
        ["--header-timeout", "nan"],
        ["--idle-timeout", "inf"],
        ["--idle-timeout", "-5"],
        ["--textfile", "x.prom", "--max-connections", "5"],
        ["--textfile", "x.prom", "--header-timeout", "5"],
        ["--textfile", "x.prom", "--idle-timeout", "5"],
    ],
)
def test_bad_server_limits_are_usage_errors(args: list[str], tmp_path: Path) -> None:
    result = run_cli("exporter", *args, timeout=WAIT, cwd=tmp_path)
    line = assert_clean_error(result, 2)
    assert next(arg for arg in args if arg.endswith(("-connections", "-timeout"))) in line
    # what is wrong with it: the value, or that it has no use with --textfile
    assert repr(args[-1]) in line or "is for the server, not --textfile" in line
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
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from tamalloc.cli.main import main; sys.exit(main(['exporter']))"
    )
    line = assert_clean_error(run_python(code, timeout=WAIT), 1)
    assert "pip install prometheus_client" in line and "pip install '.[exporter]'" in line


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
    assert result.stderr == (
        f"tamalloc: note: node_exporter's textfile collector reads only"
        f" *.prom files, not {tmp_path / 'tamalloc.txt'}\n"
    )


def test_textfile_every_interval_until_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "tamalloc.prom"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tamalloc",
            "exporter",
            "--textfile",
            str(path),
            "--interval",
            "0.2",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
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
        pytest.fail(
            "promtool is not installed: `make deps` installs it (Debian package"
            " prometheus, vm/install-deps.sh)"
        )
    text = render(make_registry(MemoryCollector(backend="procfs")))
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=WAIT
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, b"")


# --- --oom: the OOM prediction. This host has no cgroup v2 memory controller, so the
# collector is fed recorded inputs through tamalloc.oom.collect_inputs, which
# predict_oom() calls; the model itself (tamalloc.oom.predict) runs for real.

MIB_KB = 1024
GIB_KB = 1024 * MIB_KB


def oom_task(pid: int, name: str, cgroup: str, rss_mib: int, adj: int = 0) -> OomTask:
    return OomTask(
        pid=pid,
        name=name,
        cgroup=cgroup,
        rss_kb=rss_mib * MIB_KB,
        swap_kb=0,
        pgtables_kb=0,
        oom_score=0,
        oom_score_adj=adj,
        unkillable=adj == -1000,
        oom_victim=False,
    )


def oom_cgroup(max_kb: int | None, current_kb: int, oom_group: bool = False) -> OomCgroup:
    return OomCgroup(
        memory_max_kb=max_kb,
        swap_max_kb=None,
        current_kb=current_kb,
        swap_current_kb=0,
        oom_group=oom_group,
        has_memory_controller=True,
        oom_kill=0,
    )


def oom_inputs(tasks: list[OomTask], cgroups: dict[str, OomCgroup]) -> OomInputs:
    """4 GiB of RAM, 3 GiB available, no swap, 4 KiB pages."""
    return OomInputs(
        tasks=tuple(tasks),
        cgroups={"/": oom_cgroup(None, 0), **cgroups},
        mem_total_kb=4 * GIB_KB,
        mem_available_kb=3 * GIB_KB,
        swap_total_kb=0,
        swap_free_kb=0,
        page_size=4096,
        swappiness=60,
        oom_kill_allocating_task=0,
        panic_on_oom=0,
        cgroup_v1_memory=False,
        backend="procfs",
    )


# The system; /web (1 GiB, 900 MiB used, memory.oom.group: nginx 500 + 300 MiB and a
# sidecar at oom_score_adj -1000); /db (2 GiB, 1 GiB used: postgres 1000 MiB and
# pgbouncer 20 MiB); /user, without a memory.max, is no domain of its own.
RECORDED = oom_inputs(
    [
        oom_task(10, "nginx", "/web", 500),
        oom_task(11, "nginx", "/web", 300),
        oom_task(12, "sidecar", "/web", 10, adj=-1000),
        oom_task(20, "postgres", "/db", 1000),
        oom_task(21, "pgbouncer", "/db", 20),
        oom_task(30, "bash", "/user", 5),
    ],
    {
        "/web": oom_cgroup(GIB_KB, 900 * MIB_KB, oom_group=True),
        "/db": oom_cgroup(2 * GIB_KB, GIB_KB),
        "/user": oom_cgroup(None, 100 * MIB_KB),
    },
)


@pytest.fixture
def recorded_oom(monkeypatch: pytest.MonkeyPatch) -> Callable[[OomInputs], list[str | None]]:
    """Factory: make predict_oom() read ``inputs``; the list of backends it was asked for
    (one entry a prediction)."""
    calls: list[str | None] = []

    def use(inputs: OomInputs) -> list[str | None]:
        def collect_inputs(backend: str | None = None) -> OomInputs:
            calls.append(backend)
            return inputs

        monkeypatch.setattr(tamalloc.oom, "collect_inputs", collect_inputs)
        return calls

    return use


def by_domain(
    metrics: dict[str, list[tuple[dict[str, str], float]]], name: str
) -> dict[str, float]:
    return {labels["domain"]: value for labels, value in metrics.get(name, [])}


def test_oom_families_and_values_of_a_recorded_system(
    recorded_oom: Callable[[OomInputs], list[str | None]],
) -> None:
    calls = recorded_oom(RECORDED)
    collector = with_backend(FakeBackend(fake_stats(5), name="kernel"), oom=True)
    text = render(make_registry(collector)).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert calls == ["kernel"]  # one prediction a scrape, on the exporter's backend
    assert {n: f.type for n, f in families.items() if n.startswith("tamalloc_oom_")} == (
        OOM_FAMILIES
    )
    help_text = {n: f.documentation for n, f in families.items()}
    assert (
        "can still take before its OOM killer runs"
        in help_text["tamalloc_oom_domain_headroom_bytes"]
    )
    assert (
        "Who the kernel would kill if this domain ran out of memory now"
        in help_text["tamalloc_oom_victim"]
    )
    metrics = scrape(collector)
    assert one(metrics, "tamalloc_scrape_success") == 1
    assert one(metrics, "tamalloc_oom_domains") == 2  # /web and /db; /user has no limit
    gib = 1 << 30
    assert by_domain(metrics, "tamalloc_oom_domain_limit_bytes") == {
        "system": 4 * gib,
        "/web": gib,
        "/db": 2 * gib,
    }
    assert by_domain(metrics, "tamalloc_oom_domain_usage_bytes") == {
        "system": gib,
        "/web": 900 << 20,
        "/db": gib,
    }
    assert by_domain(metrics, "tamalloc_oom_domain_headroom_bytes") == {
        "system": 3 * gib,
        "/web": 124 << 20,
        "/db": gib,
    }
    # Scores by hand: (1000 + 1000 * rss pages // limit pages) * 2 // 3. postgres
    # (256000 pages) against the system's 1048576: 829; against /db's 524288: 992;
    # nginx 10 (128000 pages) against /web's 262144: 992.
    assert sorted(
        (lab["domain"], lab["pid"], lab["name"], v) for lab, v in metrics["tamalloc_oom_victim"]
    ) == [
        ("/db", "20", "postgres", 992),
        ("/web", "10", "nginx", 992),
        ("system", "20", "postgres", 829),
    ]
    # memory.oom.group on /web: both nginx die, the -1000 sidecar is spared.
    assert metrics["tamalloc_oom_group_kill"] == [({"domain": "/web", "group": "/web"}, 1)]
    assert by_domain(metrics, "tamalloc_oom_killed_processes") == {"system": 1, "/web": 2, "/db": 1}
    assert calls == ["kernel"] * 2  # the render above, and this scrape


def bounded_inputs(count: int) -> OomInputs:
    """``count`` cgroups of 1 GiB, /c00 ... ; /cNN has (NN * 7) % count MiB headroom
    (all distinct when count is 30), so headroom does not follow the path order."""
    return oom_inputs(
        [],
        {f"/c{i:02}": oom_cgroup(GIB_KB, GIB_KB - (i * 7 % count) * MIB_KB) for i in range(count)},
    )


@pytest.mark.parametrize(
    ("limit", "kept"),
    [
        (5, ["/c00", "/c13", "/c26", "/c09", "/c22"]),  # headroom 0, 1, 2, 3, 4 MiB
        (1, ["/c00"]),
        (0, []),
        (40, [f"/c{i:02}" for i in range(30)]),
    ],
)
def test_oom_domains_keep_the_least_headroom_and_the_system(
    limit: int,
    kept: list[str],
    recorded_oom: Callable[[OomInputs], list[str | None]],
) -> None:
    recorded_oom(bounded_inputs(30))
    metrics = scrape(with_backend(FakeBackend(fake_stats(3)), oom=True, oom_domains=limit))
    assert one(metrics, "tamalloc_oom_domains") == 30  # all of them, exported or not
    headroom = by_domain(metrics, "tamalloc_oom_domain_headroom_bytes")
    assert set(headroom) == {"system", *kept}
    assert headroom["system"] == 3 << 30  # the most headroom, and there anyway
    for name in (
        "tamalloc_oom_domain_limit_bytes",
        "tamalloc_oom_domain_usage_bytes",
        "tamalloc_oom_killed_processes",
    ):
        assert set(by_domain(metrics, name)) == {"system", *kept}
    for path in kept:
        assert headroom[path] == (int(path[2:]) * 7 % 30) << 20


def test_oom_domains_are_ranked_by_headroom_share_as_the_alert_is(
    recorded_oom: Callable[[OomInputs], list[str | None]],
) -> None:
    # /big has 3 GiB left of 60 (5%: TamallocCgroupHeadroomLow fires), /small 100 MiB of
    # 200 (50%): less room in bytes, yet the one to leave out.
    recorded_oom(
        oom_inputs(
            [],
            {
                "/big": oom_cgroup(60 * GIB_KB, 57 * GIB_KB),
                "/small": oom_cgroup(200 * MIB_KB, 100 * MIB_KB),
            },
        )
    )
    metrics = scrape(with_backend(FakeBackend(fake_stats(3)), oom=True, oom_domains=1))
    assert set(by_domain(metrics, "tamalloc_oom_domain_headroom_bytes")) == {"system", "/big"}


def test_oom_domains_of_equal_headroom_are_chosen_by_path(
    recorded_oom: Callable[[OomInputs], list[str | None]],
) -> None:
    recorded_oom(
        oom_inputs(
            [], {path: oom_cgroup(GIB_KB, GIB_KB - 8 * MIB_KB) for path in ("/z", "/b", "/a", "/m")}
        )
    )
    for _ in range(3):  # the same two at every scrape
        metrics = scrape(with_backend(FakeBackend(fake_stats(3)), oom=True, oom_domains=2))
        assert set(by_domain(metrics, "tamalloc_oom_domain_headroom_bytes")) == {
            "system",
            "/a",
            "/b",
        }


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (OSError(13, "Permission denied"), "[Errno 13] Permission denied"),
        (RuntimeError("unexpected"), "RuntimeError: unexpected"),
    ],
)
def test_a_failed_oom_prediction_leaves_its_metrics_out_and_is_counted(
    error: Exception,
    line: str,
    monkeypatch: pytest.MonkeyPatch,
    recorded_oom: Callable[[OomInputs], list[str | None]],
) -> None:
    def fail(backend: str | None = None) -> OomInputs:
        raise error

    monkeypatch.setattr(tamalloc.oom, "collect_inputs", fail)
    errors: list[str] = []
    collector = with_backend(FakeBackend(fake_stats(5)), oom=True, on_error=errors.append)
    metrics = scrape(collector)
    assert one(metrics, "tamalloc_scrape_success") == 0
    assert one(metrics, "tamalloc_scrape_errors_total") == 1
    assert not [name for name in metrics if name.startswith("tamalloc_oom_")]
    assert one(metrics, "tamalloc_processes") == 5  # the other parts still read
    assert one(metrics, "tamalloc_system_memory_bytes") > 0
    assert errors == [f"scrape: cannot read the OOM prediction: {line}"]
    recorded_oom(RECORDED)  # it works again: success again, the count stays
    metrics = scrape(collector)
    assert one(metrics, "tamalloc_scrape_success") == 1
    assert one(metrics, "tamalloc_scrape_errors_total") == 1
    assert one(metrics, "tamalloc_oom_domains") == 2
    assert len(errors) == 1


def test_without_oom_there_is_no_oom_family_and_no_prediction(
    recorded_oom: Callable[[OomInputs], list[str | None]],
) -> None:
    calls = recorded_oom(RECORDED)
    metrics = scrape(with_backend(FakeBackend(fake_stats(5))))
    assert one(metrics, "tamalloc_scrape_success") == 1
    assert not [name for name in metrics if name.startswith("tamalloc_oom_")]
    assert calls == []  # the default scrape does not pay for the walk


def test_oom_metrics_pass_promtool() -> None:
    promtool = shutil.which("promtool") or shutil.which("promtool", path="/usr/bin")
    if promtool is None:
        pytest.fail(
            "promtool is not installed: `make deps` installs it (Debian package"
            " prometheus, vm/install-deps.sh)"
        )
    text = render(make_registry(MemoryCollector(backend="procfs", oom=True)))
    assert b'\ntamalloc_oom_domain_headroom_bytes{domain="system"} ' in text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=WAIT
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, b"")


def test_textfile_with_oom_on_this_host(tmp_path: Path) -> None:
    """The real prediction, end to end: the system domain at least, as tamalloc.oom
    computes it (RAM + swap do not change between the two readings)."""
    path = tmp_path / "tamalloc.prom"
    result = run_cli("exporter", "--textfile", str(path), "--oom", timeout=WAIT)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    assert set(families) - set(FAMILIES) == set(OOM_FAMILIES) | set(COUNTER_FAMILIES)
    system, *cgroups = tamalloc.oom.predict_oom()
    limits = {
        s.labels["domain"]: s.value for s in families["tamalloc_oom_domain_limit_bytes"].samples
    }
    assert limits["system"] == system.limit_kb * 1024
    assert len(limits) <= 21
    (domains,) = families["tamalloc_oom_domains"].samples
    assert domains.value == len(cgroups)


def cli_main(*args: str) -> int:
    from tamalloc.cli.main import main

    return main(list(args))


@pytest.mark.parametrize(
    ("args", "domains"),
    [
        (["--oom", "--oom-domains", "3"], 3),
        (["--oom"], 20),  # the default
        (["--oom", "--oom-domains", "0"], 0),
        ([], None),  # no --oom: no family at all
    ],
)
def test_cli_passes_oom_options(
    args: list[str],
    domains: int | None,
    tmp_path: Path,
    recorded_oom: Callable[[OomInputs], list[str | None]],
) -> None:
    calls = recorded_oom(bounded_inputs(30))
    path = tmp_path / "tamalloc.prom"
    assert cli_main("--backend", "procfs", "exporter", "--textfile", str(path), *args) == 0
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    if domains is None:
        assert not [name for name in families if name.startswith("tamalloc_oom_")]
        assert calls == []
        return
    assert calls == ["procfs"]
    headroom = families["tamalloc_oom_domain_headroom_bytes"].samples
    assert len(headroom) == domains + 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--oom", "--oom-domains", "-1"], "--oom-domains"),
        (["--oom", "--oom-domains", "x"], "--oom-domains"),
        (["--oom", "--oom-domains", "2.5"], "--oom-domains"),
        (["--oom", "--oom-domains"], "--oom-domains"),
        (["--oom-domains", "5"], "--oom-domains needs --oom"),
        (["--oom=1"], "--oom"),
    ],
)
def test_bad_oom_options_are_usage_errors(args: list[str], says: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tamalloc", "exporter", "--textfile", "x.prom", *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        cwd=tmp_path,
        env=subprocess_env(),
        stdin=subprocess.DEVNULL,
    )
    line = assert_clean_error(result, 2)
    assert says in line
    assert not (tmp_path / "x.prom").exists()


def test_oom_domains_rank_a_cgroup_by_the_headroom_its_ancestor_leaves(
    recorded_oom: Callable[[OomInputs], list[str | None]],
) -> None:
    # /p/big's own limit (10 GiB) leaves 9 GiB, but /p (2 GiB, 1.9 used) only 100 MiB:
    # its effective share is 1%, below /small's 50%, and its headroom is /p's.
    recorded_oom(
        oom_inputs(
            [],
            {
                "/p": oom_cgroup(2 * GIB_KB, 2 * GIB_KB - 100 * MIB_KB),
                "/p/big": oom_cgroup(10 * GIB_KB, GIB_KB),
                "/small": oom_cgroup(200 * MIB_KB, 100 * MIB_KB),
            },
        )
    )
    metrics = scrape(with_backend(FakeBackend(fake_stats(3)), oom=True, oom_domains=2))
    headroom = by_domain(metrics, "tamalloc_oom_domain_headroom_bytes")
    assert set(headroom) == {"system", "/p", "/p/big"}
    assert headroom["/p/big"] == headroom["/p"] == 100 << 20
