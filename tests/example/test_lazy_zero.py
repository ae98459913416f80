"""examples/lazy_zero.c, built in the guest against the installed uapi headers and run.

Runs inside the VM only (`make vm-test` sets TAMALLOC_IN_VM=1); there a missing header
or a failed build is a failure, never a skip.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

if os.environ.get("TAMALLOC_IN_VM") != "1":
    pytest.skip("runs inside the VM: make vm-test", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "examples" / "lazy_zero.c"
BUILD_DIR = Path(os.environ.get("TAMALLOC_BUILD_DIR") or Path.home() / ".cache" / "tamalloc")
HEADERS = BUILD_DIR / "headers" / "include"
MiB = 1 << 20
# 6.1 flushes a thread's RSS counter updates every 64 page faults.
RSS_LAG_KB = 64 * 4


@pytest.fixture(scope="module")
def lazy_zero(tmp_path_factory: pytest.TempPathFactory) -> Path:
    header = HEADERS / "linux" / "tamalloc.h"
    if not header.exists():
        pytest.fail(f"{header} missing: `make kernel` installs the uapi headers")
    binary = tmp_path_factory.mktemp("lazy_zero") / "lazy_zero"
    build = subprocess.run(
        ["gcc", "-Wall", "-Wextra", "-Werror", f"-I{HEADERS}", str(SOURCE), "-o", str(binary)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    return binary


def run(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args], capture_output=True, text=True, timeout=900, check=False
    )


def rss(stdout: str, when: str) -> int:
    match = re.search(rf"^VmRSS {when}: (\d+) kB", stdout, re.M)
    assert match, f"no 'VmRSS {when}' line in:\n{stdout}"
    return int(match.group(1))


def address(stdout: str) -> int:
    match = re.search(r"^tamalloc\((\d+), 0x([0-9a-f]+)\) = 0x([0-9a-f]+)$", stdout, re.M)
    assert match, stdout
    return int(match.group(3), 16)


def test_ten_mebibytes_read_zero_and_become_resident(lazy_zero: Path) -> None:
    result = run(lazy_zero)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"lazy_zero: pid {int(out.split()[2].rstrip(','))}, 10485760 bytes" in out
    assert re.findall(r"^checked (\d+) MiB$", out, re.M) == [str(i) for i in range(1, 11)]
    assert "OK: all 10485760 bytes read 0 at first access and kept their letter" in out
    assert address(out) % os.sysconf("SC_PAGE_SIZE") == 0

    before = rss(out, "before tamalloc")
    # Reserving is free: nothing becomes resident until it is touched.
    assert rss(out, "after tamalloc") - before < 1024
    assert rss(out, "after touching") - before >= 10 * 1024 - RSS_LAG_KB
    assert rss(out, "after munmap") - before < 1024


def test_size_option_and_huge_flag(lazy_zero: Path) -> None:
    result = run(lazy_zero, "-s", "4M", "-H")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tamalloc(4194304, 0x1) = " in result.stdout
    assert address(result.stdout) % (2 * MiB) == 0
    assert re.findall(r"^checked (\d+) MiB$", result.stdout, re.M) == ["1", "2", "3", "4"]


def test_size_not_a_multiple_of_a_mebibyte(lazy_zero: Path) -> None:
    result = run(lazy_zero, "-s", "1500K")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checked 1 MiB\n" in result.stdout
    assert "checked 1536000 bytes\n" in result.stdout
    assert "OK: all 1536000 bytes" in result.stdout


def test_pauses_let_another_terminal_watch(lazy_zero: Path) -> None:
    child = subprocess.Popen(
        [str(lazy_zero), "-p", "-s", "2M"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None

    def until(prompt: str) -> str:
        seen = []
        for line in child.stdout:
            seen.append(line)
            if prompt in line:
                return "".join(seen)
        raise AssertionError(f"no prompt {prompt!r} in:\n{''.join(seen)}")

    def vm_rss() -> int:
        for line in Path(f"/proc/{child.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    try:
        until("press Enter to call tamalloc()")
        start = vm_rss()
        child.stdin.write("\n")
        child.stdin.flush()
        until("press Enter to read and write the buffer")
        assert vm_rss() - start < 1024, "the buffer must not be resident yet"
        child.stdin.write("\n")
        child.stdin.flush()
        out = until("press Enter to free the buffer and exit")
        assert "OK: all 2097152 bytes" in out
        assert vm_rss() - start >= 2048 - RSS_LAG_KB
        child.stdin.write("\n")
        child.stdin.close()
        assert child.wait(timeout=300) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.parametrize("args", [["-s", "0"], ["-s", "12Q"], ["-x"], ["extra"]])
def test_usage_errors_exit_2(lazy_zero: Path, args: list[str]) -> None:
    assert run(lazy_zero, *args).returncode == 2


def test_tamalloc_failure_exits_3(lazy_zero: Path) -> None:
    result = run(lazy_zero, "-s", "1048576G")  # 1 PiB: more than the address space
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Cannot allocate memory" in result.stderr
