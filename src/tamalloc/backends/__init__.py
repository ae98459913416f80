"""Backend selection: the tamalloc syscalls where present, /proc everywhere else; the
BPF task iterator (``bpf``) when asked for.

``bpf`` comes between the two in the intended order, but loading its program costs tens
of milliseconds a process (see :mod:`.bpf`), more than a one-shot procfs scan: until the
loaded program is kept between processes it is used only when forced.

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


@functools.cache
def default_backend_name() -> BackendName:
    """``$TAMALLOC_BACKEND`` if set, else kernel when available, else procfs (bpf only
    when named: see the module's note)."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return _check_name(env, f"${ENV_VAR}")
    return "kernel" if kernel_available() else "procfs"


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
