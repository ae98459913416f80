"""Shared by the robustness campaign's tests (tests/stress/test_stress_*.py).

Scale: the short form (what `make vm-test` runs) unless TAMALLOC_STRESS=long, which
`make stress` sets for its own guest boot.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

IN_VM = os.environ.get("TAMALLOC_IN_VM") == "1"
LONG = os.environ.get("TAMALLOC_STRESS") == "long"
REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
KO = REPO / "kernel" / "modules" / "system_stats" / "system_stats.ko"
BUILD_DIR = Path(os.environ.get("TAMALLOC_BUILD_DIR") or Path.home() / ".cache" / "tamalloc")
HEADERS = BUILD_DIR / "headers" / "include"
NOBODY = 65534
SYS_DELETE_MODULE = 176  # x86_64, as the guest
SYS_FINIT_MODULE = 313
# Generous: a hung guest process must fail the test, never wait forever.
RUN_TIMEOUT = 3600 if LONG else 900

libc = ctypes.CDLL(None, use_errno=True)


def load_run_py() -> ModuleType:
    """vm/run.py, for its kernel-log check (SPLAT and the --allow-oom rule)."""
    vm = str(REPO / "vm")
    if vm not in sys.path:
        sys.path.insert(0, vm)
    spec = importlib.util.spec_from_file_location("tamalloc_vm_run", REPO / "vm" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(sources: list[str], out_dir: Path) -> dict[str, Path]:
    """Compile tests/stress/SOURCE.c warning-free against the installed uapi headers
    (all at once: gcc is slow under emulation)."""
    header = HEADERS / "linux" / "tamalloc.h"
    if not header.exists():
        pytest.fail(f"{header} missing: `make kernel` installs the uapi headers")
    cmd = ["gcc", "-Wall", "-Wextra", "-Werror", "-O2", "-pthread", f"-I{HEADERS}"]
    binaries = {name: out_dir / name for name in sources}
    builds = {
        name: subprocess.Popen(
            [*cmd, str(HERE / f"{name}.c"), "-o", str(binary)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, binary in binaries.items()
    }
    for name, proc in builds.items():
        output, _ = proc.communicate(timeout=RUN_TIMEOUT)
        assert proc.returncode == 0, f"gcc {name}.c:\n{output}"
    return binaries


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a campaign program; its output is printed (visible with -s, or on failure)."""
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False, **kwargs
    )  # type: ignore[call-overload]
    print(f"$ {' '.join(cmd)}\n{result.stdout}{result.stderr}", flush=True)
    return result


def module_loaded() -> bool:
    return Path("/sys/module/system_stats").exists()


def load_module() -> None:
    if not KO.exists():
        pytest.fail(f"{KO} missing: `make module` builds it before the guest boots")
    fd = os.open(KO, os.O_RDONLY)
    try:
        ok = libc.syscall(ctypes.c_long(SYS_FINIT_MODULE), ctypes.c_long(fd), b"", 0) == 0
    finally:
        os.close(fd)
    err = ctypes.get_errno()
    if not ok and err != 17:  # EEXIST
        raise OSError(err, f"finit_module {KO}: {os.strerror(err)}")


def unload_module() -> None:
    name = ctypes.c_char_p(b"system_stats")
    if libc.syscall(ctypes.c_long(SYS_DELETE_MODULE), name, ctypes.c_long(os.O_NONBLOCK)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"delete_module system_stats: {os.strerror(err)}")


@contextlib.contextmanager
def module_state(loaded: bool) -> Iterator[None]:
    """The module loaded (or not) for the block, then as it was before."""
    before = module_loaded()
    if loaded and not before:
        load_module()
    elif not loaded and before:
        unload_module()
    try:
        yield
    finally:
        if module_loaded() and not before:
            unload_module()
        elif before and not module_loaded():
            load_module()


def figures(text: str, *patterns: str) -> list[str]:
    """The summary lines of a program's output, for the campaign's report."""
    return [line for line in text.splitlines() if any(re.search(p, line) for p in patterns)]
