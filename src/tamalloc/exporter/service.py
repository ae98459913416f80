"""What a long-running ``tamalloc exporter`` process needs beyond its metrics: SIGTERM
as a normal stop, and room for the procfs scan's kept files."""

from __future__ import annotations

import contextlib
import resource
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["OPEN_FILES_WANTED", "raise_open_files_limit", "stop_on_sigterm"]


class _Stop(BaseException):
    """SIGTERM: the normal way out of a server (systemd stop). A BaseException, as
    KeyboardInterrupt is: socketserver answers an Exception raised while it starts a
    request's thread with handle_error() and serves on, so a SIGTERM arriving then was
    swallowed and the exporter never stopped."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """The block ends normally on SIGTERM or Ctrl-C (exit 0 for a service)."""
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        yield
    except (_Stop, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


# The procfs scan keeps its files open from one scrape to the next only above half
# the soft limit on open files, so that the numbers a program gives select() stay
# below 1024; the usual soft limit of 1024 leaves no room. A program that needs many
# fds and never calls select() raises its soft limit towards the hard one (systemd's
# advice); the exporter is one (http.server waits with poll).
OPEN_FILES_WANTED = 65536


def raise_open_files_limit(wanted: int = OPEN_FILES_WANTED) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
