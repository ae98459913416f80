"""Shared test machinery.

Kernel facilities: tests that need the tamalloc syscalls use the ``kernel`` marker or
the ``require_kernel`` fixture (the ``backend`` fixture's "kernel" case carries the
marker). On a stock kernel they SKIP with the reason below; inside the VM, where
``TAMALLOC_IN_VM=1`` is set, a missing facility is a FAILURE, never a skip.

The ``backend`` fixture's "bpf" case carries the ``bpf`` marker: it runs where the bpf
backend can (root or CAP_BPF + CAP_PERFMON, a kernel with BTF, the loader built) and
skips elsewhere with the backend's own reason, except inside the VM, whose kernel is
configured for it: there a bpf backend that cannot run is a failure too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from _support import SRC, Child, MiB

if str(SRC) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(SRC))

import tamalloc

IN_VM = os.environ.get("TAMALLOC_IN_VM") == "1"
NEEDS_KERNEL = "needs the patched kernel with the tamalloc syscalls: run `make vm-test`"


def missing_kernel_facility(what: str = "the tamalloc syscalls") -> None:
    """Skip on a stock kernel; fail inside the VM (TAMALLOC_IN_VM=1)."""
    if IN_VM:
        pytest.fail(f"TAMALLOC_IN_VM=1 but {what} are missing: the patched kernel did not boot?")
    pytest.skip(NEEDS_KERNEL)


def missing_bpf() -> None:
    """Skip where the bpf backend cannot run, saying why; fail inside the VM."""
    from tamalloc.backends import bpf_unavailable_reason

    reason = bpf_unavailable_reason()
    if reason is None:
        return
    if IN_VM:
        pytest.fail(f"TAMALLOC_IN_VM=1 but the bpf backend cannot run: {reason}")
    pytest.skip(f"the bpf backend cannot run here: {reason}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kernel: needs the tamalloc syscalls (see conftest.py)")
    config.addinivalue_line("markers", "bpf: needs the bpf backend to run (see conftest.py)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel") is not None and not tamalloc.kernel_available():
        missing_kernel_facility()
    if item.get_closest_marker("bpf") is not None:
        missing_bpf()


@pytest.fixture
def require_kernel() -> None:
    """Use (or ``usefixtures``) this for tests that call the syscalls directly."""
    if not tamalloc.kernel_available():
        missing_kernel_facility()


@pytest.fixture(
    params=[
        "procfs",
        pytest.param("kernel", marks=pytest.mark.kernel),
        pytest.param("bpf", marks=pytest.mark.bpf),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend-agnostic test runs on procfs always, on kernel where present and on
    bpf where it can run."""
    return str(request.param)


@pytest.fixture
def spawn_child() -> Iterator[Callable[..., Child]]:
    """Factory: ``spawn_child(reserve=64 MiB, touch=8 MiB)``; killed at teardown."""
    children: list[Child] = []

    from _support import CHILD_SCRIPT

    def spawn(reserve: int = 64 * MiB, touch: int = 8 * MiB) -> Child:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD_SCRIPT, str(reserve), str(touch)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        child = Child(proc, reserve, touch)
        children.append(child)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n", "child failed to allocate"
        return child

    yield spawn
    for child in children:
        child.proc.kill()
        child.proc.wait()


@pytest.fixture
def child(spawn_child: Callable[..., Child]) -> Child:
    return spawn_child()
