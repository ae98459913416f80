"""Where the VM pipeline keeps its files, and the helpers every step shares.

The build directory lives outside the work tree (default
~/.cache/tamalloc, override with TAMALLOC_BUILD_DIR) so that fresh clones,
CI runs included, reuse one kernel build.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PATCHES_DIR = REPO / "kernel" / "patches"
CONFIG_FRAGMENT = REPO / "kernel" / "config" / "guest.config"
GUEST_INIT = REPO / "vm" / "guest-init.sh"

BUILD_DIR = Path(
    os.environ.get("TAMALLOC_BUILD_DIR") or Path.home() / ".cache" / "tamalloc"
).resolve()
SRC_DIR = BUILD_DIR / "src"
OBJ_DIR = BUILD_DIR / "obj"
HEADERS_DIR = BUILD_DIR / "headers"
BZIMAGE = OBJ_DIR / "arch" / "x86" / "boot" / "bzImage"
INITRAMFS = BUILD_DIR / "initramfs.cpio.gz"


class VmError(Exception):
    """A pipeline step failed; the message says which and why."""


def log(message: str) -> None:
    print(f"[tamalloc-vm] {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], *, capture: bool = False) -> str:
    """Run a command; raise VmError naming it when it fails."""
    result = subprocess.run(cmd, text=True, capture_output=capture, check=False)
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-5:] if capture else []
        raise VmError(
            f"`{' '.join(cmd[:4])} ...` exited {result.returncode}"
            + "".join(f"\n  {line}" for line in detail)
        )
    return result.stdout if capture else ""
