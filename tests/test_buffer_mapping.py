"""tamalloc._mapping.Mapping, the base of Buffer: its own memory, owning a mapping made
elsewhere, view counting; and Buffer without it (installed without a C compiler), where
the backend's mapping is moved with mremap onto an mmap.mmap's."""

from __future__ import annotations

import ctypes
import mmap
import subprocess
import sys
from pathlib import Path

import pytest

import tamalloc
from _support import MiB, run_python, subprocess_env
from tamalloc import _libc
from tamalloc.backends import kernel_available
from tamalloc.buffer import C_MAPPING, alloc
from test_buffer import vm_flags

try:
    from tamalloc._mapping import Mapping, adopt
except ImportError:
    Mapping = None  # type: ignore[assignment,misc]

PAGE = mmap.PAGESIZE
NEEDS_C = "tamalloc._mapping was not built: install with a C compiler (make venv)"


@pytest.fixture(autouse=True)
def _built() -> None:
    # The venv always builds it; a missing module is a failure here, not a skip.
    assert Mapping is not None and C_MAPPING, NEEDS_C


def mapped_ranges() -> list[tuple[int, int]]:
    with open("/proc/self/maps") as f:
        return [
            tuple(int(x, 16) for x in line.split(None, 1)[0].split("-"))  # type: ignore[misc]
            for line in f
        ]


def is_mapped(address: int, length: int) -> bool:
    """Whether every byte of [address, address + length) is in some mapping."""
    end, ranges = address + length, sorted(mapped_ranges())
    for start, stop in ranges:
        if start <= address < stop:
            address = stop
            if address >= end:
                return True
    return False


def raw_mapping(length: int, advise_huge: bool = False) -> int:
    """A private anonymous MAP_NORESERVE mapping made through ctypes, as a backend's."""
    address = _libc.mmap(
        None, length, _libc.PROT_READ_WRITE, _libc.MAP_PRIVATE_ANON_NORESERVE, -1, 0
    )
    assert address not in (None, _libc.MAP_FAILED), ctypes.get_errno()
    if advise_huge:
        assert _libc.madvise(address, length, _libc.MADV_HUGEPAGE) == 0
    return int(address)


def test_own_memory_is_lazily_zeroed_and_noreserve() -> None:
    m = Mapping(3 * MiB + 5)
    try:
        assert len(m) == 3 * MiB + 5
        assert m.address % PAGE == 0
        assert m[0] == 0 and m[-1] == 0 and m[MiB : MiB + 8] == bytes(8)
        assert "nr" in vm_flags(m.address)
        assert is_mapped(m.address, 3 * MiB + PAGE)
    finally:
        m.close()


@pytest.mark.parametrize("length", [0, -1])
def test_bad_lengths_are_value_errors(length: int) -> None:
    with pytest.raises(ValueError):
        Mapping(length)


def test_a_length_beyond_the_address_space_is_enomem() -> None:
    with pytest.raises(OSError) as info:
        Mapping(sys.maxsize)
    assert info.value.errno == 12  # ENOMEM


def test_adopt_owns_the_mapping_with_its_pages_and_flags() -> None:
    source = raw_mapping(4 * MiB, advise_huge=True)
    ctypes.memmove(source + 100, b"taken", 5)
    m = adopt(Mapping, source, 4 * MiB - 7)
    assert type(m) is Mapping
    assert (m.address, len(m)) == (source, 4 * MiB - 7)
    assert m[100:105] == b"taken"
    flags = vm_flags(m.address)
    assert "nr" in flags and "hg" in flags
    m.close()
    assert not is_mapped(source, PAGE)  # the page-rounded length: all of it
    assert not is_mapped(source + 4 * MiB - PAGE, PAGE)


def test_adopt_refuses_what_is_not_a_mapping() -> None:
    hole = 1 << 44  # 16 TiB: far from where Linux x86_64 places anything by itself
    short = raw_mapping(2 * PAGE)
    _libc.munmap(short + PAGE, PAGE)  # so that the page after it is a hole
    assert not is_mapped(hole, PAGE) and not is_mapped(short + PAGE, PAGE)
    try:
        for address, length in (
            (0, PAGE),
            (short + 1, PAGE),
            (short, 0),
            (short, -5),
            (-PAGE, PAGE),
        ):
            with pytest.raises((ValueError, OverflowError)):
                adopt(Mapping, address, length)
        # msync: a range not wholly mapped is ENOMEM, and nothing is owned.
        for address, length in ((hole, PAGE), (short, 2 * PAGE)):
            with pytest.raises(OSError) as info:
                adopt(Mapping, address, length)
            assert info.value.errno == 12
        with pytest.raises(TypeError):
            adopt(bytearray, short, PAGE)  # type: ignore[type-var]
        assert is_mapped(short, PAGE)
    finally:
        _libc.munmap(short, PAGE)


def test_close_refuses_while_a_view_exists() -> None:
    m = Mapping(PAGE)
    view = memoryview(m)
    try:
        with pytest.raises(BufferError, match="views"):
            m.close()
        view[0] = 1
    finally:
        view.release()
    m.close()
    m.close()
    assert m.closed
    for action in (
        lambda: m[0],
        lambda: len(m),
        lambda: m.address,
        lambda: memoryview(m),
        lambda: m.__setitem__(0, 1),
    ):
        with pytest.raises(ValueError, match="closed"):
            action()


def test_weak_references_as_on_mmap() -> None:
    import weakref

    with alloc(PAGE, backend="procfs") as buf:
        ref = weakref.ref(buf)
        assert ref() is buf
    del buf
    assert ref() is None


def test_items_and_slices_as_bytearray() -> None:
    m, ref = Mapping(64), bytearray(64)
    try:
        for target in (m, ref):
            target[3] = 200
            target[-1] = 9
            target[10:15] = b"hello"
            target[20:30:3] = b"abcd"
            target[40:44] = memoryview(b"wxyz")
        assert m[:] == bytes(ref)
        assert m[::-1] == bytes(ref[::-1])
        assert m[5:50:7] == bytes(ref[5:50:7])
        assert (m[3], m[-1], m[-64]) == (200, 9, 0)
        m[0:8] = memoryview(m)[10:18]  # a view of itself
        assert m[0:8] == b"hello\0\0\0"
        for bad, error in ((64, IndexError), (-65, IndexError), ("1", TypeError)):
            with pytest.raises(error):
                m[bad]  # type: ignore[index]
        for value, error in (
            (256, ValueError),
            (-1, ValueError),
            (1 << 70, ValueError),
            (b"x", TypeError),
        ):
            with pytest.raises(error):
                m[0] = value  # type: ignore[assignment]
        with pytest.raises(IndexError, match="wrong size"):
            m[0:4] = b"abc"
        with pytest.raises(TypeError):
            del m[0]  # type: ignore[attr-defined]
    finally:
        m.close()


def test_index_that_closes_the_buffer_is_a_value_error() -> None:
    # Python code (__index__, a slice bound) runs in the middle of an access; a buffer
    # it closes must be seen as closed, not read after the unmap. In a child: a crash
    # is then a failed test.
    code = (
        "import tamalloc\n"
        "for huge in (False, True):\n"
        "    for action in ('get', 'set', 'slice', 'value', 'assign'):\n"
        "        buf = tamalloc.alloc('1M', huge=huge, backend='procfs')\n"
        "        class Evil:\n"
        "            def __index__(self):\n"
        "                buf.close()\n"
        "                return 0\n"
        "        try:\n"
        "            if action == 'get': buf[Evil()]\n"
        "            elif action == 'set': buf[Evil()] = 1\n"
        "            elif action == 'slice': buf[Evil():10]\n"
        "            elif action == 'value': buf[0] = Evil()\n"
        "            else: buf[Evil():2] = b'ab'\n"
        "        except ValueError as err:\n"
        "            print(action, 'closed' in str(err))\n"
    )
    run = run_python(code)
    assert run.returncode == 0, run.stderr
    assert (
        run.stdout.split()
        == ["get", "True", "set", "True", "slice", "True", "value", "True", "assign", "True"] * 2
    )


def test_without_the_c_type_a_buffer_is_an_mmap() -> None:
    # As installed without a C compiler: the same promises, on mmap.mmap; kernel
    # mappings are moved through ctypes. Huge buffers are advised (hg) but aligned
    # only where the kernel aligns the mmap module's mapping itself.
    backends = ["procfs", "kernel"] if kernel_available() else ["procfs"]
    code = (
        "import sys\n"
        "sys.modules['tamalloc._mapping'] = None\n"
        "import mmap, tamalloc, tamalloc.buffer\n"
        "from test_buffer import vm_flags\n"
        "assert not tamalloc.buffer.C_MAPPING\n"
        f"for backend in {backends!r}:\n"
        "    for huge in (False, True):\n"
        "        buf = tamalloc.alloc('4M', huge=huge, backend=backend)\n"
        "        assert isinstance(buf, mmap.mmap) and isinstance(buf, tamalloc.Buffer)\n"
        "        assert buf[:4096] == bytes(4096) and buf[-1] == 0\n"
        "        flags = vm_flags(buf.address)\n"
        "        assert 'nr' in flags and ('hg' in flags) == huge, flags\n"
        "        view = memoryview(buf)\n"
        "        assert view.format == 'B'\n"
        "        view[5] = 5\n"
        "        try:\n"
        "            buf.close()\n"
        "        except BufferError as err:\n"
        "            assert 'views' in str(err)\n"
        "        else:\n"
        "            raise AssertionError('closed while viewed')\n"
        "        view.release()\n"
        "        assert buf[5] == 5\n"
        "        address = buf.address\n"
        "        buf.close()\n"
        "        starts = {int(l.split('-', 1)[0], 16) for l in open('/proc/self/maps')}\n"
        "        assert address not in starts\n"
        "        print(backend, huge, 'ok')\n"
    )
    env = subprocess_env()
    env["PYTHONPATH"] = ":".join(filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")]))
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [f"{b} {h} ok" for b in backends for h in (False, True)]


@pytest.mark.kernel
def test_kernel_buffer_is_the_syscall_mapping() -> None:
    # The memory is tamalloc()'s own mapping: MAP_NORESERVE, and for the huge flag
    # 2 MiB aligned and MADV_HUGEPAGE.
    for huge in (False, True):
        with alloc("8M", huge=huge, backend="kernel") as buf:
            flags = vm_flags(buf.address)
            assert "nr" in flags and ("hg" in flags) == huge
            if huge:
                assert buf.address % (2 * MiB) == 0
            buf[len(buf) - 1] = 1
            assert buf.resident_bytes() >= PAGE
    assert tamalloc.Buffer is type(buf)
