"""What every sub-command shares: the environment it writes to, exit statuses, usage
errors and the argument types. Kept apart from ``main`` so that the commands and the
entry point do not import each other."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TextIO

from .. import stats as api
from ..errors import TamallocError

PROG = "tamalloc"


class ExitStatus(IntEnum):
    SUCCESS = 0
    ERROR = 1  # runtime: no such process, access denied, allocation failed
    USAGE = 2  # bad arguments
    INTERRUPTED = 130  # Ctrl-C where it is not the normal way out


@dataclass
class Environment:
    """The command's streams and terminal facts, swappable for tests."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    stdout_isatty: bool | None = None
    no_color: bool = field(default_factory=lambda: bool(os.environ.get("NO_COLOR")))
    # Terminal width for tables; None: ask the terminal ($COLUMNS, then the tty).
    width: int | None = None

    def __post_init__(self) -> None:
        if self.stdout_isatty is None:
            isatty = getattr(self.stdout, "isatty", None)
            self.stdout_isatty = bool(isatty and isatty())

    @property
    def interactive(self) -> bool:
        """Whether to draw tables, live views and progress bars (rich) or plain text."""
        return bool(self.stdout_isatty)

    @property
    def color(self) -> bool:
        return self.interactive and not self.no_color

    # One write a line: print() writes the text and its newline apart, so lines from the
    # exporter's request threads ran together.
    def error(self, message: str) -> None:
        self.stderr.write(f"{PROG}: error: {message}\n")

    def warn(self, message: str) -> None:
        self.stderr.write(f"{PROG}: {message}\n")

    def info(self, message: str) -> None:
        print(message, file=self.stdout, flush=True)


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


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def non_negative_float(text: str) -> float:
    value = _float(text)
    if value < 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, not {text!r}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value:  # NaN
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return value
