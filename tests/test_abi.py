"""abi.py against docs/abi.md and, when present, the kernel patch series."""

from __future__ import annotations

import ctypes
import re
import subprocess
from pathlib import Path

import pytest

from tamalloc import abi

ROOT = Path(__file__).resolve().parents[1]
PATCHES = ROOT / "kernel" / "patches"


def test_record_layouts_match_the_documented_sizes() -> None:
    assert ctypes.sizeof(abi.TamallocMemStats) == 104 == abi.MEM_STATS_STRUCT.size
    assert abi.TAMALLOC_MEM_STATS_SIZE_VER1 == 104
    assert abi.TAMALLOC_MEM_STATS_SIZE_VER0 == 88
    assert ctypes.sizeof(abi.TamallocTotalMemStats) == 72 == abi.TOTAL_MEM_STATS_STRUCT.size
    assert abi.TAMALLOC_TOTAL_MEM_STATS_SIZE_VER1 == 72
    assert abi.TAMALLOC_TOTAL_MEM_STATS_SIZE_VER0 == 64
    assert [name for name, _ in abi.TamallocMemStats._fields_] == [
        "pid",
        "oom_score",
        "oom_score_adj",
        "size",
        "comm",
        "reserved_kb",
        "committed_kb",
        "anon_kb",
        "file_kb",
        "shmem_kb",
        "swap_kb",
        "pgtables_kb",
        "cgroup_id",
        "oom_flags",
        "pad",
    ]
    assert abi.TamallocMemStats.size.offset == 12
    assert abi.TamallocMemStats.pgtables_kb.offset == 80
    assert abi.TamallocMemStats.cgroup_id.offset == 88
    assert abi.TamallocMemStats.oom_flags.offset == 96
    assert abi.TamallocTotalMemStats.overcommit_memory.offset == 56
    assert abi.TamallocTotalMemStats.size.offset == 60
    assert abi.TamallocTotalMemStats.some_hidden.offset == 64


def test_struct_format_decodes_what_ctypes_encodes() -> None:
    rec = abi.TamallocMemStats(
        pid=42, oom_score=666, oom_score_adj=-17, comm=b"bash", reserved_kb=1 << 40, pgtables_kb=7
    )
    fields = abi.MEM_STATS_STRUCT.unpack(bytes(rec))
    assert fields[:3] == (42, 666, -17)
    assert fields[4].rstrip(b"\0") == b"bash"
    assert fields[5] == 1 << 40
    assert fields[11] == 7
    rec.cgroup_id, rec.oom_flags = 4242, abi.TAMALLOC_OOM_UNKILLABLE
    assert abi.MEM_STATS_STRUCT.unpack(bytes(rec))[12:] == (4242, 1, 0)


def test_syscall_numbers_match_the_docs() -> None:
    doc = (ROOT / "docs" / "abi.md").read_text()
    for name, nr in (
        ("tamalloc", abi.NR_TAMALLOC),
        ("get_mem_stats", abi.NR_GET_MEM_STATS),
        ("get_total_mem_stats", abi.NR_GET_TOTAL_MEM_STATS),
    ):
        assert re.search(rf"\|\s*{name}\s*\|\s*{nr}\s*\|", doc), name


def _patch_text() -> str:
    if not PATCHES.is_dir():
        pytest.skip("kernel/patches is not in this tree")
    return "\n".join(p.read_text(errors="replace") for p in sorted(PATCHES.glob("*.patch")))


def test_syscall_numbers_match_the_syscall_table() -> None:
    text = _patch_text()
    for name, nr in (
        ("tamalloc", abi.NR_TAMALLOC),
        ("get_mem_stats", abi.NR_GET_MEM_STATS),
        ("get_total_mem_stats", abi.NR_GET_TOTAL_MEM_STATS),
    ):
        match = re.search(rf"^\+(\d+)\s+\w+\s+{name}\s+sys_{name}\b", text, re.MULTILINE)
        if match is None:
            pytest.skip(f"no syscall_64.tbl line for {name} in the series")
        assert int(match[1]) == nr, name


UAPI_HEADER = "include/uapi/linux/tamalloc.h"


@pytest.fixture(scope="module")
def uapi_header(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The uapi header as the whole series leaves it: later patches grow the structs
    that an earlier one created, so no single patch shows the final layout."""
    if not PATCHES.is_dir():
        pytest.skip("kernel/patches is not in this tree")
    tree = tmp_path_factory.mktemp("series")
    for patch in sorted(PATCHES.glob("*.patch")):
        # git apply works outside a repository, as patch(1) does.
        subprocess.run(
            ["git", "apply", f"--include={UAPI_HEADER}", str(patch)], cwd=tree, check=True
        )
    return (tree / UAPI_HEADER).read_text()


def test_constants_match_the_uapi_header(uapi_header: str) -> None:
    defines = dict(re.findall(r"^#define\s+(TAMALLOC_\w+)\s+(\w+)", uapi_header, re.M))
    expected = {
        "TAMALLOC_HUGE": abi.TAMALLOC_HUGE,
        "TAMALLOC_MEM_STATS_SIZE_VER0": abi.TAMALLOC_MEM_STATS_SIZE_VER0,
        "TAMALLOC_MEM_STATS_SIZE_VER1": abi.TAMALLOC_MEM_STATS_SIZE_VER1,
        "TAMALLOC_TOTAL_MEM_STATS_SIZE_VER0": abi.TAMALLOC_TOTAL_MEM_STATS_SIZE_VER0,
        "TAMALLOC_TOTAL_MEM_STATS_SIZE_VER1": abi.TAMALLOC_TOTAL_MEM_STATS_SIZE_VER1,
        "TAMALLOC_OOM_UNKILLABLE": abi.TAMALLOC_OOM_UNKILLABLE,
        "TAMALLOC_OOM_VICTIM": abi.TAMALLOC_OOM_VICTIM,
        "TAMALLOC_OOM_ORIGIN": abi.TAMALLOC_OOM_ORIGIN,
        "TAMALLOC_OOM_EXITING": abi.TAMALLOC_OOM_EXITING,
    }
    assert {name: int(value.rstrip("UuLl"), 0) for name, value in defines.items()} == expected


def test_machine_support() -> None:
    assert abi.machine_supported("x86_64")
    assert not abi.machine_supported("aarch64")


_C_TYPES = {"__s32": ctypes.c_int32, "__u32": ctypes.c_uint32, "__u64": ctypes.c_uint64}


@pytest.mark.parametrize(
    ("c_name", "structure"),
    [
        ("tamalloc_mem_stats", abi.TamallocMemStats),
        ("tamalloc_total_mem_stats", abi.TamallocTotalMemStats),
    ],
)
def test_structures_match_the_uapi_header(c_name: str, structure: type, uapi_header: str) -> None:
    body = re.search(rf"^struct {c_name} {{\n(.*?)^}};", uapi_header, re.DOTALL | re.M)
    assert body is not None, f"struct {c_name} is not in the header"
    fields = []
    for line in body[1].splitlines():
        decl = re.match(r"\s*(\w+)\s+(\w+)(?:\[(\d+)\])?;", line)
        if decl is None:
            continue
        ctype, name, length = decl.groups()
        if length is not None:
            fields.append((name, ctypes.c_char if ctype == "char" else None, int(length)))
        else:
            fields.append((name, _C_TYPES[ctype], None))
    ours = []
    for name, ctype in structure._fields_:
        if issubclass(ctype, ctypes.Array):
            ours.append((name, ctype._type_, ctype._length_))
        else:
            ours.append((name, ctype, None))
    assert [(n.lstrip("_"), t, k) for n, t, k in fields] == ours
