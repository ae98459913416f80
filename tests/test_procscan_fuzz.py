"""Hostile callers of the C scan's entry points: each case runs in a new interpreter,
which must neither crash (die by a signal) nor hang, and must end with the outcome
the case expects (a result, or a clean Python exception)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from _support import subprocess_env

try:
    from tamalloc.backends import _procscan  # noqa: F401
except ImportError:
    pytest.skip("the C scanner was not built: `make venv` builds it", allow_module_level=True)

PRELUDE = """
import errno, os, resource, sys, threading
from tamalloc.backends import _procscan
from tamalloc.errors import SKIPPED_IN_SCANS
from tamalloc.models import MemStats
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 16384), hard))
ME = os.getpid()
SKIP = SKIPPED_IN_SCANS

def scan(*args):
    return _procscan.scan(*args)

def outcome(call):
    try:
        result = call()
    except Exception as err:
        return type(err).__name__
    return result

def me_in(result):
    mine = [s for s in result if s.pid == ME]
    return len(mine) == 1 and mine[0].name == open("/proc/self/comm").read().strip()
"""

# name: (code whose last line printed is the outcome, the outcome expected)
CASES: dict[str, tuple[str, str]] = {
    # The list a pid's __index__ empties: the old code read its freed storage.
    "list emptied by __index__": (
        """
class Evil:
    def __index__(self):
        pids.clear()
        return ME
pids = [Evil()] + [0] * (1 << 17)
result = scan(pids, MemStats, SKIP, 1)
print(len(result), me_in(result))
""",
        "1 True",
    ),
    "list grown by __index__": (
        """
class Evil:
    def __index__(self):
        pids.extend([ME] * 100000)  # moves the storage
        return 0
pids = [Evil(), ME]
print(len(scan(pids, MemStats, SKIP, 1)))
""",
        "1",
    ),
    "list items replaced by __index__": (
        """
class Evil:
    def __index__(self):
        for i in range(len(pids)):
            pids[i] = "not a pid"
        return ME
pids = [Evil()] + [Evil() for _ in range(1000)]
print(len(scan(pids, MemStats, SKIP, 2)))
""",
        "1001",
    ),
    "__index__ raises": (
        """
class Evil:
    def __index__(self):
        raise RuntimeError("no")
print(outcome(lambda: scan([ME, Evil()], MemStats, SKIP)))
""",
        "RuntimeError",
    ),
    "__index__ returns a huge int": (
        """
class Evil:
    def __index__(self):
        return 1 << 200
print(outcome(lambda: scan([Evil()], MemStats, SKIP)))
""",
        "OverflowError",
    ),
    "__index__ returns a non-int": (
        """
class Evil:
    def __index__(self):
        return "1"
print(outcome(lambda: scan([Evil()], MemStats, SKIP)))
""",
        "TypeError",
    ),
    "negative pid": ("print(outcome(lambda: scan([ME, -1], MemStats, SKIP)))", "ValueError"),
    "pid beyond long": ("print(outcome(lambda: scan([1 << 63], MemStats, SKIP)))", "OverflowError"),
    "pid beyond pid_max": ("print(len(scan([0, 1 << 62, ME], MemStats, SKIP)))", "1"),
    "pid as a float": ("print(outcome(lambda: scan([1.0], MemStats, SKIP)))", "TypeError"),
    "pids a string": ("print(outcome(lambda: scan('1', MemStats, SKIP)))", "TypeError"),
    "pids a generator": ("print(me_in(scan((p for p in [0, ME]), MemStats, SKIP)))", "True"),
    "pids a generator that raises": (
        """
def pids():
    yield ME
    raise KeyError("no")
print(outcome(lambda: scan(pids(), MemStats, SKIP)))
""",
        "KeyError",
    ),
    "pids huge": (
        "print(len(scan(range(10 ** 5, 10 ** 5 + 200000), MemStats, SKIP)) >= 0)",
        "True",
    ),
    "skip errnos a generator that raises": (
        """
def errnos():
    yield errno.ENOENT
    raise KeyError("no")
print(outcome(lambda: scan([ME], MemStats, errnos())))
""",
        "KeyError",
    ),
    # The old loop went on calling PyIter_Next with the error set.
    "skip errnos: a bad one then good ones": (
        "print(outcome(lambda: scan([ME], MemStats, ['x', errno.ENOENT, errno.ESRCH])))",
        "TypeError",
    ),
    # The old code kept the first 16 and dropped the rest without a word.
    "skip errnos: more than 16": (
        "print(outcome(lambda: scan([ME], MemStats, range(1, 40))))",
        "ValueError",
    ),
    "skip errnos: the same one many times": (
        "print(me_in(scan([0, ME], MemStats, [errno.ENOENT] * 100)))",
        "True",
    ),
    # The old code truncated 2**32 + ENOENT to ENOENT.
    "skip errnos: beyond int": (
        "print(outcome(lambda: scan([0], MemStats, [(1 << 32) + errno.ENOENT])))",
        "ValueError",
    ),
    "skip errnos: negative": ("print(outcome(lambda: scan([0], MemStats, [-2])))", "ValueError"),
    "skip errnos: huge": (
        "print(outcome(lambda: scan([0], MemStats, [1 << 80])))",
        "OverflowError",
    ),
    "skip errnos: not iterable": ("print(outcome(lambda: scan([0], MemStats, 5)))", "TypeError"),
    "cls not a type": ("print(outcome(lambda: scan([ME], 5, SKIP)))", "TypeError"),
    "cls not a tuple": ("print(outcome(lambda: scan([ME], list, SKIP)))", "TypeError"),
    "cls a bare tuple": ("print(scan([ME], tuple, SKIP)[0][0] == ME)", "True"),
    "cls a tuple subclass with a metaclass": (
        """
class Meta(type):
    pass
class T(tuple, metaclass=Meta):
    def __del__(self):
        scan(None, MemStats, SKIP, 0, True)  # re-enters while the result is built
result = scan([ME] * 50, T, SKIP)
print(len(result), result[0][0] == ME)
del result
""",
        "50 True",
    ),
    "threads negative": ("print(me_in(scan([ME], MemStats, SKIP, -5)))", "True"),
    "threads huge": ("print(me_in(scan([ME], MemStats, SKIP, 1 << 20)))", "True"),
    "threads beyond int": (
        "print(outcome(lambda: scan([ME], MemStats, SKIP, 1 << 40)))",
        "OverflowError",
    ),
    "hold whose __bool__ raises": (
        """
class Evil:
    def __bool__(self):
        raise RuntimeError("no")
print(outcome(lambda: scan(None, MemStats, SKIP, 0, Evil())))
""",
        "RuntimeError",
    ),
    "max_bytes negative": (
        "print(outcome(lambda: scan(None, MemStats, SKIP, 0, True, -1)))",
        "ValueError",
    ),
    "max_bytes beyond ssize_t": (
        "print(outcome(lambda: scan(None, MemStats, SKIP, 0, True, 1 << 70)))",
        "OverflowError",
    ),
    "max_bytes huge": (
        """
scan(None, MemStats, SKIP, 0, True, 1 << 62)
print(me_in(scan(None, MemStats, SKIP, 0, True, 1 << 62)), len(_procscan.kept_fds()) > 0)
""",
        "True True",
    ),
    "too many arguments": (
        "print(outcome(lambda: scan(None, MemStats, SKIP, 0, True, 1, 2)))",
        "TypeError",
    ),
    "no-argument functions given arguments": (
        """
print([outcome(lambda: f(1)) for f in (_procscan.release, _procscan.kept_fds,
                                       _procscan.kept_bytes, _procscan.forget_in_child)])
""",
        "['TypeError', 'TypeError', 'TypeError', 'TypeError']",
    ),
    # Re-entrancy: the scan called from inside its own argument conversion, with
    # the kept files released or closed behind its back.
    "__index__ scans, releases and closes kept fds": (
        """
scan(None, MemStats, SKIP, 0, True)
class Evil:
    def __index__(self):
        scan(None, MemStats, SKIP, 0, True)
        for fd in _procscan.kept_fds():
            os.close(fd)
        _procscan.release()
        scan(None, MemStats, SKIP, 0, True)
        return ME
print(me_in(scan([Evil(), 0], MemStats, SKIP)))
""",
        "True",
    ),
    "__bool__ of hold closes the kept fds it will take": (
        """
scan(None, MemStats, SKIP, 0, True)
class Evil:
    def __bool__(self):
        scan(None, MemStats, SKIP, 0, True)
        for fd in _procscan.kept_fds():
            os.close(fd)
        return True
print(me_in(scan(None, MemStats, SKIP, 0, Evil())), me_in(scan(None, MemStats, SKIP, 0, True)))
""",
        "True True",
    ),
    "skip errno whose __index__ scans with hold": (
        """
class Evil:
    def __index__(self):
        scan(None, MemStats, SKIP, 0, True)
        return errno.ENOENT
print(me_in(scan(None, MemStats, [Evil(), errno.ESRCH, errno.EACCES], 0, True)))
""",
        "True",
    ),
    # Threads: the kept fds closed, dup2'd over and released by another thread
    # while scans run; forget_in_child called in the parent mid-scan.
    "kept fds closed and reused by another thread mid-scan": (
        """
stop = threading.Event()
def vandal():
    while not stop.is_set():
        for fd in _procscan.kept_fds():
            try:
                os.dup2(0, fd)
            except OSError:
                pass
        _procscan.release()
        _procscan.forget_in_child()
threads = [threading.Thread(target=vandal) for _ in range(2)]
for t in threads:
    t.start()
try:
    ok = all(me_in(scan(None, MemStats, SKIP, n % 5, True)) for n in range(300))
finally:  # an exception must not leave the vandals running (the process would hang)
    stop.set()
    for t in threads:
        t.join()
print(ok)
""",
        "True",
    ),
    "many threads scanning with hold at once": (
        """
results = []
def scanner(n):
    results.append(all(me_in(scan(None, MemStats, SKIP, n, True, 1 << (10 + 2 * n)))
                       for _ in range(50)))
threads = [threading.Thread(target=scanner, args=(n,)) for n in range(5)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(results)
""",
        "[True, True, True, True, True]",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_callers_get_an_exception_or_a_result_never_a_crash(case: str) -> None:
    code, expected = CASES[case]
    run = subprocess.run(
        [sys.executable, "-c", PRELUDE + code],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert run.returncode >= 0, f"killed by signal {-run.returncode}: {run.stderr[-2000:]}"
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines()[-1] == expected
