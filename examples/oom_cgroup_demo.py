"""Who dies first in a memory cgroup: three processes in a cgroup with a 256 MiB limit,
and tamalloc's prediction of the OOM killer's choice there.

Needs root and cgroup v2 with the memory controller (a systemd machine, or the test
guest: make vm-run CMD='.venv/bin/python examples/oom_cgroup_demo.py'). With
``--then 'COMMAND'`` it runs COMMAND while the processes live, for example
``--then 'tamalloc oom --cgroup /tamalloc-demo'``. Nothing is killed: it only predicts.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import tamalloc

CGROUP = "tamalloc-demo"
LIMIT = 256 << 20
MEMBERS = (("cache", 96, 0), ("worker", 48, 0), ("batch", 16, 500))  # name, MiB, adj

# Each member joins the cgroup before touching its memory (so the cgroup is charged),
# names itself, sets its oom_score_adj, says it is ready and waits to be killed.
MEMBER = """
import ctypes, os, sys, tamalloc
path, name, mib, adj = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with open(os.path.join(path, "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME
with open("/proc/self/oom_score_adj", "w") as f:
    f.write(adj)
buf = tamalloc.alloc(mib << 20)
buf[::4096] = b"x" * len(range(0, len(buf), 4096))
print("ready", flush=True)
sys.stdin.read()
"""


def cgroup2_root() -> Path:
    root = Path("/sys/fs/cgroup")
    if "memory" not in (root / "cgroup.subtree_control").read_text().split():
        raise SystemExit("needs cgroup v2 at /sys/fs/cgroup with +memory in its subtree_control")
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description="Who dies first in a memory cgroup.")
    parser.add_argument("--then", help="a shell command to run while the processes live")
    args = parser.parse_args()
    path = cgroup2_root() / CGROUP
    path.mkdir(exist_ok=True)
    (path / "memory.max").write_text(str(LIMIT))
    members = []
    try:
        for name, mib, adj in MEMBERS:
            member = subprocess.Popen(
                [sys.executable, "-c", MEMBER, str(path), name, str(mib), str(adj)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            members.append(member)
            assert member.stdout is not None and member.stdout.readline() == "ready\n"
        (domain,) = [d for d in tamalloc.predict_oom(cgroup=f"/{CGROUP}") if d.kind == "cgroup"]
        victim = domain.victim
        print(
            f"/{CGROUP}: {domain.usage_kb >> 10} of {domain.limit_kb >> 10} MiB used, "
            f"{domain.headroom_kb >> 10} MiB left before its OOM killer runs"
        )
        for c in domain.candidates:
            points = "unkillable" if c.points is None else f"{c.points} points"
            mark = "  <- dies first" if victim is not None and c.pid == victim.pid else ""
            print(f"  {c.name:8} pid {c.pid:<6} {points:>14}  score {c.score:4}{mark}")
        if args.then:
            sys.stdout.flush()
            subprocess.run(args.then, shell=True, check=False)
    finally:
        for member in members:
            member.kill()
            member.wait()
        path.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
