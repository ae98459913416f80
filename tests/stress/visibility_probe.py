"""What one process sees: /proc, /proc/mem_stats_all and get_mem_stats(0). Prints JSON.

Run by test_stress_unprivileged.py as another user and in other namespaces, with the
system's python3 (standard library only; the file is copied where that user can read it).

    visibility_probe.py [--proc DIR] [--ask PID ...] [--wait]
    visibility_probe.py --binds      bind mounts over /proc files, then read the module
    visibility_probe.py --root-over SOURCE   SOURCE as the root directory, read the module

--wait: print, then wait for a line on stdin before exiting (so that the caller can look
at this process from outside its namespaces).
"""

from __future__ import annotations

import ctypes
import json
import os
import stat
import sys

NR_GET_MEM_STATS = 549
NR_GET_TOTAL_MEM_STATS = 550
REC = 88
MS_BIND = 0x1000
MS_REC = 0x4000
MNT_DETACH = 2

libc = ctypes.CDLL(None, use_errno=True)
C_LONG = ctypes.c_long


def get_mem_stats(pid: int, buf: ctypes.Array[ctypes.c_char] | None, count: int) -> int:
    ret = libc.syscall(
        C_LONG(NR_GET_MEM_STATS), C_LONG(pid), buf, C_LONG(REC), C_LONG(count), C_LONG(0)
    )
    return int(ret) if ret >= 0 else -ctypes.get_errno()


def syscall_pids() -> list[int] | str:
    count = get_mem_stats(0, None, 0)
    while count >= 0:
        cap = count + 64
        buf = ctypes.create_string_buffer(cap * REC)
        n = get_mem_stats(0, buf, cap)
        if n >= 0:
            raw = buf.raw
            return [
                int.from_bytes(raw[i * REC : i * REC + 4], "little", signed=True) for i in range(n)
            ]
        if n != -75:  # EOVERFLOW: more processes meanwhile
            return os.strerror(-n)
        count = cap * 2
    return os.strerror(-count)


def one(pid: int) -> int | str:
    buf = ctypes.create_string_buffer(REC)
    n = get_mem_stats(pid, buf, 1)
    if n < 0:
        return {3: "ESRCH"}.get(-n, os.strerror(-n))
    return int.from_bytes(buf.raw[:4], "little", signed=True)


def totals() -> dict[str, int | None] | str:
    buf = ctypes.create_string_buffer(4096)
    ret = libc.syscall(C_LONG(NR_GET_TOTAL_MEM_STATS), buf, C_LONG(4096), C_LONG(0))
    if ret < 0:
        return os.strerror(ctypes.get_errno())
    raw = buf.raw
    size = int.from_bytes(raw[60:64], "little")  # __reserved (VER0) / the kernel's size
    hidden = int.from_bytes(raw[64:72], "little") if size >= 72 else None  # some_hidden
    return {"processes": int.from_bytes(raw[0:8], "little"), "size": size, "hidden": hidden}


def module_pids(proc: str) -> list[int] | str:
    try:
        with open(os.path.join(proc, "mem_stats_all"), "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as err:
        return f"{type(err).__name__}: {err}"
    return [p["pid"] for p in data["processes"]]


def proc_pids(proc: str) -> list[int]:
    return sorted(int(e) for e in os.listdir(proc) if e.isdigit())


def report(proc: str, ask: list[int]) -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "uid": os.getuid(),
        "proc_pids": proc_pids(proc),
        "module_pids": module_pids(proc),
        "syscall_pids": syscall_pids(),
        "totals": totals(),
        "one": {str(p): one(p) for p in ask},
    }


# --- bind mounts over every /proc file the module could touch --------------------------

TARGETS = [
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/vmstat",
    "/proc/loadavg",
    "/proc/uptime",
    "/proc/cpuinfo",
    "/proc/filesystems",
    "/proc/mounts",
    "/proc/self/status",
    "/proc/self/stat",
    "/proc/self/statm",
    "/proc/self/oom_score",
    "/proc/self/oom_score_adj",
    "/proc/self/comm",
    "/proc/sys/vm/overcommit_memory",
    "/proc/sys/kernel/pid_max",
    "/proc/mem_stats_all",
    "/proc/system_stats",
    "/proc/system_stats.json",
    "/proc/mem_watch",
]
MODULE_FILES = ["system_stats", "system_stats.json", "mem_stats_all", "mem_watch"]


def mount(src: str, dst: str, flags: int = MS_BIND) -> int:
    if libc.mount(src.encode(), dst.encode(), None, C_LONG(flags), None) != 0:
        return ctypes.get_errno()
    return 0


def umount(dst: str) -> None:
    libc.umount2(dst.encode(), MNT_DETACH)


def mem_total_kb() -> int:
    """MemTotal, taken before any bind mount (the module must agree with it)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    raise AssertionError("no MemTotal")


def read_module_file(name: str, covered: str, preopened: dict[str, int]) -> str:
    """Opened anew, unless the bind mount covers it: then through an fd opened before."""
    if covered == f"/proc/{name}":
        return os.pread(preopened[name], 1 << 22, 0).decode("utf-8")
    with open(f"/proc/{name}", "rb") as f:
        return f.read().decode("utf-8")


def check_module_files(
    mem_total: int, covered: str = "", preopened: dict[str, int] | None = None
) -> list[str]:
    """Read all four files; what is wrong with them, as text."""
    problems = []
    for name in MODULE_FILES:
        try:
            data = read_module_file(name, covered, preopened or {})
        except (OSError, UnicodeDecodeError) as err:
            problems.append(f"{name}: {err}")
            continue
        if name == "system_stats":
            if not data.startswith(f"[memory]\ntotal_kb {mem_total}\n"):
                problems.append(f"{name}: memory not from the kernel: {data[:40]!r}")
        elif name == "system_stats.json":
            try:
                total = json.loads(data)["memory"]["total_kb"]
            except (ValueError, KeyError) as err:
                problems.append(f"{name}: {err}: {data[:60]!r}")
                continue
            if total != mem_total:
                problems.append(f"{name}: total_kb {total}, MemTotal {mem_total}")
        elif name == "mem_stats_all":
            try:
                records = json.loads(data)
            except ValueError as err:
                problems.append(f"{name}: {err}: {data[:60]!r}")
                continue
            if os.getpid() not in [p["pid"] for p in records["processes"]]:
                problems.append(f"{name}: the reader itself is not listed")
        elif name == "mem_watch" and data.strip() != '{"error": "no process selected"}':
            problems.append(f"{name}: {data[:80]!r}")
    return problems


def binds() -> dict[str, object]:
    mem_total = mem_total_kb()
    scratch = f"/tmp/binds-{os.getpid()}"
    os.mkdir(scratch)
    empty, garbage, fifo = (os.path.join(scratch, n) for n in ("empty", "garbage", "fifo"))
    open(empty, "w").close()
    with open(garbage, "wb") as f:
        f.write(b"MemTotal: x kB\n\xff\x00" * 4096 + b"cpu 1 2\n" * 100)
    os.mkfifo(fifo, stat.S_IRUSR | stat.S_IWUSR)
    sources = [f"/proc/{n}" for n in MODULE_FILES] + [
        "/proc/self/status",
        "/dev/null",
        "/dev/zero",
        empty,
        garbage,
        fifo,
    ]
    mounted, refused, problems = 0, {}, check_module_files(mem_total)
    preopened = {n: os.open(f"/proc/{n}", os.O_RDONLY) for n in MODULE_FILES}
    for target in TARGETS:
        for source in sources:
            err = mount(source, target)
            if err:
                refused[f"{source} -> {target}"] = os.strerror(err)
                continue
            mounted += 1
            try:
                found = check_module_files(mem_total, target, preopened)
                problems += [f"{source} over {target}: {p}" for p in found]
            finally:
                umount(target)
    return {"mounted": mounted, "refused": refused, "problems": problems}


def root_over(source: str) -> dict[str, object]:
    """SOURCE (procfs, sysfs, ...) bind-mounted as the root directory; the module's
    files are read through descriptors opened before."""
    mem_total = mem_total_kb()
    fds = {n: os.open(f"/proc/{n}", os.O_RDONLY) for n in ("system_stats", "system_stats.json")}
    new_root = f"/tmp/root-{os.getpid()}"
    os.mkdir(new_root)
    err = mount(source, new_root, MS_BIND | MS_REC)
    if err:
        return {"refused": os.strerror(err)}
    os.chroot(new_root)
    os.chdir("/")
    out: dict[str, object] = {"root": source}
    for name, fd in fds.items():
        try:
            data = os.pread(fd, 1 << 20, 0).decode("utf-8")
        except OSError as err:  # a clean error is fine; a splat or a hang is not
            out[name] = f"OSError: {err}"
            continue
        ok = data.startswith(f"[memory]\ntotal_kb {mem_total}\n") or (
            data.startswith("{") and json.loads(data)["memory"]["total_kb"] == mem_total
        )
        out[name] = "ok" if ok else f"bad: {data[:80]!r}"
    return out


def main() -> int:
    args = sys.argv[1:]
    if args[:1] == ["--binds"]:
        print(json.dumps(binds()))
        return 0
    if args[:1] == ["--root-over"]:
        print(json.dumps(root_over(args[1])))
        return 0
    proc, ask, wait = "/proc", [], False
    while args:
        arg = args.pop(0)
        if arg == "--proc":
            proc = args.pop(0)
        elif arg == "--ask":
            ask.append(int(args.pop(0)))
        elif arg == "--wait":
            wait = True
    print(json.dumps(report(proc, ask)), flush=True)
    if wait:
        sys.stdin.readline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
