"""system_stats() and the /proc/system_stats parser."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import tamalloc
from _support import meminfo_kb
from tamalloc import parse_system_stats, system_stats
from tamalloc.system import SOURCE_MODULE, SOURCE_MODULE_STATVFS, SOURCE_PROCFS, SYSTEM_STATS_PATH

DOC = Path(__file__).resolve().parents[1] / "docs" / "abi.md"
SAMPLE = """\
[memory]
total_kb 2014428
used_kb 123456
free_kb 1800000
available_kb 1880000
buffers_kb 0
cached_kb 20000

[cpu]
# name user nice system idle iowait irq softirq steal (USER_HZ ticks)
cpu 120 0 340 98765 3 0 12 0
cpu0 60 0 170 49000 1 0 6 0
cpu1 60 0 170 49765 2 0 6 0

[disk /]
total_kb 263174212
free_kb 83886080
available_kb 70000000
used_pct 68.1
"""


def test_parse_the_documented_example() -> None:
    stats = parse_system_stats(SAMPLE)
    assert stats.source == SOURCE_MODULE
    assert stats.memory.total_kb == 2014428
    assert stats.memory.used_kb == 123456
    assert stats.memory.available_kb == 1880000
    assert stats.memory.cached_kb == 20000
    assert stats.cpu.total.user == 120
    assert stats.cpu.total.system == 340
    assert stats.cpu.total.idle == 98765
    assert stats.cpu.total.iowait == 3
    assert [c.cpu for c in stats.cpu.per_cpu] == [0, 1]
    assert stats.cpu.per_cpu[1].idle == 49765
    assert stats.disk.path == "/"
    assert stats.disk.total_kb == 263174212
    assert stats.disk.available_kb == 70000000
    # As df: used / (used + available), not the module's (total - free) / total (68.1).
    assert stats.disk.used_pct == 71.92


def test_docs_example_is_the_one_tested() -> None:
    block = re.search(r"```\n(\[memory\].*?)```", DOC.read_text(), re.DOTALL)
    assert block is not None
    assert parse_system_stats(block[1]) == parse_system_stats(SAMPLE)


def test_to_dict_has_the_json_file_shape() -> None:
    data = parse_system_stats(SAMPLE).to_dict()
    assert set(data) == {"memory", "cpu", "disk", "source"}
    assert set(data["memory"]) == {
        "total_kb",
        "used_kb",
        "free_kb",
        "available_kb",
        "buffers_kb",
        "cached_kb",
    }
    assert data["cpu"]["total"]["user"] == 120
    assert "cpu" not in data["cpu"]["total"]
    assert data["cpu"]["per_cpu"][0] == {
        "cpu": 0,
        "user": 60,
        "nice": 0,
        "system": 170,
        "idle": 49000,
        "iowait": 1,
        "irq": 0,
        "softirq": 6,
        "steal": 0,
    }
    assert data["disk"] == {
        "path": "/",
        "total_kb": 263174212,
        "free_kb": 83886080,
        "available_kb": 70000000,
        "used_pct": 71.92,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "missing"),
        (SAMPLE.replace("total_kb 2014428\n", ""), "memory total_kb"),
        (SAMPLE.replace("cpu 120 0 340 98765 3 0 12 0\n", ""), "cpu total"),
        (SAMPLE.replace("[disk /]", "[elsewhere]"), "disk"),
        (SAMPLE.replace("used_kb 123456", "used_kb lots"), "line 3"),
        (SAMPLE.replace("cpu0 60", "gpu0 60"), "unexpected CPU line"),
    ],
)
def test_malformed_text_is_a_value_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_system_stats(text)


def test_system_stats_of_this_machine() -> None:
    stats = system_stats()
    module = os.path.exists(SYSTEM_STATS_PATH)
    assert stats.source == (SOURCE_MODULE if module else SOURCE_PROCFS)
    meminfo = meminfo_kb()
    assert stats.memory.total_kb == meminfo["MemTotal"]
    assert stats.memory.used_kb == stats.memory.total_kb - stats.memory.available_kb
    assert 0 < stats.memory.available_kb <= stats.memory.total_kb
    with open("/proc/stat") as f:
        cpus = sum(1 for line in f if re.match(r"cpu\d+ ", line))
    assert len(stats.cpu.per_cpu) == cpus
    assert stats.cpu.total.user >= max(c.user for c in stats.cpu.per_cpu)
    assert stats.cpu.total.total > 0
    vfs = os.statvfs("/")
    assert stats.disk.path == "/"
    assert stats.disk.total_kb == vfs.f_blocks * vfs.f_frsize // 1024
    assert 0 <= stats.disk.used_pct <= 100


def test_system_stats_for_another_path(tmp_path: Path) -> None:
    stats = system_stats(str(tmp_path))
    assert stats.disk.path == str(tmp_path)
    vfs = os.statvfs(tmp_path)
    assert stats.disk.total_kb == vfs.f_blocks * vfs.f_frsize // 1024
    if os.path.exists(SYSTEM_STATS_PATH):
        assert stats.source == SOURCE_MODULE_STATVFS
    else:
        assert stats.source == SOURCE_PROCFS


def test_missing_path_is_an_os_error() -> None:
    with pytest.raises(FileNotFoundError):
        system_stats("/no/such/path")


def test_cpu_percentages() -> None:
    cpu = parse_system_stats(SAMPLE).cpu.total
    assert cpu.total == 120 + 340 + 98765 + 3 + 12
    assert cpu.pct("idle") == pytest.approx(98765 / cpu.total * 100)
    assert tamalloc.CpuTimes(None, 0, 0, 0, 0, 0, 0, 0, 0).pct("user") == 0


def test_disk_used_pct_is_what_df_prints() -> None:
    import math
    import shutil
    import subprocess

    if shutil.which("df") is None:
        pytest.skip("no df on this machine")
    out = subprocess.run(["df", "-P", "/"], capture_output=True, text=True, check=True).stdout
    df_pct = int(out.splitlines()[1].split()[4].rstrip("%"))
    ours = tamalloc.system.disk_usage("/").used_pct
    # df rounds up to a whole percent; the filesystem may change a little meanwhile.
    assert abs(math.ceil(ours) - df_pct) <= 1


def test_disk_used_pct_formula() -> None:
    from tamalloc.system_models import disk_used_pct

    # 100 blocks, 40 free of which 10 reserved for root: 60 used of 90 usable.
    assert disk_used_pct(100, 40, 30) == 66.67
    assert disk_used_pct(0, 0, 0) == 0.0


@pytest.mark.parametrize(
    ("total", "free", "available"),
    [
        (10, 2**64 - 1, 2**64 - 1),
        (10, 12, 5),
        (10, 11, 0),
        (0, 5, 3),
        (2**64 - 1, 0, 2**64 - 1),
        (2**64 - 1, 2**64 - 1, 2**64 - 1),
        (5, 0, 0),
    ],
)
def test_disk_used_pct_of_hostile_figures_is_a_percentage(
    total: int, free: int, available: int
) -> None:
    """statfs figures are the filesystem's word (a FUSE server's, the module passes them
    on saturated): whatever they are, the share is within 0..100, as the module's own."""
    from tamalloc.system_models import disk_used_pct

    assert 0.0 <= disk_used_pct(total, free, available) <= 100.0
    text = SAMPLE.split("[disk /]")[0] + (
        f"[disk /]\ntotal_kb {total}\nfree_kb {free}\navailable_kb {available}\nused_pct 0.0\n"
    )
    assert 0.0 <= parse_system_stats(text).disk.used_pct <= 100.0


def test_swap_comes_from_meminfo_whatever_the_source(monkeypatch: pytest.MonkeyPatch) -> None:
    import tamalloc.system as system

    meminfo = meminfo_kb()
    stats = system_stats()
    assert stats.swap is not None
    assert stats.swap.total_kb == meminfo["SwapTotal"]
    assert stats.swap.used_kb == stats.swap.total_kb - stats.swap.free_kb
    assert abs(stats.swap.free_kb - meminfo["SwapFree"]) <= 1024
    real_read = system._read_text
    monkeypatch.setattr(
        system, "_read_text", lambda path: SAMPLE if path == SYSTEM_STATS_PATH else real_read(path)
    )
    monkeypatch.setattr(
        system, "read_meminfo", lambda: {**meminfo, "SwapTotal": 4000, "SwapFree": 1000}
    )
    from_module = system_stats()
    assert from_module.source == SOURCE_MODULE
    assert from_module.swap == tamalloc.SwapInfo(total_kb=4000, used_kb=3000, free_kb=1000)
    assert from_module.to_dict()["swap"] == {"total_kb": 4000, "used_kb": 3000, "free_kb": 1000}


STAT_BEFORE = "cpu  100 0 100 800 0 0 0 0\ncpu0 50 0 50 400 0 0 0 0\ncpu1 50 0 50 400 0 0 0 0\n"
STAT_AFTER = "cpu  160 0 120 820 0 0 0 0\ncpu0 100 0 50 400 0 0 0 0\ncpu1 60 0 70 420 0 0 0 0\n"


def test_cpu_sample_is_the_difference_of_two_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    import tamalloc.system as system

    reads = iter([STAT_BEFORE, STAT_AFTER])
    slept: list[float] = []
    monkeypatch.setattr(system, "_read_text", lambda path: next(reads))
    monkeypatch.setattr(system.time, "sleep", slept.append)
    sample = system.cpu_sample(0.25)
    assert slept == [0.25]
    assert (sample.total.user, sample.total.system, sample.total.idle) == (60, 20, 20)
    assert sample.total.pct("user") == 60.0
    assert [c.cpu for c in sample.per_cpu] == [0, 1]
    assert sample.per_cpu[0].pct("user") == 100.0
    assert sample.per_cpu[1].pct("idle") == pytest.approx(100 * 20 / 50)


def test_cpu_sample_of_this_machine() -> None:
    sample = tamalloc.cpu_sample(0.05)
    assert sample.total.total >= 0
    assert 0 <= sample.total.pct("idle") <= 100
