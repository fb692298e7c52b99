"""convert.heap: free pages inside the heap go back to the system."""

from __future__ import annotations

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
    # 1 KiB objects come from malloc's heap, not from mmap. Every 64th stays alive: the
    # others leave ~64 KiB holes between live objects, which glibc never returns by itself
    # (it trims only the heap's top).
    held = [bytes(1000) + bytes([i & 0xFF]) for i in range(80_000)]
    kept = held[::64]
    freed_before = _rss_kib()
    del held
    freed = _rss_kib()
    trim_heap()
    after = _rss_kib()
    assert len(kept) == 1250
    assert freed - after > 40_000, (freed_before, freed, after)  # of ~80 MB freed
