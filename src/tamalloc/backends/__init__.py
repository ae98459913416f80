"""Backend selection: the tamalloc syscalls where present, then the BPF task iterator
(``bpf``), then /proc.

``bpf`` is chosen unasked only where it is cheap for the caller: loading its program
costs 20-70 ms a process (libbpf parses the kernel's BTF), more than a one-shot procfs
scan of a small machine, while opening the iterator that ``tamalloc bpf pin`` left in
bpffs costs well under a millisecond. So: a pinned iterator this process may open
(root's: see :mod:`.bpf`) is used by everyone; without one, only a long-running caller
(the exporter: ``default_backend_name(long_running=True)``) loads the program; a
one-shot command uses procfs. Probing for a pin costs a failed ``stat`` where there is none.

The default is decided once per process (``TAMALLOC_BACKEND`` or probing the kernel)
and cached; every public function also takes ``backend=`` to override it per call.
"""

from __future__ import annotations

import functools
import os

from .base import BACKEND_NAMES as BACKEND_NAMES
from .base import Backend as Backend
from .base import BackendName as BackendName
from .probe import kernel_available as kernel_available

ENV_VAR = "TAMALLOC_BACKEND"
# bpf.PIN_DIR, known here without importing the bpf module: where nothing was pinned
# (or this user may not look: /sys/fs/bpf is root's), the default costs one stat.
_PIN_DIR = "/sys/fs/bpf/tamalloc"


def _check_name(name: str, origin: str) -> BackendName:
    if name == "kernel":
        return "kernel"
    if name == "bpf":
        return "bpf"
    if name == "procfs":
        return "procfs"
    raise ValueError(
        f"unknown backend {name!r} from {origin}: expected 'kernel', 'bpf' or 'procfs'"
    )


def bpf_unavailable_reason() -> str | None:
    """Why the bpf backend cannot run here, or None (then its program is loaded)."""
    from .bpf import unavailable_reason

    return unavailable_reason()


def bpf_pinned() -> bool:
    """Whether this process can use a pinned iterator (then it has opened it)."""
    try:
        os.stat(_PIN_DIR)
    except OSError:
        return False
    from .bpf import pinned_reason

    return pinned_reason() is None


@functools.cache
def default_backend_name(*, long_running: bool = False) -> BackendName:
    """``$TAMALLOC_BACKEND`` if set, else kernel when available, else bpf when pinned
    (or, for a ``long_running`` caller, when it loads: its 20-70 ms are paid once, each
    pass then costs a fraction of a procfs scan), else procfs."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return _check_name(env, f"${ENV_VAR}")
    if kernel_available():
        return "kernel"
    if bpf_pinned() or (long_running and bpf_unavailable_reason() is None):
        return "bpf"
    return "procfs"


@functools.cache
def _instance(name: BackendName) -> Backend:
    # Each backend imported when chosen: a backend's module costs 2-4 ms of start-up
    # (ctypes and the ABI's structures; the C scan and re), the unused one none.
    if name == "kernel":
        from .kernel import KernelBackend

        return KernelBackend()
    if name == "bpf":
        from .bpf import BpfBackend

        return BpfBackend()
    from .procfs import ProcfsBackend

    return ProcfsBackend()


def get_backend(name: str | None = None) -> Backend:
    """The backend called ``name`` (default: :func:`default_backend_name`).

    Raises KernelUnavailable for "kernel" on a kernel without the syscalls,
    BpfUnavailable for "bpf" where its program cannot run, and ValueError for an
    unknown name.
    """
    if name is None:
        return _default_instance()
    return _instance(_check_name(name, "backend="))


@functools.cache
def _default_instance() -> Backend:
    return _instance(default_backend_name())
