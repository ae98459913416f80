"""``tamalloc watch``: the history's scale and range, and JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys

from _support import Child, run_cli, run_on_pty
from tamalloc.cli.watch import sparkline, value_range
from tamalloc.models import FIELD_NAMES


def test_sparkline_is_scaled_from_min_to_max() -> None:
    # The case: a steady 41.3-41.8 MiB drew full bars when scaled from 0.
    steady = [41.3, 41.8, 41.5, 41.3]
    line = sparkline(steady)
    assert line[0] == "▁" and line[1] == "█"
    assert line[2] not in "▁█"
    assert sparkline([5.0, 5.0, 5.0]) == "▁▁▁"  # flat
    assert sparkline([]) == ""


def test_value_range_names_both_ends() -> None:
    assert value_range([41.3, 41.8, 41.5], lambda v: f"{v:.1f} MiB") == "41.3 MiB to 41.8 MiB"
    assert value_range([7, 7], str) == "7"


def test_watch_json_lines_bounded_by_count(child: Child) -> None:
    result = run_cli("watch", str(child.pid), "--json", "--count", "3", "--interval", "0.1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    for line in lines:
        sample = json.loads(line)
        assert sample["pid"] == child.pid
        assert set(FIELD_NAMES) <= set(sample)
        assert isinstance(sample["time"], float)
    times = [json.loads(line)["time"] for line in lines]
    assert times == sorted(times)


def test_watch_json_stays_json_when_the_process_exits() -> None:
    target = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
    try:
        result = run_cli("watch", str(target.pid), "--json", "--interval", "0.2")
    finally:
        target.kill()
        target.wait()
    assert result.returncode == 0, result.stderr
    assert all(json.loads(line)["pid"] == target.pid for line in result.stdout.splitlines())
    assert "exited" in result.stderr


def test_watch_live_view_prints_the_range(child: Child) -> None:
    import re

    out = run_on_pty("watch", str(child.pid), "--interval", "0.1", "--count", "3", NO_COLOR="1")
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    assert "committed (RSS)" in out
    row = next(line for line in reversed(out.splitlines()) if "reserved (VSZ)" in line)
    # value, the bars, then the range they span (one value: the child's size is steady)
    assert re.search(r"MiB\s+[▁▂▃▄▅▆▇█]{3}\s+\d+\.\d MiB( to \d+\.\d MiB)?\s", row), row
