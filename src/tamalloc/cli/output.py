"""Shared rendering: plain text when piped, rich tables and colour on a terminal."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..sizes import format_kb
from .env import Environment

if TYPE_CHECKING:
    from rich.console import Console

UNITS = ("auto", "kb", "mb")
UNIT_LABELS = {"auto": "", "kb": " (kB)", "mb": " (MiB)"}
_UNIT_SUFFIXES = {"auto": "", "kb": " kB", "mb": " MiB"}


def add_units_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--units", choices=UNITS, default="auto", help="size units (default auto)")


def format_size(kb: int, units: str) -> str:
    """A kB figure standing alone, with its unit ("12,345 kB"); table columns carry
    the unit in the header instead (UNIT_LABELS)."""
    return format_kb(kb, units) + _UNIT_SUFFIXES[units]


@dataclass(frozen=True)
class Column:
    header: str
    numeric: bool = True  # right-aligned


def console(env: Environment) -> Console:
    from rich.console import Console

    return Console(
        file=env.stdout,
        force_terminal=env.interactive,
        no_color=not env.color,
        color_system="auto" if env.color else None,
        highlight=False,
        soft_wrap=False,
    )


def write_json(env: Environment, data: Any) -> None:
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
    fitted to its width by shortening the text columns."""
    if not env.interactive:
        lines = [line for line, _ in _layout(columns, rows, footer, max_width=None)]
        env.stdout.write("\n".join([title, *lines] if title else lines) + "\n")
        return
    # rich's Table lays out every cell and takes about a second for a thousand
    # processes; the layout is done here and rich only adds the styles.
    from rich.text import Text

    out = console(env)
    text = Text(no_wrap=True, overflow="crop")
    if title:
        text.append(title + "\n", style="italic")
    row_styles = iter(styles or ())
    for line, kind in _layout(columns, rows, footer, max_width=out.width, rule="─"):
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
) -> list[tuple[str, str]]:
    """Lines of the table and their kind (header, row, rule, footer)."""
    cells = [[c.header for c in columns], *rows, *([footer] if footer is not None else [])]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    gap = 2
    if max_width is not None:
        # Numbers keep their width; text columns (names) give up what is missing.
        excess = sum(widths) + gap * (len(columns) - 1) - max_width
        for i, column in enumerate(columns):
            if excess > 0 and not column.numeric:
                cut = min(excess, widths[i] - max(4, len(column.header)))
                if cut > 0:
                    widths[i] -= cut
                    excess -= cut

    def fmt(line: Sequence[str]) -> str:
        parts = []
        for cell, width, column in zip(line, widths, columns, strict=True):
            if len(cell) > width:
                cell = cell[: width - 1] + "…"
            parts.append(cell.rjust(width) if column.numeric else cell.ljust(width))
        return (" " * gap).join(parts).rstrip()

    out = [(fmt(cells[0]), "header")]
    out.extend((fmt(row), "row") for row in rows)
    if footer is not None:
        out.append(((" " * gap).join(rule * w for w in widths), "rule"))
        out.append((fmt(footer), "footer"))
    return out


def render_pairs(env: Environment, pairs: Sequence[tuple[str, str]], *, title: str) -> None:
    """A two-column "field  value" table."""
    render_table(
        env,
        (Column("FIELD", numeric=False), Column("VALUE")),
        [list(p) for p in pairs],
        title=title,
    )
