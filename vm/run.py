"""Boot the built kernel under QEMU, run one command as root, return its status.

The guest sees the host's root read-only and the work tree read-write at
the same path.  The command's output streams to our stdout; its exit status
and the guest's kernel log come back through a shared run directory.  The
run fails if the guest is lost (no status within the timeout) or if
--check-log finds a splat in the kernel log.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from layout import BUILD_DIR, BZIMAGE, GUEST_INIT, INITRAMFS, REPO, VmError, log

BUSYBOX = Path("/bin/busybox")
LOST_VM = 125
BAD_LOG = 124

# What any of the kernel's debug checks prints when it fires.
SPLAT = re.compile(
    r"BUG:|WARNING:|KASAN|UBSAN:|Oops|general protection fault|Kernel panic"
    r"|sleeping function called from invalid context|possible recursive locking"
    r"|circular locking dependency|suspicious RCU usage|INFO: task .* blocked"
    r"|soft lockup|rcu_sched detected stalls|rcu: INFO|Call Trace:"
)
# Boot banners that name a debug facility without reporting anything.
BANNER = re.compile(r"KernelAddressSanitizer initialized|kasan: ")
# --allow-oom: an OOM killer's report runs from dump_header()'s "<comm> invoked
# oom-killer: ..." to the line of mm/oom_kill.c (6.1) that ends it, and its stack dump
# prints one "Call Trace:". That one line per complete report is accepted; every other
# line is checked as usual. A report ends, in the message of out_of_memory() ("Out of
# memory", "Memory cgroup out of memory", or "Out of memory (oom_kill_allocating_task)"):
#   - __oom_kill_process(): "MESSAGE: Killed process N (comm) total-vm:...kB, anon-rss:
#     ...kB, file-rss:...kB, shmem-rss:...kB, UID:N pgtables:...kB oom_score_adj:N";
#   - __oom_kill_process() when the victim has no mm left: "MESSAGE: OOM victim N (comm)
#     is already exiting. Skip killing the task";
#   - out_of_memory() when select_bad_process() found nobody: "Out of memory and no
#     killable processes..." (a memcg OOM or sysrq then kills nobody; a system-wide one
#     panics, and the panic is flagged on its own).
# check_panic_on_oom()'s report ends in a panic: not accepted. A comm is any text but a
# newline, so the whole line must match, from the optional timestamp on.
_OOM_MESSAGE = (
    r"(?:Out of memory|Out of memory \(oom_kill_allocating_task\)|Memory cgroup out of memory)"
)
_STAMP = r"^(?:\[[ \d.]+\] )?"
OOM_START = re.compile(r" invoked oom-killer: gfp_mask=")
OOM_END = re.compile(
    _STAMP
    + r"(?:"
    + _OOM_MESSAGE
    + r": Killed process \d+ \(.*\) total-vm:\d+kB, anon-rss:\d+kB, file-rss:\d+kB,"
    r" shmem-rss:\d+kB, UID:\d+ pgtables:\d+kB oom_score_adj:-?\d+"
    r"|" + _OOM_MESSAGE + r": OOM victim \d+ \(.*\) is already exiting\. Skip killing the task"
    r"|Out of memory and no killable processes\.\.\."
    r")\s*$"
)
CALL_TRACE_ONLY = re.compile(r"^(\[[ \d.]+\] )?Call Trace:\s*$")


def cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """An initramfs archive (cpio newc) of (name, mode, data) entries."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], 1):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def build_initramfs() -> None:
    init = GUEST_INIT.read_bytes()
    busybox = BUSYBOX.read_bytes()
    value = hashlib.sha256(init + busybox).hexdigest()
    stamp = BUILD_DIR / "initramfs.stamp"
    if INITRAMFS.exists() and stamp.exists() and stamp.read_text() == value:
        return
    directory, regular = 0o040755, 0o100755
    archive = cpio_newc(
        [
            *((d, directory, b"") for d in ("bin", "dev", "proc", "sys", "newroot")),
            ("bin/busybox", regular, busybox),
            ("bin/sh", 0o120777, b"busybox"),
            ("init", regular, init),
        ]
    )
    INITRAMFS.write_bytes(gzip.compress(archive, 6))
    stamp.write_text(value)


def accelerator() -> str:
    """KVM where it works; TCG on PVM hosts, where a 6.1 guest hangs at boot."""
    choice = os.environ.get("TAMALLOC_VM_ACCEL")
    if choice:
        return choice
    if Path("/sys/module/kvm_pvm").exists() or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    return "kvm"


def qemu_command(rundir: Path, workdir: Path, memory: str, cpus: int) -> list[str]:
    accel = accelerator()
    cpu = "host" if accel == "kvm" else "max"
    append = " ".join(
        [
            "console=ttyS0",
            "loglevel=4",
            "panic=-1",
            "rdinit=/init",
            "transparent_hugepage=madvise",
            "acpi=noirq",
            f"tamalloc.work={workdir}",
        ]
    )
    share = "security_model=none,multidevs=remap"
    return [
        "qemu-system-x86_64",
        "-accel",
        accel,
        "-cpu",
        cpu,
        "-smp",
        str(cpus),
        "-m",
        memory,
        "-kernel",
        str(BZIMAGE),
        "-initrd",
        str(INITRAMFS),
        "-append",
        append,
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-serial",
        f"file:{rundir / 'console.log'}",
        "-serial",
        "stdio",
        "-device",
        "virtio-rng-pci",
        "-virtfs",
        f"local,path=/,mount_tag=hostroot,readonly=on,{share}",
        "-virtfs",
        f"local,path={workdir},mount_tag=work,{share}",
        "-virtfs",
        f"local,path={rundir},mount_tag=run,{share}",
    ]


def oom_report_traces(lines: list[str]) -> set[int]:
    """Indexes of the first bare "Call Trace:" line of each complete OOM-killer report."""
    accepted: set[int] = set()
    start = None
    for i, line in enumerate(lines):
        if OOM_START.search(line):
            start = i
        elif start is not None and OOM_END.search(line):
            traces = [j for j in range(start, i) if CALL_TRACE_ONLY.match(lines[j])]
            accepted.update(traces[:1])
            start = None
    return accepted


def splats(dmesg: str, *, allow_oom: bool = False) -> list[str]:
    lines = dmesg.splitlines()
    accepted = oom_report_traces(lines) if allow_oom else set()
    return [
        line
        for i, line in enumerate(lines)
        if SPLAT.search(line) and not BANNER.search(line) and i not in accepted
    ]


def boot(
    command: str,
    *,
    workdir: Path,
    timeout: float,
    memory: str,
    cpus: int,
    check_log: bool,
    allow_oom: bool = False,
) -> int:
    if not BZIMAGE.exists():
        raise VmError(f"{BZIMAGE} missing: run `make kernel` first")
    build_initramfs()
    rundir = Path(tempfile.mkdtemp(prefix="run-", dir=BUILD_DIR))
    try:
        (rundir / "cmd.sh").write_text(f"cd {shlex.quote(str(workdir))} || exit 125\n{command}\n")
        cmd = qemu_command(rundir, workdir, memory, cpus)
        log(f"booting ({cmd[2]}, {cpus} CPUs, {memory}): {command}")
        start = time.monotonic()
        try:
            subprocess.run(cmd, stdin=subprocess.DEVNULL, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            log(f"guest timed out after {timeout:.0f} s")
        elapsed = time.monotonic() - start
        status_file = rundir / "status"
        if not status_file.exists():
            console = (rundir / "console.log").read_text(errors="replace")
            print(console[-4000:], file=sys.stderr)
            log(f"lost VM: no exit status after {elapsed:.0f} s (console above)")
            return LOST_VM
        status = int(status_file.read_text())
        dmesg = (rundir / "dmesg.txt").read_text(errors="replace")
        (BUILD_DIR / "last-dmesg.txt").write_text(dmesg)
        log(
            f"guest exited {status} after {elapsed:.0f} s; kernel log: "
            f"{BUILD_DIR / 'last-dmesg.txt'}"
        )
        if check_log:
            bad = splats(dmesg, allow_oom=allow_oom)
            if bad:
                print("\n".join(bad[:40]), file=sys.stderr)
                log(f"kernel log check FAILED: {len(bad)} suspicious lines (above)")
                return status or BAD_LOG
            log("kernel log check passed: no BUG/WARNING/KASAN/lockdep report")
            if allow_oom:
                reports = len(oom_report_traces(dmesg.splitlines()))
                log(f"--allow-oom: {reports} OOM-killer report(s) accepted")
        return status
    finally:
        shutil.rmtree(rundir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", help="shell command, run in the work tree")
    parser.add_argument("--workdir", type=Path, default=REPO)
    parser.add_argument("--timeout", type=float, default=float(os.environ.get("VM_TIMEOUT", 1800)))
    parser.add_argument("--memory", default=os.environ.get("VM_MEMORY", "4G"))
    parser.add_argument("--cpus", type=int, default=int(os.environ.get("VM_CPUS", 2)))
    parser.add_argument(
        "--check-log",
        action="store_true",
        help="fail on any BUG/WARNING/KASAN/lockdep line in the kernel log",
    )
    parser.add_argument(
        "--allow-oom",
        action="store_true",
        help="with --check-log, accept the stack dump of complete OOM-killer reports",
    )
    args = parser.parse_args()
    try:
        return boot(
            args.command,
            workdir=args.workdir.resolve(),
            timeout=args.timeout,
            memory=args.memory,
            cpus=args.cpus,
            check_log=args.check_log,
            allow_oom=args.allow_oom,
        )
    except VmError as err:
        print(f"vm/run.py: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
