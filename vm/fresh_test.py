"""Check the README's two commands on a fresh Debian 12 machine, as root.

`make fresh-test` builds a minimal Debian 12 (bookworm) root with mmdebstrap
(variant minbase, what the debian:12 image has, plus python3 and python3-venv,
the one prerequisite the README names), clones the committed HEAD of this
repository into /root/tamalloc inside it, and runs in a chroot, as root, the
two lines of the README's first code block, exactly as the README prints them
(vm/readme_lines.py reads them; sh -c, `nice -n 10`):

1. the main job, before anything else is installed; then `tamalloc --version`,
   which must say that the pure-Python scan serves (the root has no C compiler);
2. every test, which installs what it needs itself.

Every command's output goes to one log file (fresh-test-TIME.log beside the
root); each command's duration and exit status are printed at the end.  The
host's proxy and CA settings (from its environment) are passed in, as
resolv.conf is: they belong to the network.
Mounts (/, /proc, /sys, /dev, /dev/pts, /dev/shm) are undone on every exit path.
The root lives outside the work tree (default /var/tmp/tamalloc-fresh) and is
kept for inspection; the next run replaces it, or reuses it with --reuse
(the kernel build in its /root/.cache/tamalloc then stays, only the clone is
replaced).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TextIO

from readme_lines import readme_lines

REPO = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
CLONE = "root/tamalloc"  # relative to the root: /root/tamalloc in the chroot
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What the README asks of a fresh machine before its first line (python3 -m venv).
PREREQUISITES = ("python3", "python3-venv")
# Without a C compiler in the root, the install must fall back to the pure-Python scan.
NO_COMPILER_VERSION = "the pure-Python scan is used"
# CA bundles are copied into the root; PIP_FIND_LINKS and pip.conf's local
# indexes are not passed: packages come from PyPI as on any machine.
CA_VARS = ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
NETWORK_VARS = (*CA_VARS, "http_proxy", "https_proxy", "no_proxy")


class Interrupted(Exception):
    pass


def on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(f"signal {signum}")


def say(message: str, log: TextIO | None = None) -> None:
    line = f"[fresh-test {time.strftime('%H:%M:%S')}] {message}"
    print(line, flush=True)
    if log is not None:
        log.write(line + "\n")
        log.flush()


def host_mirrors() -> list[str]:
    """The host's Debian sources (deb822 or one-line), as one-line entries."""
    entries: list[str] = []
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(
                    (k.strip(), v.strip())
                    for k, v in (
                        line.split(":", 1)
                        for line in stanza.splitlines()
                        if ":" in line and not line.startswith("#")
                    )
                )
                if "deb" not in fields.get("Types", "").split():
                    continue
                for uri in fields.get("URIs", "").split():
                    for suite in fields.get("Suites", "").split():
                        if suite.startswith(SUITE):
                            entries.append(f"deb {uri} {suite} {fields.get('Components', 'main')}")
        elif path.suffix == ".list":
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 4 and words[0] == "deb" and words[2].startswith(SUITE):
                    entries.append(" ".join(words))
    debian = [e for e in entries if "/debian" in e.split()[1]]
    return debian or [f"deb {DEFAULT_MIRROR} {SUITE} main"]


def mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


def umount_all(root: Path, log: TextIO) -> None:
    for point in sorted(mounts_under(root), key=len, reverse=True):
        if subprocess.run(["umount", point], check=False).returncode != 0:
            subprocess.run(["umount", "-l", point], check=False)
    left = mounts_under(root)
    say("mounts undone" if not left else f"STILL MOUNTED: {left}", log)


def mount_all(root: Path) -> None:
    # The root bound onto itself: "/" in the chroot is then a mount point, as on
    # a machine, and `mount --make-rprivate /` in a test's namespace works.
    subprocess.run(["mount", "--bind", str(root), str(root)], check=True)
    binds = [
        (["-t", "proc", "proc"], "proc"),
        (["-t", "sysfs", "sysfs"], "sys"),
        (["--bind", "/dev"], "dev"),
        (["--bind", "/dev/pts"], "dev/pts"),
        (["--bind", "/dev/shm"], "dev/shm"),
    ]
    for args, target in binds:
        (root / target).mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", *args, str(root / target)], check=True)
    resolv = root / "etc/resolv.conf"
    if resolv.is_symlink():
        resolv.unlink()
    shutil.copyfile("/etc/resolv.conf", resolv)


def timed(cmd: list[str], log: TextIO, *, nice: int = 0) -> tuple[int, float]:
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=(lambda: os.nice(nice)) if nice else None,
    )
    try:
        status = proc.wait()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    log.flush()
    return status, time.monotonic() - start


def network_env(root: Path) -> list[str]:
    """The host's way to the network (proxy, a TLS-intercepting CA), as the
    host's environment gives it: part of the network, not of the machine."""
    passed = []
    for name in NETWORK_VARS:
        value = os.environ.get(name) or os.environ.get(name.upper())
        if not value:
            continue
        if name in CA_VARS:
            if not Path(value).is_file():
                continue
            copy = root / "etc/fresh-test" / Path(value).name
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(value, copy)
            value = "/" + str(copy.relative_to(root))
        passed.append(f"{name}={value}")
    return passed


def in_chroot(root: Path, command: str, env: list[str]) -> list[str]:
    return [
        "chroot",
        str(root),
        "/usr/bin/env",
        "-i",
        "HOME=/root",
        "TERM=dumb",
        f"PATH={GUEST_PATH}",
        *env,
        "/bin/sh",
        "-c",
        f"cd /{CLONE} && {command}",
    ]


VERSION_CHECK = ".venv/bin/tamalloc --version"


def planned_commands(readme: Path) -> list[str]:
    """What a fresh machine runs: the README's main line, the version check, its test line."""
    lines = readme_lines(readme)
    return [lines["main"], VERSION_CHECK, lines["test"]]


def version_says_pure_python(root: Path, env: list[str], log: TextIO) -> int:
    """1 unless `tamalloc --version` says the pure-Python scan serves."""
    out = subprocess.run(
        in_chroot(root, VERSION_CHECK, env), capture_output=True, text=True, check=False
    ).stdout
    if NO_COMPILER_VERSION in out:
        return 0
    say(f"`{VERSION_CHECK}` does not say '{NO_COMPILER_VERSION}': {out.strip()}", log)
    return 1


def ensure_mmdebstrap(log: TextIO) -> None:
    if shutil.which("mmdebstrap"):
        return
    say("installing mmdebstrap on the host", log)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "mmdebstrap"],
    ):
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp/tamalloc-fresh"))
    parser.add_argument("--reuse", action="store_true", help="keep the existing root")
    parser.add_argument(
        "--run",
        action="append",
        metavar="CMD",
        help="run CMD (repeatable) in the clone instead of the README's commands, "
        "to repeat a failing part (with --reuse)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("fresh_test.py: needs root (mmdebstrap, chroot, mounts)", file=sys.stderr)
        return 1
    base = args.dir.resolve()
    if base == REPO or REPO in base.parents:
        print("fresh_test.py: --dir must be outside the work tree", file=sys.stderr)
        return 1
    root = base / "root"
    base.mkdir(parents=True, exist_ok=True)
    log_path = base / time.strftime("fresh-test-%Y%m%dT%H%M%SZ.log", time.gmtime())
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    results: list[tuple[str, int | None, float]] = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    with open(log_path, "a") as log:
        say(f"log: {log_path}", log)
        say(f"repository {REPO} at {head}", log)
        try:
            if mounts_under(root):
                raise SystemExit(f"refusing: mounts under {root}: {mounts_under(root)}")
            ensure_mmdebstrap(log)
            if not (args.reuse and (root / "etc/debian_version").exists()):
                shutil.rmtree(root, ignore_errors=True)
                mirrors = host_mirrors()
                say(f"mmdebstrap {SUITE} minbase into {root}: {'; '.join(mirrors)}", log)
                status, seconds = timed(
                    [
                        "mmdebstrap",
                        "--variant=minbase",
                        f"--include={','.join(PREREQUISITES)}",
                        SUITE,
                        str(root),
                        *mirrors,
                    ],
                    log,
                )
                results.append(("mmdebstrap --variant=minbase + python3-venv", status, seconds))
                if status != 0:
                    return status
            clone = root / CLONE
            shutil.rmtree(clone, ignore_errors=True)
            say(f"git clone {REPO} (HEAD {head[:12]}) -> /{CLONE}", log)
            subprocess.run(
                ["git", "clone", "-q", "--no-hardlinks", str(REPO), str(clone)],
                check=True,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            commands = args.run or planned_commands(clone / "README.md")
            mount_all(root)
            env = network_env(root)
            say(f"network settings passed from the host: {' '.join(env) or 'none'}", log)
            for command in commands:
                say(f"$ {command}", log)
                status, seconds = timed(in_chroot(root, command, env), log, nice=10)
                if command == VERSION_CHECK and status == 0:
                    status = version_says_pure_python(root, env, log)
                say(f"exit {status} after {seconds:.0f} s: {command}", log)
                results.append((command, status, seconds))
        except Interrupted as why:
            say(f"interrupted ({why})", log)
            results.append(("(interrupted)", None, 0.0))
        finally:
            umount_all(root, log)
            du = subprocess.run(["du", "-sxm", str(root)], capture_output=True, text=True)
            say(f"disk used by the root: {du.stdout.split()[0] if du.stdout else '?'} MB", log)
            say("summary (duration, exit status, command):", log)
            for step, code, secs in results:
                say(f"  {secs:7.0f} s  exit {code}  {step}", log)
            say(f"log: {log_path}", log)
    failed = [status for _, status, _ in results if status != 0]
    return 0 if not failed else (failed[0] or 1)


if __name__ == "__main__":
    sys.exit(main())
