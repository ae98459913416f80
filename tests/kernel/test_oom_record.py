"""The VER1 get_mem_stats() record: cgroup id and OOM flags (patched kernel only).

The record grew from 88 to 104 bytes; an 88-byte caller must see exactly what it saw
before, and the new fields must agree with what /proc and cgroupfs say.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_syscalls import one, sys_get_mem_stats

from _support import Child
from tamalloc import abi
from tamalloc.backends import get_backend
from tamalloc.oom_inputs import cgroup2_mount

pytestmark = pytest.mark.usefixtures("require_kernel")

VER0 = abi.TAMALLOC_MEM_STATS_SIZE_VER0
VER1 = abi.TAMALLOC_MEM_STATS_SIZE_VER1


def own_cgroup(pid: int) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    raise AssertionError(f"no cgroup v2 line in /proc/{pid}/cgroup")


@pytest.fixture
def cgroup_root() -> Path:
    mount = cgroup2_mount()
    if mount is None:
        pytest.fail("no cgroup2 mount: vm/guest-init.sh mounts one at /sys/fs/cgroup")
    return Path(mount[1])


@pytest.fixture
def scratch_cgroup(cgroup_root: Path) -> Iterator[Path]:
    path = cgroup_root / f"tamalloc-record-{os.getpid()}"
    path.mkdir()
    yield path
    for pid in (path / "cgroup.procs").read_text().split():
        (cgroup_root / "cgroup.procs").write_text(pid)
    path.rmdir()


def test_a_ver0_caller_gets_the_first_88_bytes_and_nothing_more() -> None:
    buf = (ctypes.c_ubyte * VER1)(*([0xFF] * VER1))
    assert sys_get_mem_stats(os.getpid(), buf, VER0, 1) == 1
    record = abi.TamallocMemStats.from_buffer(buf)
    assert record.size == VER0
    assert record.pid == os.getpid()
    assert bytes(buf[VER0:]) == b"\xff" * (VER1 - VER0)


def test_a_ver1_caller_learns_the_kernel_fills_104_bytes() -> None:
    record = one(os.getpid())
    assert record.size == VER1
    assert record.pad == 0


def test_the_cgroup_id_is_the_inode_of_the_cgroup_directory(
    child: Child, cgroup_root: Path, scratch_cgroup: Path
) -> None:
    before = one(child.pid).cgroup_id
    assert before == os.stat(cgroup_root / own_cgroup(child.pid).lstrip("/")).st_ino
    (scratch_cgroup / "cgroup.procs").write_text(str(child.pid))
    record = one(child.pid)
    assert record.cgroup_id == os.stat(scratch_cgroup).st_ino != before


def test_oom_flags_mark_what_oom_badness_rules_out(child: Child) -> None:
    assert one(os.getpid()).oom_flags & abi.TAMALLOC_OOM_UNKILLABLE == 0
    assert one(1).oom_flags & abi.TAMALLOC_OOM_UNKILLABLE  # the global init
    Path(f"/proc/{child.pid}/oom_score_adj").write_text("-999")
    assert one(child.pid).oom_flags == 0  # score 0, yet still a candidate
    Path(f"/proc/{child.pid}/oom_score_adj").write_text("-1000")
    record = one(child.pid)
    assert record.oom_score == 0
    assert record.oom_flags == abi.TAMALLOC_OOM_UNKILLABLE


def test_both_backends_weigh_a_process_alike(
    child: Child, scratch_cgroup: Path, cgroup_root: Path
) -> None:
    (scratch_cgroup / "cgroup.procs").write_text(str(child.pid))
    Path(f"/proc/{child.pid}/oom_score_adj").write_text("-1000")
    expected = "/" + str(scratch_cgroup.relative_to(cgroup_root))
    seen = {}
    for name in ("kernel", "procfs"):
        (task,) = [t for t in get_backend(name).oom_tasks() if t.pid == child.pid]
        seen[name] = task
        assert task.cgroup == expected
        assert task.unkillable
        assert task.oom_score_adj == -1000
    kernel, procfs = seen["kernel"], seen["procfs"]
    assert (kernel.name, kernel.pgtables_kb, kernel.swap_kb) == (
        procfs.name,
        procfs.pgtables_kb,
        procfs.swap_kb,
    )
    assert abs(kernel.rss_kb - procfs.rss_kb) <= 256  # the child runs its interpreter


def test_every_process_gets_a_cgroup_path_on_the_kernel_backend() -> None:
    tasks = get_backend("kernel").oom_tasks()
    assert tasks
    assert all(t.cgroup is not None and t.cgroup.startswith("/") for t in tasks)
    mine = [t for t in tasks if t.pid == os.getpid()]
    assert [t.cgroup for t in mine] == [own_cgroup(os.getpid())]
