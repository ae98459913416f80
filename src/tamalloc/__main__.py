"""``python -m tamalloc``, and :func:`run`, the ``tamalloc`` console script.

:func:`run` is :func:`tamalloc.cli.main.main` with the garbage collector kept out of
the start-up. A command's start-up makes some ten thousand objects that live until it
exits: the modules, classes and functions of argparse and of the package. Collecting
them finds nothing, yet the collections while importing them and the full one at the
exit cost a quarter of a bare Python's start-up (bench/bench_startup.py). So none runs
while they are made, and then they are set apart (:func:`gc.freeze`): collections
while the command runs go through only what it makes, and the exit's through nothing.
``main`` alone (as the tests call it) leaves the collector as it is.
"""

from __future__ import annotations

import gc
import sys


def run() -> int:
    """Import and run the command line; returns the exit status."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        from .cli.main import main
    finally:
        if enabled:
            gc.enable()
    gc.freeze()
    status = main()
    gc.freeze()  # and what the command made: the exit's collection has nothing to walk
    return status


if __name__ == "__main__":
    sys.exit(run())
