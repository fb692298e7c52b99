"""convert.heap: free pages inside the heap go back to the system."""

from __future__ import annotations

import ctypes
import platform

import pytest

from convert.heap import trim_heap


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_trim_gives_back_the_holes_the_heap_keeps() -> None:
    # 1 KiB objects come from malloc's heap, not from mmap; a live one above them keeps
    # glibc from trimming the heap's top by itself.
    ctypes.CDLL(None).malloc_trim(0)
    held = [bytes(1000) + bytes([i & 0xFF]) for i in range(80_000)]
    keeper = bytes(1000) + b"!"
    before = _rss_kib()
    del held
    freed = _rss_kib()
    trim_heap()
    after = _rss_kib()
    assert keeper.endswith(b"!")
    assert freed - after > 40_000, (before, freed, after)  # of ~80 MB freed
