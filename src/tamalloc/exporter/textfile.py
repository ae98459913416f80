"""``tamalloc exporter --textfile``: the metrics written for node_exporter's textfile
collector, atomically, once or every few seconds."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time
from collections.abc import Callable

from prometheus_client.registry import CollectorRegistry

from .collector import render

__all__ = ["write_every", "write_textfile"]


def write_textfile(path: str | os.PathLike[str], registry: CollectorRegistry) -> None:
    """Write one scrape to ``path`` atomically: a temporary file in the same directory
    (named ``.NAME.*.tmp``, which node_exporter's ``*.prom`` glob skips), written in
    full, fsynced, made world-readable and renamed over ``path``; the directory is
    fsynced so the rename survives a crash. A reader sees the old file or the new
    one, never a part. Raises OSError (the temporary file is then removed)."""
    data = render(registry)
    target = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_every(
    path: str, interval: float, registry: CollectorRegistry, on_error: Callable[[OSError], None]
) -> None:
    """Write the textfile every ``interval`` seconds, on a fixed beat (a slow write does
    not shift the next), until interrupted; a failed write (a full disk may pass) goes
    to ``on_error`` and the next one is tried."""
    deadline = time.monotonic()
    while True:
        deadline += interval
        time.sleep(max(0.0, deadline - time.monotonic()))
        try:
            write_textfile(path, registry)
        except OSError as err:
            on_error(err)
