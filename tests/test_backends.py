"""Backend selection: probing once, the environment variable, explicit choices."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import tamalloc
from _support import subprocess_env
from tamalloc import KernelUnavailable
from tamalloc.backends import get_backend

PROBE = (
    "import json, tamalloc\n"
    "print(json.dumps([tamalloc.kernel_available(), tamalloc.default_backend_name()]))\n"
)


def _probe(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        env=subprocess_env(**env),
        timeout=60,
    )


def test_default_is_kernel_exactly_when_available() -> None:
    available, default = json.loads(_probe().stdout)
    assert available == tamalloc.kernel_available()
    assert default == ("kernel" if available else "procfs")


def test_environment_variable_overrides_the_default() -> None:
    assert json.loads(_probe(TAMALLOC_BACKEND="procfs").stdout)[1] == "procfs"


def test_environment_variable_must_name_a_backend() -> None:
    result = _probe(TAMALLOC_BACKEND="bogus")
    assert result.returncode != 0
    assert "unknown backend 'bogus'" in result.stderr


def test_unknown_backend_name() -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        get_backend("sysfs")
    with pytest.raises(ValueError, match="unknown backend"):
        tamalloc.all_mem_stats(backend="sysfs")


def test_backends_are_cached() -> None:
    assert get_backend("procfs") is get_backend("procfs")
    assert get_backend("procfs").name == "procfs"


def test_kernel_backend_where_absent_is_a_clear_error() -> None:
    if tamalloc.kernel_available():
        pytest.skip("this kernel has the tamalloc syscalls")
    with pytest.raises(KernelUnavailable, match="patched kernel"):
        tamalloc.mem_stats(1, backend="kernel")
    with pytest.raises(KernelUnavailable):
        tamalloc.alloc("1M", backend="kernel")


@pytest.mark.kernel
def test_kernel_available_on_the_patched_kernel() -> None:
    assert tamalloc.kernel_available()
    assert get_backend("kernel").name == "kernel"


def test_the_probe_says_the_same_without_the_c_extension() -> None:
    """The probe's syscall goes through the C extension, through ctypes where it is
    not built: both see the same errno, and the probe the same answer."""
    import errno

    from tamalloc import _libc, abi

    _procscan = pytest.importorskip("tamalloc.backends._procscan")

    for nr in (abi.NR_GET_TOTAL_MEM_STATS, abi.NR_GET_MEM_STATS):
        assert _procscan.syscall_errno(nr) == _libc.syscall_errno(nr)
    expected = _procscan.syscall_errno(abi.NR_GET_TOTAL_MEM_STATS) == errno.EINVAL
    assert expected == tamalloc.kernel_available()
    without_c = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['tamalloc.backends._procscan'] = None\n" + PROBE,
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
        check=True,
    )
    assert json.loads(without_c.stdout)[0] == expected
    with pytest.raises(TypeError):
        _procscan.syscall_errno("550")
