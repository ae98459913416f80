"""The tamalloc syscalls' numbers and the machines that have them, mirrored from the
kernel patch series (``docs/abi.md``; :mod:`.abi` exports these names with the record
layouts). Apart from the layouts, which are ctypes structures, so that probing the
kernel, which every command's choice of backend does, loads no ctypes."""

from __future__ import annotations

import os

# x86_64 only: other architectures have no numbers assigned, so the kernel backend
# treats them as "syscalls absent".
SUPPORTED_MACHINES = frozenset({"x86_64", "amd64"})

NR_TAMALLOC = 548
NR_GET_MEM_STATS = 549
NR_GET_TOTAL_MEM_STATS = 550


def machine_supported(machine: str | None = None) -> bool:
    """Whether the syscall numbers above are valid on this (or the given) machine."""
    return (machine or os.uname().machine).lower() in SUPPORTED_MACHINES
