"""The other ``tamalloc`` commands and the exit statuses, run as ``python -m tamalloc``
in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from _support import (
    Child,
    assert_clean_error,
    meminfo_kb,
    read_int,
    run_cli,
    run_on_pty,
    subprocess_env,
)
from tamalloc.models import TotalMemStats

TOTAL_FIELDS = TotalMemStats._fields


# --- total and system ----------------------------------------------------------------


def test_total_json(backend: str) -> None:
    result = run_cli("total", "--json", "--backend", backend)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert tuple(data) == TOTAL_FIELDS
    assert data["processes"] > 0
    assert data["mem_total_kb"] == meminfo_kb()["MemTotal"]
    assert data["overcommit_memory"] == read_int("/proc/sys/vm/overcommit_memory")


def test_total_table() -> None:
    result = run_cli("total")
    assert result.returncode == 0
    for field in ("processes", "reserved", "committed", "Committed_AS", "CommitLimit"):
        assert field in result.stdout


def test_system_json(tmp_path: object) -> None:
    result = run_cli("system", "--json", "--path", str(tmp_path))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"memory", "cpu", "disk", "source", "swap", "cpu_sampled"}
    assert data["memory"]["total_kb"] == meminfo_kb()["MemTotal"]
    assert data["swap"]["total_kb"] == meminfo_kb()["SwapTotal"]
    assert data["cpu_sampled"]["interval_s"] == 0.5
    assert len(data["cpu_sampled"]["per_cpu"]) == len(data["cpu"]["per_cpu"])
    assert data["disk"]["path"] == str(tmp_path)
    assert data["cpu"]["per_cpu"][0]["cpu"] == 0
    assert {"user", "system", "idle", "iowait"} <= set(data["cpu"]["total"])


def test_system_table() -> None:
    result = run_cli("system", "--interval", "0.2")
    assert result.returncode == 0
    assert "available" in result.stdout
    assert "IOWAIT %" in result.stdout
    assert "Disk /" in result.stdout
    assert "CPU use over 0.2 s" in result.stdout
    assert "CPU time since boot" in result.stdout
    for field in ("swap total", "swap used", "swap free"):
        assert field in result.stdout


def test_system_interval_zero_samples_nothing() -> None:
    result = run_cli("system", "--interval", "0", "--json")
    assert result.returncode == 0
    assert "cpu_sampled" not in json.loads(result.stdout)


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (("system",), {"TAMALLOC_BACKEND": "bogus"}, "unknown backend 'bogus'"),
        (("system", "--backend", "bogus"), {}, "invalid choice"),
        (("system", "--interval", "-1"), {}, "must be a number >= 0"),
        (("system", "--interval", "nan"), {}, "not a number"),
    ],
)
def test_system_rejects_bad_input_as_stats_does(
    args: tuple[str, ...], env: dict[str, str], words: str
) -> None:
    line = assert_clean_error(run_cli(*args, **env), 2)
    assert words in line


# --- watch ---------------------------------------------------------------------------


def test_watch_ends_when_the_process_exits(backend: str) -> None:
    target = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2)"])
    try:
        result = run_cli("watch", str(target.pid), "--interval", "0.2", "--backend", backend)
    finally:
        target.kill()
        target.wait()
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith(f"process {target.pid} ")
    assert result.stdout.splitlines()[-1].endswith("exited")
    assert result.stderr == ""


def _sigint_as_from_a_terminal() -> None:
    # A suite started in the background (`cmd &` in a script, nohup) passes SIGINT on
    # ignored, and Python then leaves it ignored: Ctrl-C reaches watch from a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_watch_ends_cleanly_on_ctrl_c(child: Child) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tamalloc", "watch", str(child.pid), "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        preexec_fn=_sigint_as_from_a_terminal,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # the loop is running once a sample is out
    assert f"pid {child.pid}" in first
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "Traceback" not in err
    assert "exited" not in out


def test_watch_count_and_sample_lines(child: Child) -> None:
    result = run_cli("watch", str(child.pid), "--interval", "0.1", "--count", "3")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert all("reserved" in line and "committed" in line for line in lines)


def test_watch_rich_view_on_a_terminal(child: Child) -> None:
    out = run_on_pty("watch", str(child.pid), "--interval", "0.1", "--count", "3")
    assert "committed" in out
    assert any(bar in out for bar in "▁▂▃▄▅▆▇█")


# --- demo ----------------------------------------------------------------------------


@pytest.mark.parametrize("huge", [False, True])
def test_demo_verdict(backend: str, huge: bool) -> None:
    args = ["demo", "--size", "1M", "--backend", backend] + (["--huge"] if huge else [])
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "Verdict: OK" in result.stdout
    assert "1,048,576 bytes read as 0" in result.stdout
    assert "resident before touching 0 B" in result.stdout
    assert f"backend {backend}" in result.stdout


def test_demo_pauses_where_the_original_did() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tamalloc", "demo", "--size", "1M", "--pause"],
        input="\n\n\n",
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("press Enter") == 3
    assert proc.stdout.index("press Enter") < proc.stdout.index("Allocated")
    assert proc.stdout.rindex("press Enter") > proc.stdout.index("Verdict: OK")


def test_demo_progress_bar_on_a_terminal() -> None:
    out = run_on_pty("demo", "--size", "2M")
    assert "committed" in out
    assert "Verdict: OK" in out


# --- errors and exit statuses -------------------------------------------------------------


def _free_pid() -> int:
    taken = {int(n) for n in os.listdir("/proc") if n.isdigit()}
    return next(p for p in range(read_int("/proc/sys/kernel/pid_max"), 1, -1) if p not in taken)


def test_no_such_process_is_status_1() -> None:
    missing = str(_free_pid())
    for args in (("stats", missing), ("stats", missing, "--json"), ("watch", missing)):
        line = assert_clean_error(run_cli(*args), 1)
        assert f"no such process: {missing}" in line


@pytest.mark.parametrize("pid", ["pid_max + 1", str(2**32 + 1), str(2**64)])
@pytest.mark.parametrize("command", ["stats", "watch"])
def test_pid_above_pid_max_is_a_usage_error(command: str, pid: str) -> None:
    if pid == "pid_max + 1":
        pid = str(read_int("/proc/sys/kernel/pid_max") + 1)
    for backend in ("procfs", "kernel"):  # rejected before any backend is used
        line = assert_clean_error(run_cli(command, pid, "--backend", backend), 2)
        assert "pid_max" in line
        assert pid in line


def test_allocation_failure_is_status_1() -> None:
    # --force: past the check of the available memory, to the allocation that fails.
    line = assert_clean_error(run_cli("demo", "--size", "1EiB", "--force"), 1)
    assert "cannot allocate" in line


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("bogus",),
        ("stats", "abc"),
        ("stats", "-1"),
        ("stats", "--top", "0"),
        ("stats", "--sort", "bogus"),
        ("stats", "--units", "gb"),
        ("stats", "--json", "--csv"),
        ("stats", "--user", "no-such-user-xyz"),
        ("stats", "--backend", "sysfs"),
        ("watch",),
        ("watch", "0"),
        ("watch", "1", "--interval", "0"),
        ("watch", "1", "--interval", "soon"),
        ("demo", "--size", "0"),
        ("demo", "--size", "ten"),
        ("system", "--units", "bytes"),
    ],
)
def test_usage_errors_are_status_2(args: tuple[str, ...]) -> None:
    assert_clean_error(run_cli(*args), 2)


def test_bad_backend_environment_is_a_usage_error() -> None:
    line = assert_clean_error(run_cli("stats", TAMALLOC_BACKEND="bogus"), 2)
    assert "bogus" in line


def test_kernel_backend_where_absent_is_status_1() -> None:
    import tamalloc

    if tamalloc.kernel_available():
        pytest.skip("this kernel has the tamalloc syscalls")
    for args in (("stats", "--backend", "kernel"), ("--backend", "kernel", "total")):
        assert "patched kernel" in assert_clean_error(run_cli(*args), 1)


def test_missing_path_is_status_1() -> None:
    assert_clean_error(run_cli("system", "--path", "/no/such/dir"), 1)


def test_help_and_version() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("stats", "total", "system", "watch", "demo"):
        assert command in result.stdout
    assert run_cli("--version").stdout.startswith("tamalloc ")
