"""RAFS v6 meta-area layout as pure arithmetic: inode numbering, placement and nids.

Spec: ../shared/spec/rafs-v6.md §15 (the upstream builder's exact algorithm: build order,
indexes and hard links, the gap allocator, the META shift), §11.3 (dirent sizes), §9.5
(nlink), §12.1 (chunk format word). Following it reproduces upstream nids and offsets, which
keeps differential testing against upstream images trivial.

Nothing here writes bytes: ``plan_layout`` returns every inode's offset, data layout and data
block, and ``rafs.v6.writer`` serialises that plan.
"""

from __future__ import annotations

from bisect import insort
from collections import deque
from dataclasses import dataclass
from stat import S_IFDIR, S_IFLNK, S_IFREG

from rafs.errors import InvalidInput
from rafs.model import Node
from rafs.v6.ondisk import (
    BLOCK_SIZE,
    LAYOUT_CHUNK_BASED,
    LAYOUT_FLAT_INLINE,
    LAYOUT_FLAT_PLAIN,
    dirent_size,
    round_up,
    xattr_body_size,
)

INODE_SIZE = 64  # rconv always writes extended inodes (§9.3)


class InodePlan:
    """Where and how one inode (possibly shared by several names) is written.

    A plain class with slots and a short ``__init__``: one is made per inode of trees of
    250k entries, where a dataclass's generated defaults cost a list per plan.
    """

    __slots__ = (
        "node", "ino", "nlink", "xattr_size", "parent", "offset", "layout", "data_offset",
        "data_size", "entries",
    )  # fmt: skip

    def __init__(
        self,
        node: Node,
        ino: int,  # RAFS inode index written to i_ino (§15.2)
        nlink: int,
        xattr_size: int,
        parent: InodePlan | None = None,
    ) -> None:
        self.node = node
        self.ino = ino
        self.nlink = nlink
        self.xattr_size = xattr_size
        self.parent = parent
        self.offset = 0  # pre-shift byte offset of the inode
        self.layout = LAYOUT_FLAT_PLAIN
        self.data_offset = 0  # pre-shift start of the full data blocks (dirs, symlinks)
        self.data_size = 0  # i_size for dirs and symlinks
        self.entries: list[tuple[bytes, InodePlan]] = []  # dirs: sorted, with . and ..

    @property
    def inode_size(self) -> int:
        return INODE_SIZE + self.xattr_size


class _Allocator:
    """Cursor plus the free-tail lists of §15.3 (FIFO per tail size in 32-byte units)."""

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

    def place_with_tail(self, plan: InodePlan, d: int) -> None:
        """Directories and symlinks: inode, then data, tail inline when it fits (§15.3)."""
        block = self.block
        isize = plan.inode_size
        tail = d % block
        if tail and isize + tail <= block:
            plan.layout = LAYOUT_FLAT_INLINE
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
            plan.offset = off
            plan.data_offset = self.cursor
            self.cursor += d - tail
        else:
            plan.layout = LAYOUT_FLAT_PLAIN
            off = self.take_gap(isize)
            if off == 0:
                off = self.cursor
                self.cursor += isize
            self.remember_tail(self.cursor)
            self.align(block)
            plan.offset = off
            plan.data_offset = self.cursor
            self.cursor += d
            self.align(block)
        plan.data_size = d
        self.align(32)

    def place_file(self, plan: InodePlan, chunk_count: int) -> None:
        size = round_up(plan.inode_size, 8) + 8 * chunk_count
        off = self.take_gap(size)
        if off == 0:
            off = self.cursor
            self.cursor += size
        plan.offset = off
        plan.layout = LAYOUT_CHUNK_BASED
        self.align(32)

    def place_special(self, plan: InodePlan) -> None:
        plan.offset = self.cursor
        plan.layout = LAYOUT_FLAT_PLAIN
        self.cursor += plan.inode_size
        self.align(32)


@dataclass
class MetaLayout:
    """The result of ``plan_layout``: inodes in build order plus the area's end."""

    root: InodePlan
    inodes: list[InodePlan]  # distinct inodes, build order
    inode_count: int  # s_inos: the last index assigned (hard-link names counted)
    end: int  # pre-shift end of the meta area (exclusive)
    block_size: int

    def release(self) -> None:
        """Break the plans' parent and ``.``/``..`` cycles, so that they are freed by
        refcount once dropped: on a large tree, the cyclic collector would otherwise hold
        them, and the whole tree they point at, until a full pass."""
        for plan in self.inodes:
            plan.parent = None
            plan.entries = []
        self.inodes = []


def plan_layout(root: Node, chunk_size: int, block_size: int = BLOCK_SIZE) -> MetaLayout:
    """Number and place every inode of the tree (§15.1-§15.4, pre-shift offsets).

    The hot loop runs once per name of trees of 250k entries, so the common cases are inlined:
    type tests on the mode bits, regular files without xattrs placed without a method call,
    and nlink counted on the way (a later name of a hard-link group adds one to its plan)
    instead of in a pass of its own.
    """
    alloc = _Allocator(block_size)
    counter = 1
    root_plan = InodePlan(root, 1, 2, xattr_body_size(root.xattrs))
    inodes = [root_plan]
    by_node: dict[int, InodePlan] = {}
    take_gap, align_32 = alloc.take_gap, 32
    file_inode = round_up(INODE_SIZE, 8)
    ifmt, ifdir, ifreg, iflnk = 0o170000, S_IFDIR, S_IFREG, S_IFLNK
    dots = [b".", b".."]

    def place(dir_plan: InodePlan) -> list[InodePlan]:
        """Place one directory and its non-directory children; returns its subdirectories."""
        nonlocal counter
        children = dir_plan.node.children or {}
        ordered = sorted(children)
        subdirs: list[InodePlan] = []
        entry_names = ordered[:]
        for dot in dots:  # "." and ".." where sorting would put them (names may sort first)
            insort(entry_names, dot)
        alloc.place_with_tail(dir_plan, dirent_size(entry_names, block_size))
        parent = dir_plan.parent or dir_plan
        entries: list[tuple[bytes, InodePlan]] = []
        for name in ordered:
            node = children[name]
            counter += 1
            kind = node.mode & ifmt
            if kind == ifdir:
                plan = InodePlan(node, counter, 2, xattr_body_size(node.xattrs), dir_plan)
                inodes.append(plan)
                subdirs.append(plan)
                entries.append((name, plan))
                continue
            key = id(node)
            first = by_node.get(key)
            if first is not None:  # a later name of a hard-link group
                first.nlink += 1
                entries.append((name, first))
                continue
            xattrs = node.xattrs
            plan = InodePlan(node, counter, 1, xattr_body_size(xattrs) if xattrs else 0)
            by_node[key] = plan
            inodes.append(plan)
            entries.append((name, plan))
            if kind == ifreg:
                chunks = len(node.chunks)
                if chunks != -(-node.size // chunk_size):
                    raise InvalidInput(
                        f"file of {node.size} bytes has {chunks} chunks, "
                        f"expected {-(-node.size // chunk_size)}"
                    )
                # place_file, inlined
                size = (round_up(plan.inode_size, 8) if xattrs else file_inode) + 8 * chunks
                off = take_gap(size)
                if off == 0:
                    off = alloc.cursor
                    alloc.cursor = off + size
                plan.offset = off
                plan.layout = LAYOUT_CHUNK_BASED
                alloc.cursor = -(-alloc.cursor // align_32) * align_32
            elif kind == iflnk:
                if not node.target:
                    raise InvalidInput("symlink with an empty target")
                alloc.place_with_tail(plan, len(node.target))
            else:
                alloc.place_special(plan)
        dir_plan.nlink = 2 + len(subdirs)
        entries += ((b".", dir_plan), (b"..", parent))
        entries.sort(key=_entry_name)
        dir_plan.entries = entries
        return subdirs

    # Depth-first over directories (§15.1) with an explicit stack: hostile layers may nest
    # directories deeper than Python's recursion limit.
    pending = [root_plan]
    while pending:
        pending.extend(reversed(place(pending.pop())))
    return MetaLayout(root_plan, inodes, counter, alloc.cursor, block_size)


def _entry_name(entry: tuple[bytes, InodePlan]) -> bytes:
    return entry[0]


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
