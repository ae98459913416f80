"""The section-2 manual pages of the three calls (docs/man/): each renders without a
groff warning, has the sections a man page needs, and lists in ERRORS every errno the
series' kernel code returns for its call."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAN = ROOT / "docs" / "man"
PATCHES = ROOT / "kernel" / "patches"
PAGES = ("tamalloc.2", "get_mem_stats.2", "get_total_mem_stats.2")
SECTIONS = ("NAME", "SYNOPSIS", "DESCRIPTION", "RETURN VALUE", "ERRORS", "SEE ALSO")
ERRNO = re.compile(r"-(E[A-Z]+)\b")
# Returned by tamalloc_read_mem_stats() to its callers in the kernel, which turn it into
# a record with zero memory or skip the process: never seen by user space.
INTERNAL = {"ENOENT"}


def _added_source(path: str) -> str:
    """Every line the series adds to ``path``: a superset of the file's final code."""
    lines: list[str] = []
    for patch in sorted(PATCHES.glob("*.patch")):
        current = None
        for line in patch.read_text().splitlines():
            if line.startswith("+++ "):
                current = line[6:] if line.startswith("+++ b/") else None
            elif current == path and line.startswith("+"):
                lines.append(line[1:])
    assert lines, f"the series adds no {path}"
    return "\n".join(lines)


def _errors_section(page: str) -> set[str]:
    text = (MAN / page).read_text()
    body = text.split(".SH ERRORS", 1)[1].split(".SH ", 1)[0]
    # Each entry is a .TP tag line: ".B EINVAL" or ".BR EACCES \", \" EPERM".
    return set(
        re.findall(
            r"\b(E[A-Z]{2,})\b",
            "\n".join(
                line
                for i, line in enumerate(body.splitlines())
                if i and body.splitlines()[i - 1] == ".TP"
            ),
        )
    )


def _kernel_errnos(source: str) -> set[str]:
    return set(ERRNO.findall(source)) - INTERNAL


@pytest.mark.parametrize("page", PAGES)
def test_page_has_the_sections_of_a_man_page(page: str) -> None:
    text = (MAN / page).read_text()
    name = page.removesuffix(".2")
    assert re.search(rf"^\.TH {name.upper()} 2 \d{{4}}-\d\d-\d\d ", text, re.MULTILINE)
    headings = re.findall(r"^\.SH (.+)$", text, re.MULTILINE)
    assert [h for h in headings if h in SECTIONS] == list(SECTIONS)
    assert re.search(rf"^{name} \\- \S", text, re.MULTILINE)  # the NAME line whatis reads
    assert "ENOSYS" in _errors_section(page)  # 32-bit callers and kernels without it


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_warnings(page: str) -> None:
    groff = shutil.which("groff")
    assert groff, "groff missing: `make deps` installs groff-base"
    run = subprocess.run(
        [groff, "-man", "-Tutf8", "-ww", "-z", str(MAN / page)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (run.returncode, run.stderr) == (0, "")
    man = shutil.which("man")
    assert man, "man missing: `make deps` installs man-db"
    shown = subprocess.run(
        [man, "-l", str(MAN / page)],
        capture_output=True,
        text=True,
        env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert (shown.returncode, shown.stderr) == (0, "")
    plain = re.sub(".\b", "", shown.stdout)  # overstrike bold and underline
    assert "RETURN VALUE" in plain and "ERRORS" in plain
    assert max(map(len, plain.splitlines())) <= 80


def test_tamalloc_lists_every_errno_of_its_code() -> None:
    missing = _kernel_errnos(_added_source("mm/tamalloc.c")) - _errors_section("tamalloc.2")
    assert not missing


def test_get_mem_stats_lists_every_errno_of_its_code() -> None:
    source = _added_source("mm/tamalloc_stats.c")
    own = source.split("SYSCALL_DEFINE3(get_total_mem_stats", 1)[0]
    missing = _kernel_errnos(own) - _errors_section("get_mem_stats.2")
    assert not missing


def test_get_total_mem_stats_lists_every_errno_of_its_code() -> None:
    source = _added_source("mm/tamalloc_stats.c")
    own = source.split("SYSCALL_DEFINE3(get_total_mem_stats", 1)[1]
    # tamalloc_copy_record() is shared: its EFAULT is this call's too.
    copy = source.split("static int tamalloc_copy_record", 1)[1].split("\n}", 1)[0]
    missing = _kernel_errnos(own + copy) - _errors_section("get_total_mem_stats.2")
    assert not missing
