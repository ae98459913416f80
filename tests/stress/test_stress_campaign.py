"""The robustness campaign on the debug kernel (issue 8, item 6): fuzzer, storm, OOM kill.

Runs as root inside the VM: `make vm-test` runs the short form (20,000 fuzzed calls, a
storm of 200 processes with the module loaded and unloaded meanwhile); `make stress`
runs the long form (TAMALLOC_STRESS=long: 1,000,000 calls, 3,000 processes) and the OOM
kill, in a boot of its own whose kernel-log check accepts exactly the OOM-killer report
(vm/run.py --allow-oom). Elsewhere the file is skipped; in the guest a missing syscall,
header, compiler or module is a failure. Every test also fails if the kernel logged a
splat (BUG, WARNING, KASAN, lockdep, ...) while it ran.

The C programs (fuzz_syscalls.c, storm.c) hold the checks; their headers say what
they do and what counts as a valid result.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stress_support import (
    IN_VM,
    KO,
    LONG,
    build,
    figures,
    load_run_py,
    module_state,
    run,
)

from _support import KernelLog

if not IN_VM:
    pytest.skip("runs inside the VM: make vm-test", allow_module_level=True)

pytestmark = pytest.mark.usefixtures("require_kernel")

FUZZ_CALLS = 1_000_000 if LONG else 20_000
STORM_PROCESSES = 3_000 if LONG else 200
# pid numbers wrap every few hundred processes: pid reuse all the time
STORM_PID_MAX = 1024 if LONG else 600
SEED = os.environ.get("TAMALLOC_STRESS_SEED", str(int(time.time())))

RUN = load_run_py()


@pytest.fixture(scope="module")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("stress")
    return build(["fuzz_syscalls", "storm"], out)


@pytest.fixture
def allow_oom() -> None:
    """The test triggers the OOM killer: its report (and only it) is not a splat."""


@pytest.fixture(autouse=True)
def no_splat(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test on any splat it caused; an OOM test accepts only the OOM report."""
    log = KernelLog()
    yield
    lines = log.new_lines()
    log.close()
    allow_oom = "allow_oom" in request.fixturenames
    bad = RUN.splats("\n".join(lines), allow_oom=allow_oom)
    assert not bad, "kernel log:\n" + "\n".join(bad[:40])


def test_fuzz_syscalls(binaries: dict[str, Path]) -> None:
    """Random and boundary arguments; every return a valid result or an allowed errno."""
    cmd = [str(binaries["fuzz_syscalls"]), "-n", str(FUZZ_CALLS), "-j", "2", "-s", SEED]
    result = run(cmd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"fuzz_syscalls: {FUZZ_CALLS} calls in" in result.stdout
    assert result.stdout.rstrip().endswith("fuzz_syscalls: OK")


def test_storm_with_module_load_unload(binaries: dict[str, Path]) -> None:
    """Processes and threads come and go while scanners walk them and read the module."""
    if not KO.exists():
        pytest.fail(f"{KO} missing: `make module` builds it before the guest boots")
    with module_state(loaded=False):
        result = run(
            [
                str(binaries["storm"]),
                "-p",
                str(STORM_PROCESSES),
                "-j",
                "3",
                "-m",
                str(KO),
                "-r",
                str(STORM_PID_MAX),
                "-s",
                SEED,
            ]
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "storm: 0 invalid: OK" in result.stdout
    # It really did what it says: processes, zombie leaders, module cycles, reads.
    summary = figures(result.stdout, r"^storm: [\d.]+ s:", r"^storm: scans:")
    assert len(summary) == 2, result.stdout
    created = re.search(r" s: (\d+) processes", summary[0])
    assert created and int(created.group(1)) >= STORM_PROCESSES, summary[0]
    assert " 0 zombie leaders" not in summary[0], summary[0]
    assert " 0 module load/unload cycles" not in summary[1], summary[1]
    assert " 0 mem_watch reads" not in summary[1], summary[1]


def test_storm_with_module_loaded(binaries: dict[str, Path]) -> None:
    """The same with the module staying loaded: then every read of its files must work."""
    with module_state(loaded=True):
        result = run(
            [
                str(binaries["storm"]),
                "-p",
                str(max(STORM_PROCESSES // 4, 100)),
                "-j",
                "2",
                "-s",
                SEED,
            ]
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "storm: 0 invalid: OK" in result.stdout
    assert "module loaded" in result.stdout


@pytest.mark.usefixtures("allow_oom")
def test_oom_kill_of_a_tamalloc_hog_while_scans_run(binaries: dict[str, Path]) -> None:
    """A hog touching twice MemTotal of tamalloc() memory dies of SIGKILL; scans go on."""
    if not LONG:
        pytest.skip(
            "the OOM kill runs in a boot of its own: make stress "
            "(vm/run.py --allow-oom accepts exactly the OOM-killer report)"
        )
    Path("/proc/sys/vm/oom_dump_tasks").write_text("0")  # a short report
    try:
        with module_state(loaded=True):
            result = run([str(binaries["storm"]), "-p", "50", "-j", "3", "-o", "-s", SEED])
    finally:
        Path("/proc/sys/vm/oom_dump_tasks").write_text("1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "storm: OOM phase: hog killed after touching" in result.stdout
    assert "storm: 0 invalid: OK" in result.stdout
