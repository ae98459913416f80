"""Parsing and formatting of byte sizes ("10M", "1GiB", "512k")."""

from __future__ import annotations

import functools
import re

# Suffixes are binary (powers of 1024) whether or not they carry the "i": memory is
# sized in pages, and the original demo called 10 * 1024 * 1024 bytes "10 MB".
_MULTIPLIERS = {
    "": 1,
    "k": 1 << 10,
    "m": 1 << 20,
    "g": 1 << 30,
    "t": 1 << 40,
    "p": 1 << 50,
    "e": 1 << 60,
}
# Compiled at the first parse (by re's cache), not at every start-up (0.3 ms).
_SIZE = r"\s*(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[kmgtpe]?)(?:(?<=[kmgtpe])i)?b?\s*"
# ASCII: \d and \s would also take the digits and spaces of other scripts.
_SIZE_FLAGS = re.IGNORECASE | re.ASCII
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
_SCALED_UNITS = _UNITS[1:-1]


def parse_size(size: int | str) -> int:
    """Return ``size`` in bytes; strings take an optional K/M/G/T/P/E suffix.

    "512", "512B", "4k", "10M", "10MB", "1GiB" and "1.5G" are accepted. Raises
    ValueError for anything unparsable, not a whole number of bytes, or ≤ 0.
    """
    if isinstance(size, bool):  # bool is an int subclass; alloc(True) is a bug
        raise ValueError(f"invalid size: {size!r}")
    if isinstance(size, int):
        if size <= 0:
            raise ValueError(f"invalid size: {size!r} (must be greater than 0)")
        return size
    if isinstance(size, str):
        return _parse_text(size)
    raise ValueError(f"invalid size: {size!r} (expected int or str)")


@functools.lru_cache(maxsize=256)  # alloc("1GiB") in a loop should not re-parse
def _parse_text(size: str) -> int:
    match = re.fullmatch(_SIZE, size, _SIZE_FLAGS)
    if match is None:
        raise ValueError(f"invalid size: {size!r} (expected e.g. 4096, 512k, 10M, 1GiB)")
    number, multiplier = match["num"], _MULTIPLIERS[match["unit"].lower()]
    # "1.25" is 125 hundredths: exact in integers (fractions and decimal cost ~1.5 ms
    # of start-up to import).
    whole, _, decimals = number.partition(".")
    scale: int = 10 ** len(decimals)
    scaled = int(whole + decimals) * multiplier
    if scaled % scale:
        raise ValueError(f"invalid size: {size!r} is not a whole number of bytes")
    value = scaled // scale
    if value <= 0:
        raise ValueError(f"invalid size: {size!r} (must be greater than 0)")
    return value


def format_bytes(n: float, precision: int = 1) -> str:
    """``1536`` → ``"1.5 KiB"``; plain bytes below 1 KiB."""
    # Three a row of `tamalloc stats`: written for speed (half the time of a loop
    # over every unit with abs() and an f-string's nested format spec, which "%.*f"
    # spares: the same text).
    value = float(n)
    if -1024 < value < 1024:
        return f"{int(value)} B"
    for unit in _SCALED_UNITS:
        value /= 1024
        if -1024 < value < 1024:
            return "%.*f %s" % (precision, value, unit)  # noqa: UP031 (see above)
    return "%.*f %s" % (precision, value / 1024, _UNITS[-1])  # noqa: UP031


def format_kb(kb: float, units: str = "auto", precision: int = 1) -> str:
    """Format a kB count for display: ``units`` is "kb", "mb" or "auto".

    kb and mb are plain numbers, without thousands separators: ``sort -n`` and awk
    read them, and a separator would also depend on the locale.
    """
    if units == "kb":
        return str(int(kb))
    if units == "mb":
        return f"{kb / 1024:.{precision}f}"
    if units == "auto":
        return format_bytes(kb * 1024, precision)
    raise ValueError(f"unknown units: {units!r}")
