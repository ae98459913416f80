"""Entry point of the ``tamalloc`` command: argument parsing, exit status, error lines.

The options of every command are in ``commands``; each command's code is in a module
of its own with a ``run``, imported once the command line is parsed, so that a command
loads its own module and not the others' (the exporter's server, the OOM model, rich).
"""

from __future__ import annotations

import argparse
import os
import sys

from .._version import __version__
from ..backends import (
    ENV_VAR,
    bpf_unavailable_reason,
    default_backend_name,
    get_backend,
    kernel_available,
)
from ..errors import TamallocError
from .commands import COMMANDS, add_backend_argument, add_commands
from .env import PROG, Environment, ExitStatus, UsageError, tolerate_encoding

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, NoReturn

    Run = Callable[[argparse.Namespace, Environment], int]

__all__ = ["Environment", "ExitStatus", "UsageError", "main"]

DEBUG_ENV = "TAMALLOC_DEBUG"


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, which asks for the terminal's width when it first formats.

    argparse makes a formatter at every add_argument, only to check the metavar, and
    its __init__ asks shutil.get_terminal_size(): importing shutil (and the zlib, bz2
    and lzma modules it loads) was ~2 ms of every command's start-up, for help that is
    printed only when asked. Until an attribute that __init__ sets is read, nothing is
    set: the metavar check reads none; whatever does is served after the real __init__.
    """

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        self._deferred = (prog, indent_increment, max_help_position, width)

    def __getattr__(self, name: str) -> Any:
        # Only for names not yet set, hence once: the real __init__ sets them all.
        deferred = self.__dict__.pop("_deferred", None)
        if deferred is None:
            raise AttributeError(name)
        super().__init__(*deferred)
        return getattr(self, name)


class _Parser(argparse.ArgumentParser):
    """Usage errors as UsageError (one line, exit status 2), and _HelpFormatter."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def version_text(backend: str | None = None) -> str:
    """``tamalloc 0.1.0 (backend: procfs; C scan: in use)``: what a bug report needs."""
    try:
        name = backend or default_backend_name()
    except ValueError as err:  # a bad $TAMALLOC_BACKEND: say so rather than fail
        return f"{PROG} {__version__} (backend: none, {err})"
    shown = name
    if name == "kernel" and not kernel_available():
        shown = "kernel, unavailable on this kernel"
    try:  # the import is the test: the extension may not be built
        from ..backends import _procscan  # noqa: F401
    except ImportError:
        scan = "not built, the pure-Python scan is used"
    else:
        scan = "in use" if name == "procfs" else f"built, unused by the {name} backend"
    return (
        f"{PROG} {__version__} (backend: {shown}; {_others_text(name)};"
        f" C scan tamalloc.backends._procscan: {scan})"
    )


def _others_text(name: str) -> str:
    """Why the backends other than ``name`` are not in use (probing bpf may load it)."""
    parts = []
    if name != "kernel":
        parts.append("kernel: " + ("present" if kernel_available() else "no tamalloc syscalls"))
    return "; ".join([*parts, _bpf_text(name)])


def _bpf_text(name: str) -> str:
    reason = bpf_unavailable_reason()
    if reason:
        return f"bpf: unavailable, {reason}"
    from ..backends.bpf import PIN_DIR, how_opened

    pinned = how_opened() == "pinned"
    if name == "bpf":
        return f"bpf: in use, pinned in {PIN_DIR}" if pinned else "bpf: in use, loaded"
    if name == "kernel":
        return "bpf: available, the syscalls come first"
    if pinned:
        return f"bpf: pinned in {PIN_DIR}, not used: {ENV_VAR} or --backend chose {name}"
    return (
        "bpf: available, not pinned: the exporter loads it, one-shot commands use"
        " it after `tamalloc bpf pin`"
    )


class _VersionAction(argparse.Action):
    """--version, computed when asked (it probes the kernel), after any --backend."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(version_text(getattr(namespace, "backend", None)))
        parser.exit()


def _build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``only`` the top level and that command's sub-parser."""
    parser = _Parser(
        prog=PROG,
        description="Lazily-zeroed buffers and per-process/system memory statistics.",
    )
    add_backend_argument(parser)
    parser.add_argument(
        "--version",
        action=_VersionAction,
        nargs=0,
        help="print the version, the backend in use and whether the C scan is, then exit",
    )
    # prog given: argparse would format the usage to find it (the same "tamalloc").
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, prog=PROG)
    add_commands(commands, only)
    return parser


def _parse(argv: Sequence[str] | None, env: Environment) -> argparse.Namespace:
    words = list(sys.argv[1:] if argv is None else argv)
    # A command line that starts with a command's name needs that sub-parser alone:
    # the other six (each an ArgumentParser, its options and argparse's translations
    # looked up) were a tenth of the start-up. Anything else (--help, --backend first,
    # a typo) gets them all, for the list of commands or the "choose from" error.
    parser = _build_parser(words[0] if words and words[0] in COMMANDS else None)
    # argparse prints --help/--version to sys.stdout; route it to the environment's
    # (contextlib.redirect_stdout, without importing contextlib for it at every start).
    saved, sys.stdout = sys.stdout, env.stdout
    try:
        args, extra = parser.parse_known_args(words)
    finally:
        sys.stdout = saved
    if extra:
        # argparse reports these from the top-level parser, whose --help does not
        # list the sub-command's options: point to the one that does.
        command = getattr(args, "command", None)
        first = words.index(extra[0]) if extra[0] in words else len(words)
        after = command in words and words.index(command) < first
        prog = f"{PROG} {command}" if after else PROG
        raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see '{prog} --help')")
    return args


def _check_backend(args: argparse.Namespace) -> None:
    """Resolve the backend before running so a bad choice is one clean error."""
    try:
        get_backend(getattr(args, "backend", None))
    except ValueError as err:  # unknown name in $TAMALLOC_BACKEND
        raise UsageError(str(err)) from err


def _long_running_backend() -> str:
    try:
        return default_backend_name(long_running=True)
    except ValueError as err:  # unknown name in $TAMALLOC_BACKEND
        raise UsageError(str(err)) from err


def _check_backend_name() -> None:
    """For commands that use no backend: a bad $TAMALLOC_BACKEND is still an error, as
    it is for those that do (--backend is checked by argparse)."""
    try:
        default_backend_name()
    except ValueError as err:
        raise UsageError(str(err)) from err


def main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    """Run the command; returns the exit status (the console script exits with it)."""
    env = env or Environment()
    # Before anything is written: a stream that cannot encode a character must not
    # end the command halfway through its output (UnicodeEncodeError after part of a
    # CSV).
    tolerate_encoding(env.stdout)
    tolerate_encoding(env.stderr)
    try:
        args = _parse(argv, env)
    except UsageError as err:
        env.error(str(err))
        return ExitStatus.USAGE
    except SystemExit as exit_:  # --help, --version
        return int(exit_.code or 0)
    return _run(args, env)


def _command(name: str) -> Run:
    """The ``run`` of command ``name``: its module is imported here, the chosen one only."""
    if name == "stats":
        from .stats import run
    elif name == "total":
        from .total import run
    elif name == "system":
        from .system import run
    elif name == "oom":
        from .oom import run
    elif name == "watch":
        from .watch import run
    elif name == "demo":
        from .demo import run
    elif name == "exporter":
        from .exporter import run
    elif name == "bpf":
        from .bpf import run
    else:  # argparse admits only the commands above
        raise AssertionError(f"unknown command {name!r}")
    return run


def _run(args: argparse.Namespace, env: Environment) -> int:
    try:
        if getattr(args, "long_running", False) and getattr(args, "backend", None) is None:
            # Resolved here and passed on as if given: the process-wide default stays
            # the one-shot commands' (a library caller's, a test's).
            args.backend = _long_running_backend()
        if args.needs_backend:
            _check_backend(args)
        else:
            _check_backend_name()
        return int(_command(args.command)(args, env))
    except UsageError as err:
        env.error(str(err))
        return ExitStatus.USAGE
    except KeyboardInterrupt:
        env.error("interrupted")
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``| head``): not an error, but stop writing to it.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return ExitStatus.SUCCESS
    except (TamallocError, MemoryError) as err:
        env.error(str(err) or type(err).__name__)
        return ExitStatus.ERROR
    except OSError as err:
        where = f": {err.filename}" if err.filename else ""
        env.error(f"{err.strerror or err}{where}")
        return ExitStatus.ERROR
    except Exception as err:
        if os.environ.get(DEBUG_ENV):
            raise
        env.error(f"internal error: {type(err).__name__}: {err} (set {DEBUG_ENV}=1 for details)")
        return ExitStatus.ERROR


if __name__ == "__main__":
    sys.exit(main())
