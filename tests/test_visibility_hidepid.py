"""procfs under a real ``hidepid=2`` mount: a user who cannot see other users'
processes is told so. Needs root (a private mount namespace, then becoming nobody):
runs as root on the host and in the guest."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from _support import subprocess_env

# Imports and the parser first, as root: nobody may not read the interpreter's files.
CHILD = """
import ctypes, encodings.ascii, io, json, locale, os
import tamalloc, tamalloc.backends.procfs, tamalloc.cli.main
from tamalloc.cli import demo, stats, system, total, watch
from tamalloc.cli.env import Environment
tamalloc.cli.main._build_parser()
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, MS_REC, MS_PRIVATE = 0x20000, 1 << 14, 1 << 18
if libc.unshare(CLONE_NEWNS) != 0:
    print(json.dumps({"skip": os.strerror(ctypes.get_errno())})); raise SystemExit
if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
    raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
if libc.mount(b"proc", b"/proc", b"proc", 0, b"hidepid=2") != 0:
    raise OSError(ctypes.get_errno(), "mount -t proc -o hidepid=2")
os.setgroups([]); os.setgid(65534); os.setuid(65534)
vis = tamalloc.visibility(backend="procfs")
env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), stdout_isatty=False)
status = tamalloc.cli.main.main(["stats", "--backend", "procfs"], env)
total = tamalloc.total_mem_stats(backend="procfs")
pids = [s.pid for s in tamalloc.all_mem_stats(backend="procfs")]
tamalloc.all_mem_stats(backend="procfs")  # a third scan: one that would read kept files
from tamalloc.backends import _procscan
print(json.dumps({"hidden": vis.some_hidden, "status": status, "stderr": env.stderr.getvalue(),
                  "pids": pids, "total_hidden": total.some_hidden,
                  "kept": len(_procscan.kept_fds())}))
"""


def test_hidepid_2_is_reported_to_a_user() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for a private mount namespace (runs in `make vm-test`)")
    run = subprocess.run(
        [sys.executable, "-c", CHILD],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    if "skip" in seen:
        pytest.skip(f"unshare(CLONE_NEWNS) refused here: {seen['skip']}")
    assert 1 not in seen["pids"]  # init is root's: hidden from nobody
    assert seen["hidden"] is None  # /proc does not say whether it hides anything
    assert seen["total_hidden"] is None
    # A file kept open would go on showing a process that hidepid hides from a new
    # open (one that became another user's, or undumpable): none is kept.
    assert seen["kept"] == 0
    assert seen["status"] == 0
    line = seen["stderr"]
    assert line.startswith("tamalloc: ")
    # The kernel prints the option by name in mountinfo since 5.8, by number before.
    assert (
        "/proc is mounted hidepid=invisible, which hides other users' processes" in line
        or "/proc is mounted hidepid=2, which hides other users' processes" in line
    )
