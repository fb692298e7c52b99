"""RAFS v6 meta-area placement arithmetic: the gap allocator and the chunk format word.

Spec: ../shared/spec/rafs-v6.md §15 (the upstream builder's exact algorithm: build order,
indexes and hard links, the gap allocator, the META shift), §12.1 (chunk format word).
Following it reproduces upstream nids and offsets, which keeps differential testing against
upstream images trivial. ``rafs.v6.writer`` walks the tree in build order and asks the
``Allocator`` where each inode goes; nothing here writes bytes.
"""

from __future__ import annotations

from collections import deque

from rafs.model import Node
from rafs.v6.ondisk import LAYOUT_FLAT_INLINE, LAYOUT_FLAT_PLAIN, round_up

INODE_SIZE = 64  # rconv always writes extended inodes (§9.3)


class Allocator:
    """Cursor plus the free-tail lists of §15.3 (FIFO per tail size in 32-byte units).

    Offsets are pre-shift (§15.5): the root goes at one block, where the cursor starts.
    """

    __slots__ = ("block", "cursor", "free", "nonempty")

    def __init__(self, block_size: int) -> None:
        self.block = block_size
        self.cursor = block_size
        self.free: list[deque[int]] = [deque() for _ in range(block_size // 32)]
        self.nonempty = 0  # bit k set <=> free[k] holds a block: finds the best fit in O(1)

    def remember_tail(self, off: int) -> None:
        if off % self.block:
            k = (self.block - off % self.block) // 32
            self.free[k].append(off - off % self.block)
            self.nonempty |= 1 << k

    def take_gap(self, size: int) -> int:
        """Offset of the smallest free tail that holds ``size`` bytes, 0 if none does."""
        if size >= self.block:
            return 0
        need = -(-size // 32)
        candidates = self.nonempty >> need
        if not candidates:
            return 0
        k = need + (candidates & -candidates).bit_length() - 1  # smallest sufficient gap
        blk = self.free[k].popleft()
        if not self.free[k]:
            self.nonempty &= ~(1 << k)
        off = blk + self.block - 32 * k
        self.remember_tail(off + 32 * need)
        return off

    def align(self, a: int) -> None:
        self.cursor = round_up(self.cursor, a)

    def place_with_tail(self, isize: int, d: int) -> tuple[int, int, int]:
        """Directories and symlinks: an inode of ``isize`` bytes, then ``d`` bytes of data,
        the tail inline when it fits (§15.3). Returns (inode offset, offset of the full data
        blocks, data layout)."""
        block = self.block
        tail = d % block
        if tail and isize + tail <= block:
            off = self.take_gap(isize + tail)
            if off == 0:
                if block - self.cursor % block < isize + tail:
                    self.remember_tail(self.cursor)
                    self.align(block)
                off = self.cursor
                self.cursor += isize + tail
            if d != tail:
                self.remember_tail(self.cursor)
                self.align(block)
            data_offset = self.cursor
            self.cursor += d - tail
            layout = LAYOUT_FLAT_INLINE
        else:
            off = self.take_gap(isize)
            if off == 0:
                off = self.cursor
                self.cursor += isize
            self.remember_tail(self.cursor)
            self.align(block)
            data_offset = self.cursor
            self.cursor += d
            self.align(block)
            layout = LAYOUT_FLAT_PLAIN
        self.align(32)
        return off, data_offset, layout

    def place_file(self, size: int) -> int:
        """A regular file's inode, xattrs and chunk indexes, ``size`` bytes in all."""
        off = self.take_gap(size)
        if off == 0:
            off = self.cursor
            self.cursor += size
        self.align(32)
        return off

    def place_special(self, isize: int) -> int:
        """Devices, fifos and sockets: at the cursor, never in a gap."""
        off = self.cursor
        self.cursor += isize
        self.align(32)
        return off


def chunk_format(node: Node, chunk_size: int, block_bits: int = 12) -> int:
    """i_u chunk format word (§12.1), with upstream's page-cache-sharing trick."""
    declared = chunk_size
    chunks = node.chunks
    if len(chunks) > 1:
        first = chunks[0]
        if all(
            c.blob is first.blob
            and c.uncompressed_offset == first.uncompressed_offset + i * chunk_size
            for i, c in enumerate(chunks)
        ):
            declared = 1 << (node.size - 1).bit_length()
    return 0x0020 | (declared.bit_length() - 1 - block_bits)
