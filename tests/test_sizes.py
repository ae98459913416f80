"""Size strings: parse_size and the formatters."""

from __future__ import annotations

import pytest

from tamalloc import format_bytes, parse_size
from tamalloc.sizes import format_kb


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (4096, 4096),
        ("4096", 4096),
        ("100B", 100),
        ("512k", 512 << 10),
        ("512K", 512 << 10),
        ("10M", 10 << 20),
        ("10MB", 10 << 20),
        ("10MiB", 10 << 20),
        ("1GiB", 1 << 30),
        ("1 GiB", 1 << 30),
        ("1g", 1 << 30),
        ("1.5G", 3 << 29),
        ("0.5k", 512),
        ("2T", 2 << 40),
        (" 3M ", 3 << 20),
    ],
)
def test_parse_size_accepts(text: int | str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        "10X",
        "M",
        "-1",
        "-1M",
        "0",
        "0M",
        0,
        -4096,
        "1.5",
        "0.1k",
        "10 M B",
        "1iB",
        True,
        1.5,
        None,
        b"10M",
        # Digits and spaces of other scripts: Arabic-Indic 100, 10 in full-width digits,
        # an em space (issue 16, item 11)
        "\u0661\u0660\u0660",
        "\uff11\uff10M",
        "\u2003 10M",
        "1\u0665G",
    ],
)
def test_parse_size_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (10 << 20, "10.0 MiB"),
        (1 << 30, "1.0 GiB"),
    ],
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


def test_format_kb_units() -> None:
    assert format_kb(2048, "kb") == "2048"
    assert format_kb(123456789, "kb") == "123456789"  # no separator: sort -n, awk
    assert format_kb(42916 * 1024, "mb") == "42916.0"
    assert format_kb(2048, "mb") == "2.0"
    assert format_kb(2048, "auto") == "2.0 MiB"
    with pytest.raises(ValueError, match="unknown units"):
        format_kb(1, "gb")
