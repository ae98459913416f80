"""``tamalloc bpf pin|unpin|status``: keep the bpf backend's loaded task iterator in
bpffs between processes, so that every command opens it in well under a millisecond
instead of loading it (20-70 ms) or reading /proc (see docs/bpf.md, "Selection")."""

from __future__ import annotations

import argparse

from .env import Environment, ExitStatus


def run(args: argparse.Namespace, env: Environment) -> int:
    from ..backends import bpf

    if args.action == "pin":
        path = bpf.pin()
        env.info(
            f"pinned the task iterator at {path} (root's alone; until reboot or"
            " `tamalloc bpf unpin`): commands run as root now use the bpf backend"
        )
    elif args.action == "unpin":
        removed = bpf.unpin()
        env.info("unpinned " + ", ".join(removed) if removed else "nothing was pinned")
    else:
        reason = bpf.pinned_reason()
        if reason is None:
            env.info(f"pinned: {bpf.PIN_DIR}/{bpf.pin_name()}, usable by this user")
        else:
            env.info(f"not usable: {reason}")
            return ExitStatus.ERROR
    return ExitStatus.SUCCESS
