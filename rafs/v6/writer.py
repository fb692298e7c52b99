"""RAFS v6 bootstrap writer: serialises a tree and its blob table as an EROFS image.

Spec: ../shared/spec/rafs-v6.md §2 (file layout), §3-§4 (superblocks), §6-§8 (device,
blob and prefetch tables), §9-§14 (inodes, xattrs, dirents, chunk indexes, chunk table),
§15 (build order, META shift), §23 (writer checklist). The placement arithmetic (the gap
allocator, the chunk format word) is ``rafs.v6.layout``'s; this module walks the tree in
build order and writes each inode where the allocator places it.
"""

from __future__ import annotations

import os
import sys
from bisect import insort
from collections.abc import Callable, Iterator
from functools import partial
from itertools import repeat
from operator import attrgetter
from stat import S_IFDIR, S_IFLNK, S_IFREG
from typing import Any, BinaryIO

from rafs import codec, sbflags
from rafs.blob.ondisk import BlobFeature
from rafs.errors import InvalidInput, Unsupported
from rafs.model import FILE_TYPE_MASK, BlobInfo, Bootstrap, Chunk, Node, lookup, split_path
from rafs.v6 import ondisk as d
from rafs.v6.layout import INODE_SIZE, Allocator, chunk_format


def write_bootstrap(
    out: BinaryIO, bs: Bootstrap, await_blobs: Callable[[], None] | None = None
) -> None:
    """Write ``bs`` as a RAFS v6 bootstrap; bs.blobs gives the blob-table order."""
    for part in bootstrap_parts(bs, await_blobs)[1]:
        out.write(part)


def build_bootstrap(bs: Bootstrap, await_blobs: Callable[[], None] | None = None) -> bytes:
    """The bootstrap's bytes. ``await_blobs``, if given, is called before any BlobInfo field
    is read (the tree, its chunks and the blobs' identities are used before): a converter
    finishes its blobs meanwhile, so their ids need not be known when the layout starts."""
    return b"".join(bootstrap_parts(bs, await_blobs)[1])


def bootstrap_parts(
    bs: Bootstrap, await_blobs: Callable[[], None] | None = None, release_tree: bool = False
) -> tuple[int, Iterator[bytearray]]:
    """The bootstrap's size and its bytes as consecutive parts: everything up to the chunk
    table, made before this returns, then the chunk table in slices, packed as they are
    asked for.

    Parts, so that none is copied into another (the first is tens of MB on a tree of 250k
    entries), so that a consumer compressing one overlaps the packing of the next, and so
    that each can be freed once it is written out.

    ``release_tree``: for a caller done with the tree, every directory is emptied once its
    entries are written, so that the tree is freed as the bootstrap grows rather than held
    beside all of it (on a 250k-entry tree, a fifth of a conversion's peak memory)."""
    area, table_size, pack_table = _build(bs, await_blobs, release_tree)
    return len(area) + table_size, _parts([area], pack_table)


def _parts(
    area: list[bytearray], pack_table: Callable[[], Iterator[bytearray]]
) -> Iterator[bytearray]:
    yield area.pop()  # not kept here: the consumer frees it once it is written out
    yield from pack_table()


def _build(
    bs: Bootstrap, await_blobs: Callable[[], None] | None, release_tree: bool = False
) -> tuple[bytearray, int, Callable[[], Iterator[bytearray]]]:
    """Everything up to the chunk table (the superblock included), the chunk table's size,
    and what packs the chunk table."""
    blobs = _referenced_in_order(bs)
    blob_index = {id(b): k for k, b in enumerate(blobs)}
    n = len(blobs)
    bt_offset = d.round_up(d.DEVT_OFFSET + 128 * n, d.BLOCK_SIZE)
    prefetch = _prefetch_nodes(bs) if n else []
    p = len(prefetch)
    # The tables before META are sized by n and p alone, so the shift is known before the
    # tree is laid out and every inode is written where it lands (§15.5). Pre-shift offsets
    # put the root at one block, so an inode's nid is its pre-shift offset / 32.
    meta = d.round_up(bt_offset + 256 * n + 4 * p, d.BLOCK_SIZE) if n else 0
    written = _MetaWriter(bs.chunk_size, meta, blob_index, prefetch, release_tree).write(bs.root)
    image = written.area
    inode_count = written.inode_count
    prefetch_nids = [written.offsets[id(node)] // 32 for node in prefetch]
    root_nid = written.offsets[id(bs.root)] // 32
    records, file_offsets = written.chunk_records()
    record_count = len(records)
    del written
    chunk_table_offset = len(image)
    table_size = d.round_up(d.CHUNK_RECORD.size * record_count, d.BLOCK_SIZE)

    if await_blobs is not None:
        await_blobs()
    _check_blobs(bs, blobs)
    # Block 0 and the tables between it and META.
    slots, total_blocks = _device_slots(blobs, len(image) + table_size)
    image[d.DEVT_OFFSET : d.DEVT_OFFSET + len(slots)] = slots
    for k, blob in enumerate(blobs):
        image[bt_offset + 256 * k : bt_offset + 256 * (k + 1)] = _blob_entry(blob, k, bs)
    prefetch_offset = bt_offset + 256 * n
    for i, prefetch_nid in enumerate(prefetch_nids):
        image[prefetch_offset + 4 * i : prefetch_offset + 4 * i + 4] = prefetch_nid.to_bytes(
            4, "little"
        )

    flags = _superblock_flags(bs, blobs)
    sb = d.SUPERBLOCK.pack(
        d.EROFS_MAGIC, 0, d.FEATURE_COMPAT_RAFS_V6, d.BLOCK_BITS, 0, d.ROOT_NID,
        inode_count, 0, 0, total_blocks, meta // d.BLOCK_SIZE, 0, bytes(16), bytes(16),
        d.FEATURE_INCOMPAT, 0, n, d.DEVT_SLOT_OFFSET, bytes(38),
    )  # fmt: skip
    ext = d.EXT_SUPERBLOCK.pack(
        flags, bt_offset, 256 * n, bs.chunk_size, chunk_table_offset, 80 * record_count,
        prefetch_offset if p else 0, 4 * p, 0, bytes(200),
    )  # fmt: skip
    image[d.SB_OFFSET : d.SB_OFFSET + 128] = sb
    image[d.EXT_SB_OFFSET : d.EXT_SB_OFFSET + 256] = ext
    if root_nid != d.ROOT_NID:
        raise AssertionError(f"root landed at nid {root_nid}")
    return image, table_size, partial(_pack_records, records, file_offsets, blob_index)


def _referenced_in_order(bs: Bootstrap) -> list[BlobInfo]:
    """The blob table: the blobs the tree references, in ``bs.blobs`` order.

    The walk stops once every listed blob is seen, which in a conversion is early (a blob
    nothing references is rare): a chunk of a blob not in the list is refused where the
    layout meets it (_unknown_blob)."""
    listed = {id(b) for b in bs.blobs}  # by identity (eq=False)
    used: set[int] = set()
    found = 0
    stack = [bs.root]
    while stack and found < len(listed):
        children = stack.pop().children
        assert children is not None  # only directories are stacked
        for child in children.values():
            if child.children is not None:
                stack.append(child)
                continue
            for chunk in child.chunks:
                key = id(chunk.blob)
                if key not in used:
                    used.add(key)
                    found += key in listed
    order = [b for b in bs.blobs if id(b) in used]
    if len(order) > d.MAX_BLOBS:
        raise Unsupported(f"{len(order)} blobs referenced; RAFS v6 allows {d.MAX_BLOBS}")
    return order


def _check_blobs(bs: Bootstrap, order: list[BlobInfo]) -> None:
    ids = [b.blob_id for b in order]
    if len(set(ids)) != len(ids):
        raise InvalidInput("two different blobs share one blob id")
    for b in order:
        if len(b.blob_id) != 64 or not b.blob_id.isascii():
            raise InvalidInput(f"blob id {b.blob_id!r} is not a 64-character id")
        if b.chunk_size != bs.chunk_size:
            raise InvalidInput(
                f"blob {b.blob_id[:12]} has chunk size {b.chunk_size:#x}, image {bs.chunk_size:#x}"
            )
        if b.uncompressed_size == 0 or b.uncompressed_size % d.BLOCK_SIZE:
            raise InvalidInput(f"blob {b.blob_id[:12]} has uncompressed size {b.uncompressed_size}")


def _prefetch_nodes(bs: Bootstrap) -> list[Node]:
    """The nodes matched by the prefetch patterns, pattern order; nested patterns dropped."""
    kept: list[list[bytes]] = []
    wanted: list[Node] = []
    for pattern in bs.prefetch:
        parts = split_path(pattern)
        if any(parts[: len(k)] == k for k in kept):
            continue
        kept.append(parts)
        node = lookup(bs.root, pattern)
        if node is not None:
            wanted.append(node)
    return wanted


def _superblock_flags(bs: Bootstrap, blobs: list[BlobInfo]) -> int:
    flags = sbflags.COMPRESSOR_FLAGS[bs.compressor] | sbflags.DIGESTER_FLAGS[bs.digester]
    flags |= sbflags.ENCRYPTION_NONE
    if bs.explicit_uid_gid:
        flags |= sbflags.EXPLICIT_UID_GID
    # Always set, like `nydus-image merge`: without it nydusd answers ENOSYS to getxattr.
    flags |= sbflags.HAS_XATTR
    if blobs and all(b.features & BlobFeature.INLINED_CHUNK_DIGEST for b in blobs):
        flags |= sbflags.INLINED_CHUNK_DIGEST
    return flags


def _device_slots(blobs: list[BlobInfo], bootstrap_size: int) -> tuple[bytes, int]:
    """Device table bytes and Σ blocks; mapped_blkaddr per the flat block-device layout (§6)."""
    out = bytearray()
    pos = bootstrap_size
    total = 0
    for blob in blobs:
        blocks = blob.uncompressed_size // d.BLOCK_SIZE
        mapped = d.round_up(pos, d.MAPPED_BLKADDR_ALIGN) // d.BLOCK_SIZE
        pos = (mapped + blocks) * d.BLOCK_SIZE
        total += blocks
        out += d.DEVICE_SLOT.pack(blob.blob_id.encode(), blocks, mapped, bytes(56))
    return bytes(out), total


def _blob_entry(blob: BlobInfo, index: int, bs: Bootstrap) -> bytes:
    return d.BLOB_ENTRY.pack(
        blob.blob_id.encode(), index, blob.chunk_size, blob.chunk_count,
        codec.COMPRESSOR_ENUM[blob.compressor], codec.DIGESTER_ENUM[blob.digester], blob.features,
        blob.compressed_size, blob.uncompressed_size, blob.toc_size,
        codec.COMPRESSOR_ENUM[blob.ci_compressor], blob.ci_offset, blob.ci_compressed_size,
        blob.ci_uncompressed_size, blob.toc_digest, blob.meta_digest, blob.meta_size, 0, 0,
        bytes(36),
    )  # fmt: skip


def _xattr_bytes(node: Node) -> bytes:
    if not node.xattrs:
        return b""
    out = bytearray(d.XATTR_IBODY_HEADER.pack(0, 0, bytes(7)))
    for name in sorted(node.xattrs):
        value = node.xattrs[name]
        split = d.split_xattr_name(name)
        if split is None:
            raise Unsupported(f"xattr {name.decode(errors='replace')!r} cannot be stored in RAFS")
        index, suffix = split
        if len(suffix) > 255 or len(value) > 65535:
            raise Unsupported(f"xattr {name.decode(errors='replace')!r} is too large")
        entry = d.XATTR_ENTRY.pack(len(suffix), index, len(value)) + suffix + value
        out += entry + bytes(d.round_up(len(entry), 4) - len(entry))
    if (len(out) - 12) // 4 + 1 > 0xFFFF:  # i_xattr_icount is 16 bits (rafs-v6.md §10)
        raise Unsupported(f"xattrs of {len(out)} bytes on one inode do not fit RAFS v6")
    return bytes(out)


_NLINK_AT = 44  # i_nlink's offset in an extended inode (§9.2)
_GROW = 8 << 20
# References to a node named once, as _place_children counts them: its directory's, the loop
# variable's and getrefcount's argument's. So on CPython 3.11-3.13; 3.14 may borrow the
# variable's reference instead, so there (and elsewhere) every node is remembered.
_ONE_NAME_REFS = (
    3 if sys.implementation.name == "cpython" and (3, 11) <= sys.version_info < (3, 14) else -1
)


class _Dir:
    """A directory in build order. Its dirents wait until its subdirectories have their
    offsets (``waiting`` counts those not placed yet): ``targets`` holds, per name, a placed
    inode as ``offset << 3 | file type`` or a ``_Dir`` (subdirectories, ``.`` and ``..``)."""

    __slots__ = ("node", "ino", "parent", "offset", "layout", "data_offset", "data_size",
                 "tail_at", "names", "targets", "waiting")  # fmt: skip
    node: Node
    ino: int
    parent: _Dir | None
    offset: int  # pre-shift, like every offset here
    layout: int
    data_offset: int
    data_size: int
    tail_at: int  # where a FLAT_INLINE tail goes: after the inode and its xattrs
    names: list[bytes]  # sorted, . and .. included
    targets: list[Any]
    waiting: int

    def __init__(self, node: Node, ino: int, parent: _Dir | None) -> None:
        self.node, self.ino, self.parent = node, ino, parent
        self.offset = 0


class _MetaWriter:
    """Lays out the meta area in build order (rafs-v6.md §15) and writes each inode as it is
    placed, into a buffer that grows with the cursor.

    Writing on the way (rather than planning every inode first) keeps no per-inode object
    and reads each node once: on a tree of 250k entries that is most of the bootstrap's
    time and memory. Only directories wait, for their dirents.
    """

    def __init__(
        self,
        chunk_size: int,
        shift: int,
        blob_index: dict[int, int],
        wanted: list[Node],
        release: bool = False,
    ) -> None:
        self.chunk_size, self.shift, self.blob_index = chunk_size, shift, blob_index
        self.release = release  # empty each directory once placed (bootstrap_parts)
        self.alloc = Allocator(d.BLOCK_SIZE)
        self.area = bytearray(shift + _GROW)
        # id(node) -> pre-shift inode offset, of the directories and of the nodes that may
        # have more than one name (_place_children), the ``wanted`` ones among them: held
        # here for the prefetch table, they have a reference more.
        self.offsets: dict[int, int] = {}
        self.wanted = wanted
        self.inode_count = 1
        # The chunk table's records, noted as files are placed (see chunk_records).
        # Per blob (table order), per ci index: the chunk of the last file visited. Lists
        # rather than a map by digest: 8 bytes per chunk instead of ~45.
        self.seen: list[list[Chunk | None]] = [[] for _ in blob_index]
        # (blob number + 1) << 32 | ci index -> offset in the last file visited; only for the
        # chunks some file has at an offset > 0
        self.file_offsets: dict[int, int] = {}

    def write(self, root: Node) -> _MetaWriter:
        pending = [_Dir(root, 1, None)]
        while pending:  # depth-first with a stack: hostile trees nest past the recursion limit
            pending.extend(reversed(self._place_dir(pending.pop())))
        end = d.round_up(self.alloc.cursor + self.shift, d.BLOCK_SIZE)
        self._reserve(end)
        del self.area[end:]
        return self

    def _reserve(self, end: int) -> None:
        area = self.area
        if end > len(area):
            area.extend(bytes(max(end - len(area), _GROW)))

    def _place_dir(self, dir_: _Dir) -> list[_Dir]:
        """Place a directory and its non-directory children, writing all but its dirents;
        returns its subdirectories."""
        node = dir_.node
        children = node.children or {}
        ordered = sorted(children)
        names = ordered[:]
        insort(names, b".")  # "." and ".." where sorting puts them: names may sort first
        insort(names, b"..")
        xattrs = _xattr_bytes(node)
        isize = INODE_SIZE + len(xattrs)
        size = d.dirent_size(names)
        off, data_offset, layout = self.alloc.place_with_tail(isize, size)
        dir_.offset, dir_.layout, dir_.data_offset, dir_.data_size = off, layout, data_offset, size
        dir_.tail_at = off + isize
        offsets = self.offsets
        offsets[id(node)] = off
        subdirs, targets = self._place_children(dir_, children, ordered)
        if self.release:  # the subdirectories are held by their _Dir until placed
            children.clear()
        dir_.names = names
        targets.insert(names.index(b"."), dir_)
        targets.insert(names.index(b".."), dir_.parent or dir_)
        dir_.targets = targets
        self._write_inode(node, off, layout, size, data_offset, dir_.ino, 2 + len(subdirs), xattrs)
        # Dirents as soon as they can be: held until the end, the name and target lists of
        # every directory were a fifth of the writer's peak memory on a 250k-entry tree.
        dir_.waiting = len(subdirs)
        if not subdirs:
            self._write_dirents(dir_)
        parent = dir_.parent
        if parent is not None:
            parent.waiting -= 1
            if not parent.waiting:
                self._write_dirents(parent)
        return subdirs

    def _place_children(
        self, dir_: _Dir, children: dict[bytes, Node], ordered: list[bytes]
    ) -> tuple[list[_Dir], list[Any]]:
        """The hot loop, once per name: regular files without xattrs (nine in ten inodes of
        real images) are placed and written inline, one ``pack_into`` for the inode and one
        per chunk index; a later name of a hard-link group adds one to its inode's nlink.

        Hard links are nodes met under several names. A node held by one directory alone is
        referenced by that directory, the loop variable and getrefcount's argument: only a
        node with more references can have another name, so only those are remembered (a
        map entry per inode was a tenth of the peak memory of a 250k-entry conversion).
        References from outside the tree only make a node remembered needlessly."""
        alloc, area, shift, offsets = self.alloc, self.area, self.shift, self.offsets
        take_gap, reserve = alloc.take_gap, self._reserve
        blob_index, area_end, last_blob, device = self.blob_index, len(area), None, 0
        seen_of, seen = self.seen, []  # seen: the current blob's, set with its device
        one_name_refs, getrefcount = _ONE_NAME_REFS, sys.getrefcount
        chunk_size, block, max_index = self.chunk_size, d.BLOCK_SIZE, d.MAX_CI_INDEX
        pack_inode, pack_index = d.INODE_EXTENDED_S.pack_into, d.CHUNK_INDEX.pack_into
        file_format = d.INODE_EXTENDED | (d.LAYOUT_CHUNK_BASED << 1)
        one_chunk = chunk_format(Node(mode=0o100644), chunk_size)  # <= 1 chunk: the chunk size
        ifmt, ifdir, ifreg, types = FILE_TYPE_MASK, S_IFDIR, S_IFREG, d.DIRENT_TYPES
        no_reserved = bytes(16)
        file_offsets = self.file_offsets
        counter = self.inode_count
        subdirs: list[_Dir] = []
        targets: list[Any] = []
        for name in ordered:
            node = children[name]
            counter += 1
            kind = node.mode & ifmt
            if kind == ifdir:
                sub = _Dir(node, counter, dir_)
                subdirs.append(sub)
                targets.append(sub)
                continue
            # Looked up whatever the count: once an earlier name's directory is released
            # (release_tree), a node's count no longer shows its other names. Every node
            # was made before the walk, so no live node takes the id of a released one.
            first = offsets.get(id(node))
            if first is not None:  # a later name of a hard-link group
                at = first + shift + _NLINK_AT
                area[at : at + 4] = (int.from_bytes(area[at : at + 4], "little") + 1).to_bytes(
                    4, "little"
                )
                targets.append(first << 3 | types[kind])
                continue
            if kind != ifreg or node.xattrs:
                self.inode_count = counter
                off = self._place_other(node, kind)
                area_end = len(area)
                if getrefcount(node) > one_name_refs:
                    offsets[id(node)] = off
                targets.append(off << 3 | types[kind])
                continue
            chunks = node.chunks
            count = len(chunks)
            if count != -(-node.size // chunk_size):
                raise InvalidInput(
                    f"file of {node.size} bytes has {count} chunks, "
                    f"expected {-(-node.size // chunk_size)}"
                )
            if node.uid > 0xFFFFFFFF or node.gid > 0xFFFFFFFF:
                raise Unsupported(f"uid/gid {node.uid}/{node.gid} does not fit 32 bits")
            size = INODE_SIZE + 8 * count
            off = take_gap(size) if alloc.nonempty >> ((size + 31) >> 5) else 0  # a gap fits?
            if off == 0:
                off = alloc.cursor
                alloc.cursor = -(-(off + size) // 32) * 32
            if getrefcount(node) > one_name_refs:
                offsets[id(node)] = off
            targets.append(off << 3 | 1)
            pos = off + shift
            if pos + size > area_end:
                reserve(pos + size)
                area_end = len(area)
            pack_inode(
                area, pos, file_format, 0, node.mode & 0xFFFF, 0, node.size,
                one_chunk if count < 2 else chunk_format(node, chunk_size), counter,
                node.uid, node.gid, node.mtime & 0xFFFFFFFFFFFFFFFF, node.mtime_nsec, 1,
                no_reserved,
            )  # fmt: skip
            if not count:
                continue
            at = pos + INODE_SIZE  # 64: already 8-aligned, no xattrs in between
            file_offset = 0
            for chunk in chunks:
                index, offset = chunk.index, chunk.uncompressed_offset
                if offset % block:
                    raise InvalidInput(
                        f"chunk {index} of blob {chunk.blob.blob_id[:12]} is not 4 KiB aligned"
                    )
                if index > max_index:
                    raise Unsupported(f"chunk index {index} exceeds the RAFS v6 limit")
                # encode_chunk_index, inlined: the ci index split around the device id byte
                if chunk.blob is not last_blob:
                    last_blob = chunk.blob
                    device = blob_index.get(id(last_blob), -1) + 1
                    if not device:
                        raise _unknown_blob()
                    seen = seen_of[device - 1]
                pack_index(area, at, index & 0xFFFF, ((index >> 16) << 8) | device, offset // block)
                at += 8
                # note_chunks, inlined
                digest = chunk.digest
                try:
                    prior = seen[index]
                except IndexError:
                    seen.extend([None] * (index + 1 + len(seen)))  # geometric growth
                    prior = None
                if prior is not chunk:
                    if prior is not None and prior.digest != digest:
                        raise _two_digests(chunk, prior)
                    seen[index] = chunk
                if file_offset or file_offsets:
                    key = device << 32 | index
                    if file_offset or key in file_offsets:
                        file_offsets[key] = file_offset
                file_offset += chunk_size
        self.inode_count = counter
        return subdirs, targets

    def note_chunks(self, node: Node) -> None:
        """A file's chunks into the chunk table's records, in build order."""
        file_offsets = self.file_offsets
        file_offset = 0
        for chunk in node.chunks:
            index = chunk.index
            device = self.blob_index.get(id(chunk.blob), -1) + 1
            if not device:
                raise _unknown_blob()
            seen = self.seen[device - 1]
            if index >= len(seen):
                seen.extend([None] * (index + 1 + len(seen)))
            prior = seen[index]
            if prior is not chunk:
                if prior is not None and prior.digest != chunk.digest:
                    raise _two_digests(chunk, prior)
                seen[index] = chunk
            key = device << 32 | index
            if file_offset or key in file_offsets:
                file_offsets[key] = file_offset
            file_offset += self.chunk_size

    def chunk_records(self) -> tuple[list[Chunk], list[int] | None]:
        """The records of the legacy chunk table (§13): one per distinct chunk (digest, blob,
        ci index), sorted so, with their file offsets (None: all 0).

        A record's file offset is the chunk's offset in the last file visited, as upstream.
        The chunks are collected per blob in ci index order, so one stable sort by digest
        puts a digest stored by two blobs in blob order."""
        chunks = [c for seen in self.seen for c in seen if c is not None]
        self.seen = []
        chunks.sort(key=_DIGEST)
        file_offsets = self.file_offsets
        if not file_offsets:
            return chunks, None
        blob_index = self.blob_index
        return chunks, [
            file_offsets.get((blob_index[id(c.blob)] + 1) << 32 | c.index, 0) for c in chunks
        ]

    def _place_other(self, node: Node, kind: int) -> int:
        """Place and write a symlink, device, fifo, socket or file with xattrs."""
        xattrs = _xattr_bytes(node)
        isize = INODE_SIZE + len(xattrs)
        ino = self.inode_count
        if kind == S_IFREG:
            if len(node.chunks) != -(-node.size // self.chunk_size):
                raise InvalidInput(f"file of {node.size} bytes has {len(node.chunks)} chunks")
            off = self.alloc.place_file(d.round_up(isize, 8) + 8 * len(node.chunks))
            if node.chunks:
                self.note_chunks(node)
            self._write_inode(node, off, d.LAYOUT_CHUNK_BASED, 0, 0, ino, 1, xattrs)
        elif kind == S_IFLNK:
            if not node.target:
                raise InvalidInput("symlink with an empty target")
            size = len(node.target)
            off, data_offset, layout = self.alloc.place_with_tail(isize, size)
            self._write_inode(node, off, layout, size, data_offset, ino, 1, xattrs)
            self._write_data(node.target, layout, data_offset, off + isize)
        else:
            off = self.alloc.place_special(isize)
            self._write_inode(node, off, d.LAYOUT_FLAT_PLAIN, 0, 0, ino, 1, xattrs)
        return off

    def _write_inode(
        self,
        node: Node,
        off: int,
        layout: int,
        size: int,
        data_offset: int,
        ino: int,
        nlink: int,
        xattrs: bytes,
    ) -> None:
        """The inode, its xattrs and (regular files) its chunk indexes; ``size`` and
        ``data_offset`` are those of directory and symlink data."""
        block, shift = d.BLOCK_SIZE, self.shift
        kind = node.mode & FILE_TYPE_MASK
        if kind in (S_IFDIR, S_IFLNK):
            i_u = (data_offset + shift) // block
        elif kind == S_IFREG:
            size, i_u = node.size, chunk_format(node, self.chunk_size)
        elif kind in (0o020000, 0o060000):
            size, i_u = 0, d.encode_rdev(os.major(node.rdev), os.minor(node.rdev))
        else:
            size, i_u = 0, 0
        if node.uid > 0xFFFFFFFF or node.gid > 0xFFFFFFFF:
            raise Unsupported(f"uid/gid {node.uid}/{node.gid} does not fit 32 bits")
        icount = (len(xattrs) - 12) // 4 + 1 if xattrs else 0
        pos = off + shift
        body = pos + INODE_SIZE
        index_at = pos + d.round_up(INODE_SIZE + len(xattrs), 8)
        self._reserve(index_at + 8 * len(node.chunks))
        area = self.area
        d.INODE_EXTENDED_S.pack_into(
            area, pos, d.INODE_EXTENDED | (layout << 1), icount, node.mode & 0xFFFF, 0, size,
            i_u, ino, node.uid, node.gid, node.mtime & 0xFFFFFFFFFFFFFFFF, node.mtime_nsec,
            nlink, bytes(16),
        )  # fmt: skip
        area[body : body + len(xattrs)] = xattrs
        for i, chunk in enumerate(node.chunks):
            if chunk.uncompressed_offset % block:
                raise InvalidInput(
                    f"chunk {chunk.index} of blob {chunk.blob.blob_id[:12]} is not 4 KiB aligned"
                )
            if chunk.index > d.MAX_CI_INDEX:
                raise Unsupported(f"chunk index {chunk.index} exceeds the RAFS v6 limit")
            raw = d.encode_chunk_index(
                self.blob_index[id(chunk.blob)], chunk.index, chunk.uncompressed_offset // block
            )
            area[index_at + 8 * i : index_at + 8 * i + 8] = raw

    def _write_data(
        self, data: bytes | bytearray, layout: int, data_offset: int, tail_at: int
    ) -> None:
        """Directory or symlink data: full blocks at ``data_offset``; the tail right after
        the inode (FLAT_INLINE) or after the full blocks (FLAT_PLAIN)."""
        shift, area = self.shift, self.area
        start = data_offset + shift
        if layout == d.LAYOUT_FLAT_INLINE:
            full = len(data) - len(data) % d.BLOCK_SIZE
            self._reserve(start + full)
            area[start : start + full] = data[:full]
            tail = data[full:]
            area[tail_at + shift : tail_at + shift + len(tail)] = tail
        else:
            self._reserve(start + len(data))
            area[start : start + len(data)] = data

    def _write_dirents(self, dir_: _Dir) -> None:
        """A directory's dirent blocks (§11.3): per block, the headers then the names."""
        block = d.BLOCK_SIZE
        pack = d.DIRENT.pack_into
        names, targets = dir_.names, dir_.targets
        data = bytearray(dir_.data_size)
        count, k, base = len(names), 0, 0
        while k < count:
            used, j = 0, k
            while j < count and used + 12 + len(names[j]) <= block:
                used += 12 + len(names[j])
                j += 1
            at, nameoff = base, 12 * (j - k)
            for i in range(k, j):
                target = targets[i]
                code = target if target.__class__ is int else target.offset << 3 | 2
                pack(data, at, code >> 8, nameoff, code & 7, 0)
                at += 12
                nameoff += len(names[i])
            data[at : base + used] = b"".join(names[k:j])
            k, base = j, base + block
        if base - block + used != dir_.data_size:
            raise AssertionError(f"dirent size {base - block + used} != planned {dir_.data_size}")
        dir_.names = dir_.targets = []  # breaks the . and .. cycles
        self._write_data(data, dir_.layout, dir_.data_offset, dir_.tail_at)


def _unknown_blob() -> InvalidInput:
    return InvalidInput("the tree references blobs missing from the blob list")


def _two_digests(chunk: Chunk, prior: Chunk) -> InvalidInput:
    return InvalidInput(
        f"chunk {chunk.index} of blob {chunk.blob.blob_id[:12] or '(unfinished)'} has two "
        f"digests, {prior.digest.hex()[:16]}… and {chunk.digest.hex()[:16]}…"
    )


def _pack_records(
    chunks: list[Chunk], file_offsets: list[int] | None, blob_index: dict[int, int]
) -> Iterator[bytearray]:
    """The chunk table, a record per chunk, padded to a block: in slices of
    ``_TABLE_SLICE`` records, so that the whole table (20 MB on a 250k-entry image) is
    never held at once."""
    for start in range(0, len(chunks), _TABLE_SLICE):
        part = chunks[start : start + _TABLE_SLICE]
        offsets = None if file_offsets is None else file_offsets[start : start + _TABLE_SLICE]
        table = _pack_slice(part, offsets, blob_index)
        if start + _TABLE_SLICE >= len(chunks):  # the padding of the whole table
            table += bytes(-d.CHUNK_RECORD.size * len(chunks) % d.BLOCK_SIZE)
        yield table


def _pack_slice(
    chunks: list[Chunk], file_offsets: list[int] | None, blob_index: dict[int, int]
) -> bytearray:
    size = d.CHUNK_RECORD.size
    table = bytearray(size * len(chunks))
    pack_into = d.CHUNK_RECORD.pack_into
    compressed_flag, crc_flag = d.CHUNK_FLAG_COMPRESSED, d.CHUNK_FLAG_HAS_CRC32
    at = 0
    offsets = repeat(0) if file_offsets is None else file_offsets
    for chunk, file_offset in zip(chunks, offsets, strict=False):  # offsets may repeat 0
        crc = chunk.crc32
        flags = compressed_flag if chunk.compressed else 0
        if crc is None:
            crc = 0
        else:
            flags |= crc_flag
        pack_into(
            table, at, chunk.digest, blob_index[id(chunk.blob)], flags, chunk.compressed_size,
            chunk.uncompressed_size, chunk.compressed_offset, chunk.uncompressed_offset,
            file_offset, chunk.index, crc,
        )  # fmt: skip
        at += size
    return table


_DIGEST = attrgetter("digest")
_TABLE_SLICE = 16384  # chunk records per part of the table (1.3 MB)
