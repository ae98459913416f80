"""Run a command as root outside the guest's chroot, in a mount namespace of its own.

    unchroot.py CMD [ARG ...]

The guest's init (vm/guest-init.sh) chroots into the host's root instead of pivoting
into it, and the kernel refuses to create a user namespace from a chroot (unshare(2):
EPERM when the caller's root is not its mount namespace's root). Distribution systems
are not chrooted, so an unprivileged `unshare -Urm` works there; this puts the command
in the same position: a new mount namespace whose root is the host's root tree moved
onto the namespace's root, as switch_root(8) does. Nothing outside the new mount
namespace changes. Standard library only.
"""

from __future__ import annotations

import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

libc = ctypes.CDLL(None, use_errno=True)


def check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cwd = os.getcwd()
    # Our root is a mount on the initramfs at /newroot: find it from init's root.
    inner = os.stat("/")
    os.chroot("/proc/1/root")
    os.chdir("/")
    check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    newroot = next(
        f"/{e}"
        for e in os.listdir("/")
        if os.path.isdir(f"/{e}")
        and (st := os.stat(f"/{e}")).st_dev == inner.st_dev
        and st.st_ino == inner.st_ino
    )
    os.chdir(newroot)
    check(libc.mount(b".", b"/", None, MS_MOVE, None), f"mount --move {newroot} /")
    os.chroot(".")
    os.chdir(cwd)
    os.execvp(sys.argv[1], sys.argv[1:])
    return 127


if __name__ == "__main__":
    sys.exit(main())
