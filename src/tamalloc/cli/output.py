"""Shared rendering: plain text when piped, rich tables and colour on a terminal."""

from __future__ import annotations

import argparse

from ..sizes import format_kb
from .env import Environment, cannot_encode, visible

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, NamedTuple

    from rich.console import Console
else:  # the same class without importing typing: see tamalloc._records
    from .._records import NamedTuple

UNITS = ("auto", "kb", "mb")
_UNIT_NAMES = {"auto": "", "kb": "kB", "mb": "MiB"}
_UNIT_SUFFIXES = {"auto": "", "kb": " kB", "mb": " MiB"}

# What a person reads: "committed" is resident memory (VmRSS), not the kernel's
# Committed_AS, and "reserved" is the virtual size (VmSize); the labels say so.
RESERVED = "reserved (VSZ)"
COMMITTED = "committed (RSS)"


def add_units_argument(parser: argparse.ArgumentParser, *, csv: bool) -> None:
    """--units; ``csv``: whether the command has --csv, which the help then covers."""
    parser.add_argument(
        "--units",
        choices=UNITS,
        default="auto",
        help="sizes: auto (B, KiB, MiB, ...), kb or mb, plain numbers without separators"
        + ("; --csv: kb (the default) or mb columns" if csv else ""),
    )


def size_header(name: str, units: str, tag: str | None = None) -> str:
    """A size column's header: "RESERVED (VSZ, kB)", "SWAP (MiB)", "SWAP"."""
    inside = ", ".join(filter(None, (tag, _UNIT_NAMES[units])))
    return f"{name} ({inside})" if inside else name


def format_pct(value: float) -> str:
    """Percentages for people and CSV: two decimals."""
    return f"{value:.2f}"


def format_size(kb: int, units: str) -> str:
    """A kB figure standing alone, with its unit ("12345 kB"); table columns carry
    the unit in the header instead (size_header)."""
    return format_kb(kb, units) + _UNIT_SUFFIXES[units]


class Column(NamedTuple):
    header: str
    numeric: bool = True  # right-aligned
    short: str | None = None  # the header when the full one does not fit the width


def console(env: Environment) -> Console:
    from rich.console import Console  # rich: ~20 ms, paid only on a terminal

    return Console(
        file=env.stdout,
        width=env.width,
        force_terminal=env.interactive,
        no_color=not env.color,
        color_system="auto" if env.color else None,
        highlight=False,
        soft_wrap=False,
    )


def write_json(env: Environment, data: Any) -> None:
    import json  # ~1 ms of the start-up of every command, for --json only

    json.dump(data, env.stdout, indent=2)
    env.stdout.write("\n")


def render_table(
    env: Environment,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    footer: Sequence[str] | None = None,
    styles: Sequence[str | None] | None = None,
) -> None:
    """An aligned table: plain text when piped; on a terminal, styled rows (rich)
    fitted to its width by shortening the text columns. Every cell and the title are
    shown as ``visible`` makes them: a process name is attacker-chosen, and an escape
    or newline in it must neither reach the terminal nor split its row."""
    encoding = env.encoding

    def show(line: Sequence[str]) -> list[str]:
        # visible()'s own first test inlined: a call a cell was a tenth of the table.
        return [
            cell if cell.isascii() and cell.isprintable() else visible(cell, encoding)
            for cell in line
        ]

    rows = [show(row) for row in rows]
    footer = show(footer) if footer is not None else None
    title = visible(title, encoding) if title else title
    # "…" marks a cut cell and "─" the rule on a terminal; where the output cannot
    # encode them (PYTHONIOENCODING=ascii, LC_ALL=C), ASCII stand-ins of one column.
    ellipsis = "~" if cannot_encode("…", encoding) else "…"
    if not env.interactive:
        # Piped: full width (a file or another program has no columns), unless forced.
        lines = [
            line
            for line, _ in _layout(columns, rows, footer, max_width=env.width, ellipsis=ellipsis)
        ]
        if title and env.width is not None:
            title = title[: env.width]
        env.stdout.write("\n".join([title, *lines] if title else lines) + "\n")
        return
    # rich's Table lays out every cell and takes about a second for a thousand
    # processes; the layout is done here and rich only adds the styles (imported here:
    # see console).
    from rich.text import Text

    out = console(env)
    text = Text(no_wrap=True, overflow="crop")
    if title:
        text.append(title[: out.width] + "\n", style="italic")
    row_styles = iter(styles or ())
    rule = "-" if cannot_encode("─", encoding) else "─"
    for line, kind in _layout(
        columns, rows, footer, max_width=out.width, rule=rule, ellipsis=ellipsis
    ):
        style = next(row_styles, None) if kind == "row" else _KIND_STYLES[kind]
        text.append(line + "\n", style=style or "")
    out.print(text, end="")


_KIND_STYLES = {"header": "bold", "rule": "dim", "footer": "bold"}


def _layout(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    footer: Sequence[str] | None,
    *,
    max_width: int | None,
    rule: str = "-",  # ASCII when piped: the reader's encoding is unknown
    ellipsis: str = "…",
) -> list[tuple[str, str]]:
    """Lines of the table and their kind (header, row, rule, footer), each at most
    ``max_width`` wide: a wrapped row would put values under the wrong headers."""
    gap = 2
    body = [*rows, *([footer] if footer is not None else [])]
    headers = [c.header for c in columns]
    widths = _widths(headers, body)
    shown = len(columns)
    if max_width is not None:
        # In turn, until the table fits: short headers, one at a time from the right
        # (a header says the same in fewer letters, a cut name says less); text
        # columns (names) give up what is missing; then the rightmost columns go (cut
        # numbers would mislead).
        for i in reversed(range(len(columns))):
            if _total(widths, gap) <= max_width:
                break
            short = columns[i].short
            if short is not None:
                headers[i] = short
                widths[i] = max(len(line[i]) for line in [headers, *body])
        widths = _shrink_text(columns, headers, widths, max_width, gap)
        while shown > 1 and _total(widths[:shown], gap) > max_width:
            shown -= 1

    # Once a row: the columns' width and alignment looked up before, not per cell.
    aligned = [
        (width, str.rjust if column.numeric else str.ljust)
        for width, column in zip(widths, columns[:shown], strict=False)
    ]
    separator = " " * gap

    def fmt(line: Sequence[str]) -> str:
        text = separator.join(
            [
                align(cell if len(cell) <= width else cell[: width - 1] + ellipsis, width)
                for cell, (width, align) in zip(line, aligned, strict=False)
            ]
        ).rstrip()
        return text if max_width is None else text[:max_width]

    out = [(fmt(headers), "header")]
    out.extend((fmt(row), "row") for row in rows)
    if footer is not None:
        out.append((fmt([rule * w for w in widths]), "rule"))
        out.append((fmt(footer), "footer"))
    return out


def _widths(headers: Sequence[str], body: Sequence[Sequence[str]]) -> list[int]:
    return [max(map(len, column)) for column in zip(headers, *body, strict=True)]


def _total(widths: Sequence[int], gap: int) -> int:
    return sum(widths) + gap * (len(widths) - 1)


def _shrink_text(
    columns: Sequence[Column], headers: Sequence[str], widths: list[int], max_width: int, gap: int
) -> list[int]:
    widths = list(widths)
    excess = _total(widths, gap) - max_width
    # From the right: the leftmost text column is usually what names the row.
    for i in reversed(range(len(columns))):
        if excess > 0 and not columns[i].numeric:
            cut = min(excess, widths[i] - max(4, len(headers[i])))
            if cut > 0:
                widths[i] -= cut
                excess -= cut
    return widths


def render_pairs(env: Environment, pairs: Sequence[tuple[str, str]], *, title: str) -> None:
    """A two-column "field  value" table."""
    render_table(
        env,
        (Column("FIELD", numeric=False), Column("VALUE")),
        [list(p) for p in pairs],
        title=title,
    )
