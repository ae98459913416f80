"""What every sub-command shares: the environment it writes to, exit statuses, usage
errors and the argument types. Kept apart from ``main`` so that the commands and the
entry point do not import each other."""

from __future__ import annotations

import argparse
import os
import re
import sys

from .. import stats as api
from ..errors import TamallocError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final, TextIO

PROG = "tamalloc"


class ExitStatus:
    """The exit statuses, plain ints (as pip's status codes): an IntEnum's class cost
    every command's start-up a fortieth of a bare Python's, for names only this
    package reads."""

    SUCCESS: Final = 0
    ERROR: Final = 1  # runtime: no such process, access denied, allocation failed
    USAGE: Final = 2  # bad arguments
    INTERRUPTED: Final = 130  # Ctrl-C where it is not the normal way out


class Environment:
    """The command's streams and terminal facts, swappable for tests.

    A plain class, not a dataclass: the dataclasses module would be most of the
    start-up of a ``tamalloc`` command that needs nothing else of it.
    """

    def __init__(
        self,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        stdin: TextIO | None = None,
        stdout_isatty: bool | None = None,
        no_color: bool | None = None,
        # Terminal width for tables; None: ask the terminal ($COLUMNS, then the tty).
        width: int | None = None,
    ) -> None:
        # The streams of the moment (None: sys's), as a test's swapped sys.stdout.
        self.stdout: TextIO = sys.stdout if stdout is None else stdout
        self.stderr: TextIO = sys.stderr if stderr is None else stderr
        self.stdin: TextIO = sys.stdin if stdin is None else stdin
        if stdout_isatty is None:
            isatty = getattr(self.stdout, "isatty", None)
            stdout_isatty = bool(isatty and isatty())
        self.stdout_isatty: bool | None = stdout_isatty
        self.no_color = bool(os.environ.get("NO_COLOR")) if no_color is None else no_color
        self.width = width

    def __repr__(self) -> str:
        return (
            f"Environment(stdout={self.stdout!r}, stderr={self.stderr!r},"
            f" stdin={self.stdin!r}, stdout_isatty={self.stdout_isatty!r},"
            f" no_color={self.no_color!r}, width={self.width!r})"
        )

    @property
    def interactive(self) -> bool:
        """Whether to draw tables, live views and progress bars (rich) or plain text."""
        return bool(self.stdout_isatty)

    @property
    def color(self) -> bool:
        return self.interactive and not self.no_color

    @property
    def encoding(self) -> str:
        """What stdout encodes to ("utf-8" for a stream that does not say, as rich
        assumes): what human-readable text is made to fit (see ``visible``)."""
        return _encoding_of(self.stdout)

    # One write a line: print() writes the text and its newline apart, so lines from the
    # exporter's request threads ran together. Messages may quote a process name or
    # the user's own text: made visible, so that an error stays one readable line.
    def error(self, message: str) -> None:
        self.stderr.write(f"{PROG}: error: {visible(message, _encoding_of(self.stderr))}\n")

    def warn(self, message: str) -> None:
        self.stderr.write(f"{PROG}: {visible(message, _encoding_of(self.stderr))}\n")

    def info(self, message: str) -> None:
        print(visible(message, self.encoding), file=self.stdout, flush=True)


def _encoding_of(stream: TextIO) -> str:
    return (getattr(stream, "encoding", None) or "utf-8").lower()


def visible(text: str, encoding: str = "utf-8") -> str:
    """``text`` as ``ps`` prints a process name: each character a terminal would act on
    or not show becomes "?" (controls such as ESC and newline, format characters such
    as U+202E that reverse what follows, line and paragraph separators, and U+FFFD,
    which the backends put for bytes that are not UTF-8), and so does each one the
    output ``encoding`` cannot represent. "?" rather than an escape like "\\x1b": one
    character for one keeps a name within its column, and ps, top and htop print "?",
    so it is what a reader knows; the exact name is in --json and --csv."""
    if text.isascii() and text.isprintable():
        return text  # the common case, and nothing to encode either
    if encoding.replace("_", "-").startswith("utf"):
        return "".join(c if c.isprintable() and c != "\ufffd" else "?" for c in text)
    return "".join(
        c if c.isprintable() and c != "\ufffd" and _encodes(c, encoding) else "?" for c in text
    )


def _encodes(char: str, encoding: str) -> bool:
    try:
        char.encode(encoding)
    except (UnicodeError, LookupError):
        return False
    return True


def tolerate_encoding(stream: TextIO) -> None:
    """Let ``stream`` write what its encoding cannot represent as backslash escapes
    instead of failing halfway through the output. Only for an encoding that is not
    UTF (PYTHONIOENCODING=ascii, or LC_ALL=C with PYTHONUTF8=0): a UTF stream is left
    as it is, and what the tables print is already fitted to the encoding (visible);
    this is the floor for what is not, such as a CSV field."""
    reconfigure = getattr(stream, "reconfigure", None)
    encoding = _encoding_of(stream)
    if reconfigure is None or encoding.replace("_", "-").startswith("utf"):
        return
    if getattr(stream, "errors", None) != "backslashreplace":
        reconfigure(errors="backslashreplace")


def cannot_encode(text: str, encoding: str) -> bool:
    """Whether ``text`` holds a character ``encoding`` cannot represent."""
    if text.isascii() or encoding.replace("_", "-").startswith("utf"):
        return False
    try:
        text.encode(encoding)
    except UnicodeError:
        return True
    return False


def report_hidden(env: Environment, backend: str | None, visible: int) -> None:
    """A line on stderr when processes are hidden from the caller: a list or a sum is
    never silently short. Not knowing is said too, and does not stop the command."""
    try:
        note = api.visibility(backend=backend).describe(visible)
    except (TamallocError, OSError) as err:
        note = f"cannot tell whether processes are hidden from you: {err}"
    if note:
        env.warn(note)


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


def positive_int(text: str) -> int:
    value = _int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value


def pid(text: str) -> int:
    """A process id: 1..kernel.pid_max."""
    try:
        return api.check_pid(_int(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def pid_or_zero(text: str) -> int:
    """A process id, or 0 for every process."""
    return 0 if _int(text) == 0 else pid(text)


# ASCII digits only: int() and float() also take Arabic-Indic digits, "1_000"
# and surrounding spaces, which a pid or a count written by a person never has, and
# Arabic-Indic 100 read as 100 would act on what the reader of the command line cannot see.
# Compiled when an option first needs one (by re's cache), not at every start-up.
_INT = r"[+-]?[0-9]+"
_FLOAT = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"


def ascii_int(text: str) -> int | None:
    """``text`` as an integer if it is one in ASCII digits (an optional sign), else None."""
    return int(text) if re.fullmatch(_INT, text) else None


def _int(text: str) -> int:
    value = ascii_int(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, not {text!r}")
    return value


def _float(text: str) -> float:
    # The pattern leaves out "nan", "inf" and "1_0", which float() would take.
    if not re.fullmatch(_FLOAT, text):
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    return float(text)


def positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0 or value == float("inf"):  # inf: "1e999"
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return value


# The shortest sampling interval: below it a watch redraws in a busy loop and a CPU
# sample spans no clock tick (USER_HZ is 100: 0.1 s is ten ticks a CPU), so every
# share reads 0. Refused rather than raised silently: the user asked for something else.
MIN_INTERVAL = 0.1


def interval(text: str) -> float:
    """Seconds between samples: at least MIN_INTERVAL."""
    value = positive_float(text)
    if value < MIN_INTERVAL:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_INTERVAL:g} seconds, not {text!r}")
    return value


def interval_or_zero(text: str) -> float:
    """Seconds to sample over, or 0 for no sample."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, not {text!r}")
    return 0.0 if value == 0 else interval(text)
