"""tamalloc.cgroupfs's counters (memory.events, PSI) and names, on fake cgroup v2 trees
in temporary directories (this host's cgroup v2 mount has no memory controller): every
number a lie can put there is skipped or saturated, never an exception."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tamalloc import cgroupfs, oom_inputs
from tamalloc.cgroupfs import (
    COUNTER_MAX,
    cgroup_directory,
    parse_counter,
    parse_memory_events,
    parse_pressure,
    read_memory_events,
    read_pressure,
    walk_cgroups,
)

EVENTS = "low 0\nhigh 12\nmax 3\noom 2\noom_kill 1\noom_group_kill 0\n"
PSI = (
    "some avg10=0.00 avg60=0.12 avg300=0.40 total=1234567\n"
    "full avg10=0.00 avg60=0.00 avg300=0.10 total=89\n"
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("12", 12),
        (str(COUNTER_MAX), COUNTER_MAX),
        (str(COUNTER_MAX + 1), COUNTER_MAX),  # saturated
        ("9" * 5000, COUNTER_MAX),  # saturated without a 5000-digit int
        ("-1", None),  # a counter is never negative
        ("+1", None),
        ("1_000", None),
        (" 1", None),
        ("1.5", None),
        ("١٢", None),  # Arabic-Indic digits: int() reads them, the kernel never writes them
        ("", None),
        ("max", None),
    ],
)
def test_a_counter_is_plain_decimal_saturated(text: str, value: int | None) -> None:
    assert parse_counter(text) == value


def test_memory_events_are_read() -> None:
    assert parse_memory_events(EVENTS) == {
        "low": 0,
        "high": 12,
        "max": 3,
        "oom": 2,
        "oom_kill": 1,
        "oom_group_kill": 0,
    }


def test_memory_events_that_lie_are_skipped_or_saturated() -> None:
    text = (
        "high 99999999999999999999999999\n"  # saturated
        "max -4\n"  # negative: skipped
        "oom x\n"  # garbage: skipped
        "oom_kill 5\n"
        "oom_kill 7\n"  # repeated: the first stays
        "made_up_event 1\n"  # no label value from the file
        'oom_group_kill" 1\n'
        "\x00\x01 garbage line with words\n"
        "low\n"
    )
    assert parse_memory_events(text) == {"high": COUNTER_MAX, "oom_kill": 5}


def test_pressure_totals_are_read() -> None:
    assert parse_pressure(PSI) == {"some": 1234567, "full": 89}
    # The system's cpu.pressure had no "full" line before Linux 5.13: whatever is there.
    assert parse_pressure(PSI.splitlines()[0]) == {"some": 1234567}


@pytest.mark.parametrize(
    ("text", "totals"),
    [
        ("some avg10=0.00 total=-5\nfull total=7\n", {"full": 7}),
        ("some total=1e9\nfull total=99999999999999999999999\n", {"full": COUNTER_MAX}),
        ("some total=3\nsome total=4\n", {"some": 3}),
        ("bogus total=3\n\n  \nfull\n", {}),
        ("some avg10=0.00 totally=5 total=6\n", {"some": 6}),
        ("", {}),
    ],
)
def test_pressure_that_lies_is_skipped_or_saturated(text: str, totals: dict[str, int]) -> None:
    assert parse_pressure(text) == totals


def test_files_are_read_from_a_cgroup_directory(tmp_path: Path) -> None:
    (tmp_path / "memory.events").write_text(EVENTS)
    (tmp_path / "memory.pressure").write_text(PSI)
    assert read_memory_events(str(tmp_path)) == parse_memory_events(EVENTS)
    assert read_pressure(str(tmp_path / "memory.pressure")) == {"some": 1234567, "full": 89}
    # A huge file is read no further than a kernel file's size.
    (tmp_path / "memory.events").write_text("high 1\n" + "x" * 10_000_000 + "\noom 9\n")
    assert read_memory_events(str(tmp_path)) == {"high": 1}


def test_a_missing_or_removed_cgroup_reads_none(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    assert read_memory_events(str(gone)) is None
    assert read_pressure(str(gone / "memory.pressure")) is None
    gone.mkdir()
    assert read_memory_events(str(gone)) is None  # a directory without the file
    (gone / "memory.events").mkdir()  # EISDIR is an OSError like the others
    assert read_memory_events(str(gone)) is None


def test_the_systems_memory_pressure_on_this_host() -> None:
    if not os.path.exists(cgroupfs.PRESSURE_MEMORY):
        assert read_pressure() is None
        return
    totals = read_pressure()
    assert totals is not None and set(totals) <= {"some", "full"} and "some" in totals
    assert all(0 <= v <= COUNTER_MAX for v in totals.values())


def test_a_cgroup_path_maps_to_its_directory() -> None:
    mount = ("/", "/sys/fs/cgroup")
    assert cgroup_directory(mount, "/") == "/sys/fs/cgroup"
    assert cgroup_directory(mount, "/a/b") == "/sys/fs/cgroup/a/b"
    assert cgroup_directory(mount, "/a/../b") == "/sys/fs/cgroup/b"
    sub = ("/sub", "/mnt/cg")
    assert cgroup_directory(sub, "/sub") == "/mnt/cg"
    assert cgroup_directory(sub, "/sub/x") == "/mnt/cg/x"
    assert cgroup_directory(sub, "/subway") is None  # not below the mount's root
    assert cgroup_directory(sub, "/") is None
    # U+FFFD may stand for any bytes: no guess at which directory.
    assert cgroup_directory(mount, "/a\ufffd") is None


def test_a_cgroup_name_that_is_not_utf8_becomes_text(tmp_path: Path) -> None:
    """A delegated subtree's owner names its cgroups: bytes that are not UTF-8 become
    U+FFFD in the path (as the procfs backend decodes /proc/PID/cgroup), not lone
    surrogates, which no metric label or JSON encoder takes."""
    root = tmp_path / "cg"
    root.mkdir()
    os.mkdir(os.fsencode(root) + b"/bad\xff\xfename")
    os.mkdir(os.fsencode(root) + b"/bad\xff\xfename/child")
    paths = sorted(path for _, path, _ in walk_cgroups(("/", str(root))))
    assert paths == ["/", "/bad\ufffd\ufffdname", "/bad\ufffd\ufffdname/child"]
    for path in paths:
        path.encode("utf-8")  # no surrogate
    # The directory is still the real one.
    dirs = {path: d for d, path, _ in walk_cgroups(("/", str(root)))}
    assert os.path.isdir(dirs["/bad\ufffd\ufffdname/child"])


def test_the_oom_inputs_survive_a_lying_memory_events(tmp_path: Path) -> None:
    """The OOM model's reading of oom_kill shares the reader: a garbage count is left
    out (it raised ValueError, failing the whole OOM prediction of a scrape)."""
    root = tmp_path / "cg"
    (root / "a").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("memory\n")
    (root / "cgroup.subtree_control").write_text("memory\n")
    (root / "a" / "memory.max").write_text(f"{1 << 30}\n")
    (root / "a" / "memory.events").write_text("oom_kill lots\noom 1\n")
    (root / "b").mkdir()
    (root / "b" / "memory.events").write_text("oom_kill 99999999999999999999999\n")
    found = oom_inputs.read_cgroups(("/", str(root)))
    assert found["/a"].oom_kill is None
    assert found["/b"].oom_kill == COUNTER_MAX
