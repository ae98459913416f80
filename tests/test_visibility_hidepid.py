"""procfs under a real ``hidepid=2`` mount: a user who cannot see other users'
processes is told so. Needs root (a private mount namespace, then becoming nobody):
runs as root on the host and in the guest."""

from __future__ import annotations

from _support import run_as_nobody_under_hidepid

IMPORTS = """
import encodings.ascii, io, json, locale, os
import tamalloc, tamalloc.backends.procfs, tamalloc.cli.main
from tamalloc.cli import demo, stats, system, total, watch
from tamalloc.cli.env import Environment
tamalloc.cli.main._build_parser()
"""
BODY = """
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
    seen = run_as_nobody_under_hidepid(IMPORTS, BODY)
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
