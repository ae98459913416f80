"""The errno → exception mapping."""

from __future__ import annotations

import errno
import os

import pytest

from tamalloc import AccessDenied, KernelUnavailable, NoSuchProcess
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
