#!/usr/bin/env python3
"""A 1 GiB lazily-zeroed buffer viewed as a numpy array without copying: memory is
committed only for the pages actually written."""

from __future__ import annotations

import numpy as np

import tamalloc
from tamalloc import format_bytes


def main() -> None:
    with tamalloc.alloc("1GiB") as buf:
        arr = np.frombuffer(buf, dtype=np.float64)  # zero-copy view of the mapping
        assert arr.ctypes.data == buf.address
        print(f"allocated {format_bytes(len(buf))}: resident {format_bytes(buf.resident_bytes())}")
        assert not arr[:1024].any()  # never-written memory reads as zero

        arr[: 16 << 17] = np.arange(16 << 17)  # write the first 16 MiB
        print(f"after writing 16 MiB: resident {format_bytes(buf.resident_bytes())}")
        print(f"sum of the first 16 MiB: {arr[: 16 << 17].sum():.0f}")
        del arr  # release the view before the buffer is unmapped


if __name__ == "__main__":
    main()
