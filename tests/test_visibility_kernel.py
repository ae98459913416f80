"""The kernel's visibility rule as the library and the CLI report it: an unprivileged
caller sees only the processes it may ptrace-read while vm.tamalloc_stats_restrict is
1, and is told how many it misses. Needs the patched kernel and root (to become
nobody): runs in the guest (`make vm-test`); skips on a stock kernel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

import tamalloc
from _support import subprocess_env

pytestmark = pytest.mark.kernel

RESTRICT = "/proc/sys/vm/tamalloc_stats_restrict"
NOBODY = 65534

# Everything is imported as root, then the child becomes nobody: the interpreter may
# live where nobody cannot read (a pyenv under /root), and the syscalls need no files.
CHILD = f"""
import io, json, os, sys
import tamalloc, tamalloc.backends.kernel, tamalloc.cli.main
from tamalloc.cli import demo, stats, system, total, watch
from tamalloc.cli.env import Environment
import encodings.ascii, locale  # imported now: nobody cannot read them later
tamalloc.cli.main._build_parser()
os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})
rows = tamalloc.all_mem_stats(backend="kernel")
vis = tamalloc.visibility(backend="kernel")
tot = tamalloc.total_mem_stats(backend="kernel")
env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), stdout_isatty=False)
status = tamalloc.cli.main.main(["stats", "--backend", "kernel"], env)
one = Environment(stdout=io.StringIO(), stderr=io.StringIO(), stdout_isatty=False)
init_status = tamalloc.cli.main.main(["stats", "1", "--backend", "kernel"], one)
print(json.dumps({{"pids": [r.pid for r in rows], "hidden": vis.some_hidden,
                  "total_processes": tot.processes, "total_hidden": tot.some_hidden,
                  "status": status, "stderr": env.stderr.getvalue(),
                  "init_status": init_status, "init_stderr": one.stderr.getvalue()}}))
"""


@pytest.fixture
def restrict() -> Iterator[None]:
    """Root only; restores the sysctl afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to become nobody (the guest runs as root: `make vm-test`)")
    with open(RESTRICT) as f:  # missing: the kernel lacks the restriction, a failure
        saved = f.read().strip()
    yield
    with open(RESTRICT, "w") as f:
        f.write(saved)


def _set(value: int) -> None:
    with open(RESTRICT, "w") as f:
        f.write(str(value))


def _as_nobody() -> dict[str, object]:
    run = subprocess.run(
        [sys.executable, "-c", CHILD],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    result: dict[str, object] = json.loads(run.stdout)
    return result


@pytest.mark.usefixtures("restrict")
def test_restricted_by_default_and_hiding_is_reported() -> None:
    with open(RESTRICT) as f:
        assert f.read().strip() in ("0", "1")
    _set(1)
    root_pids = {s.pid for s in tamalloc.all_mem_stats(backend="kernel")}
    assert tamalloc.visibility(backend="kernel").some_hidden is False  # root sees all
    seen = _as_nobody()
    pids = seen["pids"]
    hidden = seen["hidden"]
    assert isinstance(pids, list)
    assert 1 not in pids  # init is root's: nobody may not ptrace-read it
    assert len(set(pids) - root_pids) <= 5  # nobody sees no more than root
    assert hidden is True  # that some are, never how many
    assert seen["total_hidden"] is True
    line = str(seen["stderr"])
    noun = "process" if len(pids) == 1 else "processes"
    assert f"tamalloc: {len(pids)} {noun} shown; others are hidden from you:" in line
    assert "vm.tamalloc_stats_restrict=1; run as root" in line
    assert seen["status"] == 0
    # init asked for by pid: ESRCH as if absent, and the CLI says why it may be
    assert seen["init_status"] == 1
    assert str(seen["init_stderr"]).startswith("tamalloc: error: no such process: 1: /proc lists")


@pytest.mark.usefixtures("restrict")
def test_unrestricted_hides_nothing() -> None:
    _set(0)
    seen = _as_nobody()
    assert seen["hidden"] is False
    assert seen["total_hidden"] is False
    assert 1 in seen["pids"]  # type: ignore[operator]
    assert seen["stderr"] == ""


def test_the_kernel_says_whether_any_is_hidden() -> None:
    # A VER1 kernel fills size, so whether any is hidden is known, never None.
    assert tamalloc.total_mem_stats(backend="kernel").some_hidden is not None
