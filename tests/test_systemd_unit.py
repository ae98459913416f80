"""examples/systemd/tamalloc-exporter.service: the capabilities each backend needs are
granted (CAP_BPF + CAP_PERFMON for the bpf backend, which the exporter loads unasked),
and systemd accepts the unit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "examples" / "systemd" / "tamalloc-exporter.service"
WANTED = {"CAP_SYS_PTRACE", "CAP_BPF", "CAP_PERFMON"}


def _directive(text: str, key: str) -> set[str]:
    lines = [line for line in text.splitlines() if line.startswith(f"{key}=")]
    assert len(lines) == 1, (key, lines)
    return set(lines[0].split("=", 1)[1].split())


def test_the_unit_grants_what_bpf_and_hidepid_need() -> None:
    text = UNIT.read_text()
    assert _directive(text, "AmbientCapabilities") == WANTED
    # The bounding set must hold what is granted, and nothing more.
    assert _directive(text, "CapabilityBoundingSet") == WANTED
    assert _directive(text, "NoNewPrivileges") == {"yes"}
    assert "optional" in text.lower()


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze")
    # The ExecStart's /opt/tamalloc is where the unit's comment installs it, not here.
    text = UNIT.read_text().replace("ExecStart=/opt/tamalloc/bin/tamalloc", "ExecStart=/bin/true")
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0 and "Failed to" in result.stderr and "bus" in result.stderr.lower():
        pytest.skip(f"systemd-analyze cannot run here: {result.stderr.strip()[:200]}")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
