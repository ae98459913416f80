"""The errno → exception mapping."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

import tamalloc
from tamalloc import AccessDenied, KernelUnavailable, NoSuchCgroup, NoSuchProcess, TamallocError
from tamalloc.errors import exception_for_errno, raise_errno, translate_os_errors


@pytest.mark.parametrize(
    ("err", "kind"),
    [
        (errno.ESRCH, NoSuchProcess),
        (errno.ENOENT, NoSuchProcess),
        (errno.EACCES, AccessDenied),
        (errno.EPERM, AccessDenied),
        (errno.ENOMEM, MemoryError),
        (errno.EINVAL, ValueError),
        (errno.ENOSYS, KernelUnavailable),
        (errno.EIO, OSError),
    ],
)
def test_errno_mapping(err: int, kind: type[Exception]) -> None:
    with pytest.raises(kind) as info:
        raise_errno(err, pid=123)
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == err


def test_messages_are_readable() -> None:
    assert str(NoSuchProcess(42)) == "no such process: 42"
    assert "access denied to process 42" in str(AccessDenied(42))
    assert "patched kernel" in str(KernelUnavailable())


def test_missing_file_without_pid_stays_an_os_error() -> None:
    err = exception_for_errno(errno.ENOENT)
    assert isinstance(err, FileNotFoundError)
    assert not isinstance(err, NoSuchProcess)


def test_context_manager_translates_and_chains() -> None:
    with pytest.raises(NoSuchProcess) as info, translate_os_errors(pid=7):
        os.stat("/proc/does-not-exist/status")
    assert info.value.pid == 7
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_context_manager_leaves_other_exceptions_alone() -> None:
    with pytest.raises(KeyError), translate_os_errors(pid=7):
        raise KeyError("x")


# --- issue 16, item 11 -------------------------------------------------------------------


def test_no_such_process_is_a_process_lookup_error() -> None:
    err = NoSuchProcess(123)
    assert isinstance(err, ProcessLookupError) and isinstance(err, TamallocError)
    assert err.errno == errno.ESRCH and err.pid == 123
    assert str(err) == "no such process: 123"  # not "[Errno 3] ..."
    with pytest.raises(ProcessLookupError):
        raise_errno(errno.ESRCH, pid=123)


def test_no_such_process_survives_translate_os_errors() -> None:
    # It is an OSError with an errno now: the translation must not make it another.
    with pytest.raises(NoSuchProcess) as info, translate_os_errors(pid=5):
        raise NoSuchProcess(7)
    assert info.value.pid == 7


def test_no_such_process_pickles() -> None:
    import pickle

    copy = pickle.loads(pickle.dumps(NoSuchProcess(42)))
    assert isinstance(copy, NoSuchProcess) and copy.pid == 42 and str(copy) == "no such process: 42"


def test_a_missing_process_is_a_process_lookup_error(backend: str) -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: its pid names no process
    with pytest.raises(ProcessLookupError):
        tamalloc.mem_stats(proc.pid, backend=backend)


def test_no_such_cgroup_is_exported() -> None:
    from tamalloc.oom import NoSuchCgroup as from_oom

    assert "NoSuchCgroup" in tamalloc.__all__
    assert from_oom is NoSuchCgroup and issubclass(NoSuchCgroup, TamallocError)
