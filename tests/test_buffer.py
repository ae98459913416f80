"""alloc() and Buffer on each backend: laziness, zeroing, buffer protocol, errors."""

from __future__ import annotations

import ctypes
import mmap
import os

import pytest

import tamalloc
from _support import GiB, MiB, read_int, run_python
from tamalloc import Buffer, alloc

PAGE = mmap.PAGESIZE
MADV_NOHUGEPAGE = 15
_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def vm_flags(address: int) -> list[str]:
    """VmFlags of the mapping that contains ``address`` (/proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(None, 1)[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(x, 16) for x in head.split("-"))
                inside = start <= address < end
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    raise AssertionError(f"no mapping contains {address:#x}")


def test_one_gib_is_reserved_but_not_resident(backend: str) -> None:
    me = os.getpid()
    before = tamalloc.mem_stats(me, backend=backend)
    with alloc("1GiB", backend=backend) as buf:
        after = tamalloc.mem_stats(me, backend=backend)
        assert len(buf) == GiB
        assert buf.backend == backend
        assert buf.resident_bytes() == 0
        assert after.reserved_kb - before.reserved_kb >= GiB // 1024
        assert after.committed_kb - before.committed_kb < 16 * 1024
        if read_int("/proc/sys/vm/overcommit_memory") != 2:  # mode 2 ignores the flag
            assert "nr" in vm_flags(buf.address)  # MAP_NORESERVE: no commit charge


def test_writing_100_pages_makes_exactly_100_pages_resident(backend: str) -> None:
    with alloc("1GiB", backend=backend) as buf:
        # Count 4 KiB pages even where THP is "always".
        assert _libc.madvise(buf.address, len(buf), MADV_NOHUGEPAGE) == 0
        for page in range(100):
            buf[page * PAGE * 7] = 0x41
        assert buf.resident_bytes() == 100 * PAGE
        assert buf[7 * PAGE] == 0x41
        # Untouched pages still read as zero at their first access.
        assert buf[PAGE : 2 * PAGE] == bytes(PAGE)
        assert buf[GiB - PAGE :] == bytes(PAGE)


def test_freed_on_close(backend: str) -> None:
    me = os.getpid()
    buf = alloc("256M", backend=backend)
    held = tamalloc.mem_stats(me, backend=backend).reserved_kb
    buf.close()
    assert held - tamalloc.mem_stats(me, backend=backend).reserved_kb >= 256 * 1024
    buf.close()  # idempotent
    assert buf.closed


def test_size_is_rounded_to_pages_but_len_is_exact(backend: str) -> None:
    with alloc(100, backend=backend) as buf:
        assert len(buf) == 100
        assert buf.address % PAGE == 0
        buf[99] = 1
        with pytest.raises(IndexError):
            buf[100]


def test_huge_is_2mib_aligned_and_advised(backend: str) -> None:
    with alloc("4M", huge=True, backend=backend) as buf:
        assert buf.huge
        assert buf.address % (2 * MiB) == 0
        if os.path.isdir("/sys/kernel/mm/transparent_hugepage"):
            assert "hg" in vm_flags(buf.address)  # MADV_HUGEPAGE
        buf[len(buf) - 1] = 5
        assert buf[-1] == 5


def test_numpy_view_is_zero_copy(backend: str) -> None:
    np = pytest.importorskip("numpy")
    with alloc("8M", backend=backend) as buf:
        arr = np.frombuffer(buf, dtype=np.uint8)
        assert arr.size == len(buf)
        assert arr.ctypes.data == buf.address
        assert not arr.flags.owndata
        arr[10] = 7
        assert buf[10] == 7
        buf[11] = 9
        assert arr[11] == 9
        assert not arr[PAGE:].any()
        del arr


def test_buffer_protocol_and_slicing(backend: str) -> None:
    with alloc("1M", backend=backend) as buf:
        assert isinstance(buf, Buffer)
        view = memoryview(buf)
        assert view.nbytes == MiB
        assert not view.readonly
        view.cast("B")[0:5] = b"hello"
        del view
        assert buf[0:5] == b"hello"
        assert buf[:3] == b"hel"
        assert buf[0:5:2] == b"hlo"
        buf[5:8] = b"abc"
        assert bytes(memoryview(buf)[0:8]) == b"helloabc"
        with pytest.raises(ValueError, match="range"):
            buf[0] = 256
        assert "Buffer" in repr(buf)


def test_use_after_close_is_a_value_error(backend: str) -> None:
    buf = alloc("1M", backend=backend)
    buf.close()
    for action in (
        lambda: buf[0],
        lambda: buf[0:4],
        lambda: buf.__setitem__(0, 1),
        lambda: len(buf),
        lambda: buf.address,
        lambda: buf.resident_bytes(),
        lambda: buf.__enter__(),
    ):
        with pytest.raises(ValueError, match="closed"):
            action()
    assert "closed" in repr(buf)


@pytest.mark.parametrize("size", [0, -1, "0", "0M", "", "abc", "10X", "-5M", True, 1.5])
def test_bad_sizes_are_value_errors(backend: str, size: object) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        alloc(size, backend=backend)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", ["1EiB", 1 << 62, 1 << 70])
def test_too_large_for_the_address_space_is_a_memory_error(backend: str, size: object) -> None:
    with pytest.raises(MemoryError):
        alloc(size, backend=backend)  # type: ignore[arg-type]


def test_rlimit_as_is_a_memory_error(backend: str) -> None:
    code = (
        "import resource, tamalloc\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        f"try:\n    tamalloc.alloc('2G', backend={backend!r})\n"
        "except MemoryError as err:\n    print('MemoryError', err)\n"
    )
    out = run_python(code, check=True).stdout
    assert out.startswith("MemoryError")


def test_buffers_cannot_be_pickled(backend: str) -> None:
    import pickle

    with alloc(4096, backend=backend) as buf, pytest.raises(TypeError, match="pickle"):
        pickle.dumps(buf)


@pytest.mark.parametrize("huge", [False, True])
def test_memoryview_has_plain_byte_format(backend: str, huge: bool) -> None:
    # huge=True goes through the adopted mapping on both backends.
    with alloc("4M", huge=huge, backend=backend) as buf:
        buf[0:4] = b"abcd"
        view = memoryview(buf)
        assert view.format == "B"
        assert view.itemsize == 1
        assert view[0] == ord("a")
        assert view[-1] == 0
        assert bytes(view[:16]) == b"abcd" + bytes(12)
        assert view[1:3].tobytes() == b"bc"
        view[4] = 0x7A
        assert buf[4] == 0x7A
        view.release()


def test_close_with_a_numpy_view_is_a_buffer_error(backend: str) -> None:
    np = pytest.importorskip("numpy")
    buf = alloc("1M", backend=backend)
    a = np.frombuffer(buf, dtype=np.uint8)
    with pytest.raises(BufferError, match="views"):
        buf.close()
    assert not buf.closed
    a[0] = 3  # still mapped: the refused close left the memory alone
    assert buf[0] == 3
    del a
    buf.close()
    assert buf.closed
    with pytest.raises((ValueError, TypeError)):
        np.frombuffer(buf, dtype=np.uint8)  # a closed buffer exports nothing


def test_memoryview_blocks_close_until_released(backend: str) -> None:
    buf = alloc(4096, backend=backend)
    view = memoryview(buf)
    with pytest.raises(BufferError):
        buf.close()
    view.release()
    buf.close()
    with pytest.raises(ValueError):
        memoryview(buf)


def test_with_block_refuses_to_end_with_live_views(backend: str) -> None:
    np = pytest.importorskip("numpy")
    with pytest.raises(BufferError), alloc("1M", backend=backend) as buf:
        a = np.frombuffer(buf, dtype=np.uint8)
    assert not buf.closed
    assert a[0] == 0  # readable: no unmapped memory behind the view
    del a
    buf.close()
    with alloc("1M", backend=backend) as buf2:
        b = np.frombuffer(buf2, dtype=np.uint8)
        b[0] = 1
        del b
    assert buf2.closed


def test_with_block_ending_by_an_exception_keeps_the_exception(backend: str) -> None:
    np = pytest.importorskip("numpy")
    with pytest.raises(KeyError), alloc("1M", backend=backend) as buf:
        a = np.frombuffer(buf, dtype=np.uint8)
        raise KeyError("boom")
    assert a[0] == 0  # the mapping stays while the view lives
    address = buf.address
    del a, buf  # the last reference: mmap's dealloc unmaps
    with open("/proc/self/maps") as f:
        starts = {int(line.split("-", 1)[0], 16) for line in f}
    assert address not in starts


def test_numpy_view_of_a_closed_buffer_does_not_crash() -> None:
    # The reproducer, in a child so that a crash is a failed test, not a lost run.
    pytest.importorskip("numpy")
    code = (
        "import numpy as np, tamalloc\n"
        "buf = tamalloc.alloc('1M', backend='procfs')\n"
        "a = np.frombuffer(buf, dtype=np.uint8)\n"
        "try:\n    buf.close()\nexcept BufferError:\n    print('refused')\n"
        "print(int(a[0]))\n"
        "del a\nbuf.close()\n"
        "try:\n    np.frombuffer(buf, dtype=np.uint8)\nexcept (ValueError, TypeError):\n"
        "    print('closed')\n"
    )
    run = run_python(code)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["refused", "0", "closed"]


def test_buffers_cannot_be_resized(backend: str) -> None:
    with alloc(4096, backend=backend) as buf, pytest.raises(TypeError, match="resized"):
        buf.resize(8192)


def test_buffer_is_made_by_alloc_only() -> None:
    with pytest.raises(TypeError, match="alloc"):
        Buffer(-1, 4096)
