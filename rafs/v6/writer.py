"""RAFS v6 bootstrap writer: serialises a tree and its blob table as an EROFS image.

Spec: ../shared/spec/rafs-v6.md §2 (file layout), §3-§4 (superblocks), §6-§8 (device,
blob and prefetch tables), §9-§14 (inodes, xattrs, dirents, chunk indexes, chunk table),
§15.5 (META shift), §23 (writer checklist). Layout decisions come from ``rafs.v6.layout``;
this module only turns them into bytes.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from functools import partial
from typing import BinaryIO

from rafs import codec, sbflags
from rafs.blob.ondisk import BlobFeature
from rafs.errors import InvalidInput, Unsupported
from rafs.model import BlobInfo, Bootstrap, Chunk, Node, lookup, nodes, split_path
from rafs.v6 import ondisk as d
from rafs.v6.layout import INODE_SIZE, InodePlan, MetaLayout, chunk_format, plan_layout


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
    bs: Bootstrap, await_blobs: Callable[[], None] | None = None
) -> tuple[int, Iterator[bytearray]]:
    """The bootstrap's size and its bytes as consecutive parts: everything up to the chunk
    table, made before this returns, then the chunk table, packed when it is asked for.

    Two parts, so that neither is copied into the other (each is tens of MB on a tree of
    250k entries), and so that a consumer compressing the first overlaps the packing of the
    second."""
    blobs = _referenced_in_order(bs)
    layout = plan_layout(bs.root, bs.chunk_size)
    try:
        area, table_size, pack_table = _build(bs, blobs, layout, await_blobs)
    finally:
        layout.release()
    return len(area) + table_size, _parts(area, pack_table)


def _parts(area: bytearray, pack_table: Callable[[], bytearray]) -> Iterator[bytearray]:
    yield area
    yield pack_table()


def _build(
    bs: Bootstrap,
    blobs: list[BlobInfo],
    layout: MetaLayout,
    await_blobs: Callable[[], None] | None,
) -> tuple[bytearray, int, Callable[[], bytearray]]:
    """Everything up to the chunk table (the superblock included), the chunk table's size,
    and what packs the chunk table."""
    blob_index = {id(b): k for k, b in enumerate(blobs)}

    n = len(blobs)
    bt_offset = d.round_up(d.DEVT_OFFSET + 128 * n, d.BLOCK_SIZE)
    prefetch_nids_pre = _prefetch_plans(bs, layout) if n else []
    p = len(prefetch_nids_pre)
    meta = d.round_up(bt_offset + 256 * n + 4 * p, d.BLOCK_SIZE) if n else 0
    shift = meta  # the root was placed at 4096 and lands at META + 4096 (nid 128)

    def nid(plan: InodePlan) -> int:
        return (plan.offset + shift - meta) // 32

    prefetch_nids = [nid(plan) for plan in prefetch_nids_pre]
    root_nid, inode_count = nid(layout.root), layout.inode_count
    files = [plan.node for plan in layout.inodes if plan.node.chunks]  # build order
    area = bytearray(d.round_up(layout.end + shift, d.BLOCK_SIZE))
    has_xattr = _write_inodes(area, layout, shift, bs.chunk_size, blob_index, nid)
    layout.release()  # the plans are done with: the chunk table is the other half of the peak
    chunk_table_offset = len(area)
    records, record_count = _chunk_records(files, blob_index, bs.chunk_size)
    del files
    table_size = d.round_up(d.CHUNK_RECORD.size * record_count, d.BLOCK_SIZE)
    image = area

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

    flags = _superblock_flags(bs, blobs, has_xattr)
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
    return image, table_size, partial(_pack_records, records, record_count, blob_index)


def _referenced_in_order(bs: Bootstrap) -> list[BlobInfo]:
    """The blob table: the blobs the tree references, in ``bs.blobs`` order."""
    used = {id(c.blob) for node in nodes(bs.root) for c in node.chunks}
    order = [b for b in bs.blobs if id(b) in used]
    missing = used - {id(b) for b in order}
    if missing:
        raise InvalidInput("the tree references blobs missing from the blob list")
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


def _prefetch_plans(bs: Bootstrap, layout: MetaLayout) -> list[InodePlan]:
    """Inodes matched by the prefetch patterns, pattern order; nested patterns dropped."""
    kept: list[list[bytes]] = []
    wanted: list[int] = []  # ids of the matched nodes
    for pattern in bs.prefetch:
        parts = split_path(pattern)
        if any(parts[: len(k)] == k for k in kept):
            continue
        kept.append(parts)
        node = lookup(bs.root, pattern)
        if node is not None:
            wanted.append(id(node))
    if not wanted:
        return []
    found = set(wanted)
    by_node = {id(p.node): p for p in layout.inodes if id(p.node) in found}
    return [by_node[key] for key in wanted]


def _superblock_flags(bs: Bootstrap, blobs: list[BlobInfo], has_xattr: bool) -> int:
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


def _write_inodes(
    area: bytearray,
    layout: MetaLayout,
    shift: int,
    chunk_size: int,
    blob_index: dict[int, int],
    nid,
) -> bool:
    """Every inode into ``area``; True if any has xattrs.

    Regular files without xattrs, nine in ten inodes of real images, are written here in one
    ``pack_into`` for the inode and one per chunk index; the rest go through ``_write_inode``.
    """
    has_xattr = False
    pack_inode = d.INODE_EXTENDED_S.pack_into
    pack_index = d.CHUNK_INDEX.pack_into
    file_format = d.INODE_EXTENDED | (d.LAYOUT_CHUNK_BASED << 1)
    one_chunk = chunk_format(Node(mode=0o100644), chunk_size)  # <= 1 chunk: the chunk size
    block, max_index, no_reserved = d.BLOCK_SIZE, d.MAX_CI_INDEX, bytes(16)
    for plan in layout.inodes:
        node = plan.node
        if node.mode & 0o170000 != 0o100000 or node.xattrs:
            has_xattr |= bool(node.xattrs)
            _write_inode(area, plan, shift, chunk_size, blob_index, nid)
            continue
        if node.uid > 0xFFFFFFFF or node.gid > 0xFFFFFFFF:
            raise Unsupported(f"uid/gid {node.uid}/{node.gid} does not fit 32 bits")
        chunks = node.chunks
        pos = plan.offset + shift
        pack_inode(
            area, pos, file_format, 0, node.mode & 0xFFFF, 0, node.size,
            one_chunk if len(chunks) < 2 else chunk_format(node, chunk_size), plan.ino,
            node.uid, node.gid, node.mtime & 0xFFFFFFFFFFFFFFFF, node.mtime_nsec, plan.nlink,
            no_reserved,
        )  # fmt: skip
        at = pos + INODE_SIZE  # 64: already 8-aligned, no xattrs in between
        for chunk in chunks:
            index, offset = chunk.index, chunk.uncompressed_offset
            if offset % block:
                raise InvalidInput(
                    f"chunk {index} of blob {chunk.blob.blob_id[:12]} is not 4 KiB aligned"
                )
            if index > max_index:
                raise Unsupported(f"chunk index {index} exceeds the RAFS v6 limit")
            # encode_chunk_index, inlined: the ci index split around the device id byte
            device = blob_index[id(chunk.blob)] + 1
            pack_index(area, at, index & 0xFFFF, ((index >> 16) << 8) | device, offset // block)
            at += 8
    return has_xattr


def _write_inode(
    area: bytearray,
    plan: InodePlan,
    shift: int,
    chunk_size: int,
    blob_index: dict[int, int],
    nid,
) -> None:
    node = plan.node
    block = d.BLOCK_SIZE
    pos = plan.offset + shift
    xattrs = _xattr_bytes(node)
    icount = (len(xattrs) - 12) // 4 + 1 if xattrs else 0
    data_blk = (plan.data_offset + shift) // block
    if node.is_dir or node.is_symlink:
        size, i_u = plan.data_size, data_blk
    elif node.is_reg:
        size, i_u = node.size, chunk_format(node, chunk_size)
    elif node.kind in (0o020000, 0o060000):
        size, i_u = 0, d.encode_rdev(os.major(node.rdev), os.minor(node.rdev))
    else:
        size, i_u = 0, 0
    if node.uid > 0xFFFFFFFF or node.gid > 0xFFFFFFFF:
        raise Unsupported(f"uid/gid {node.uid}/{node.gid} does not fit 32 bits")
    fmt = d.INODE_EXTENDED | (plan.layout << 1)
    inode = d.INODE_EXTENDED_S.pack(
        fmt, icount, node.mode & 0xFFFF, 0, size, i_u, plan.ino, node.uid, node.gid,
        node.mtime & 0xFFFFFFFFFFFFFFFF, node.mtime_nsec, plan.nlink, bytes(16),
    )  # fmt: skip
    area[pos : pos + INODE_SIZE] = inode
    body = pos + INODE_SIZE
    area[body : body + len(xattrs)] = xattrs
    tail_pos = body + len(xattrs)

    if node.is_reg:
        at = d.round_up(tail_pos - pos, 8) + pos
        for i, chunk in enumerate(node.chunks):
            if chunk.uncompressed_offset % block:
                raise InvalidInput(
                    f"chunk {chunk.index} of blob {chunk.blob.blob_id[:12]} is not 4 KiB aligned"
                )
            if chunk.index > d.MAX_CI_INDEX:
                raise Unsupported(f"chunk index {chunk.index} exceeds the RAFS v6 limit")
            raw = d.encode_chunk_index(
                blob_index[id(chunk.blob)], chunk.index, chunk.uncompressed_offset // block
            )
            area[at + 8 * i : at + 8 * i + 8] = raw
        return
    if node.is_dir:
        data = _dirent_blocks(plan, nid)
    elif node.is_symlink:
        data = node.target
    else:
        return
    full = plan.data_size - plan.data_size % block if plan.layout == d.LAYOUT_FLAT_INLINE else None
    if full is None:  # FLAT_PLAIN: everything at the data blocks
        start = plan.data_offset + shift
        area[start : start + len(data)] = data
    else:
        start = plan.data_offset + shift
        area[start : start + full] = data[:full]
        tail = data[full:]
        area[tail_pos : tail_pos + len(tail)] = tail


def _dirent_blocks(plan: InodePlan, nid) -> bytes:
    """Dirent bytes of a directory, i_size long (§11.3): headers then names, per block."""
    block = d.BLOCK_SIZE
    out = bytearray()
    group: list[tuple[bytes, InodePlan]] = []
    used = 0

    def flush(final: bool) -> None:
        nameoff = 12 * len(group)
        headers = bytearray()
        names = bytearray()
        for name, target in group:
            ftype = d.DIRENT_TYPES[target.node.kind]
            headers += d.DIRENT.pack(nid(target), nameoff + len(names), ftype, 0)
            names += name
        chunk = headers + names
        if not final:
            chunk += bytes(block - len(chunk))
        out.extend(chunk)

    for name, target in plan.entries:
        need = 12 + len(name)
        if used + need > block:
            flush(False)
            group, used = [], 0
        group.append((name, target))
        used += need
    flush(True)
    if len(out) != plan.data_size:
        raise AssertionError(f"dirent size {len(out)} != planned {plan.data_size}")
    return bytes(out)


def _chunk_records(
    files: list[Node], blob_index: dict[int, int], chunk_size: int
) -> tuple[Iterator[tuple[Chunk, int]], int]:
    """The records of the legacy chunk table (§13), lazily, and their count: one record per
    distinct chunk (digest, blob, ci index), sorted so, over the files in build order.

    A record's file offset is the chunk's offset in the last file visited, as upstream. Keyed
    by the digest alone (the chunk's own bytes object: no key to build) while no digest is
    stored twice, which a conversion never does (stage 2 keeps one copy); the general keying
    takes over otherwise.
    """
    last: dict[bytes, Chunk] = {}
    offsets: dict[bytes, int] = {}  # only where some file has the chunk at a non-zero offset
    for node in files:
        file_offset = 0
        for chunk in node.chunks:
            digest = chunk.digest
            seen = last.get(digest)
            if seen is not None and (seen.blob is not chunk.blob or seen.index != chunk.index):
                return _chunk_records_by_key(files, blob_index, chunk_size)
            last[digest] = chunk
            if file_offset or digest in offsets:
                offsets[digest] = file_offset
            file_offset += chunk_size
    records = ((last[digest], offsets.get(digest, 0)) for digest in sorted(last))
    return records, len(last)


def _chunk_records_by_key(
    files: list[Node], blob_index: dict[int, int], chunk_size: int
) -> tuple[Iterator[tuple[Chunk, int]], int]:
    seen: dict[bytes, tuple[Chunk, int]] = {}
    key_tail = _RECORD_KEY_TAIL.pack
    for node in files:
        file_offset = 0
        for chunk in node.chunks:
            blob = blob_index[id(chunk.blob)]
            seen[chunk.digest + key_tail(blob, chunk.index)] = (chunk, file_offset)
            file_offset += chunk_size
    records = (seen[key] for key in sorted(seen))
    return records, len(seen)


def _pack_records(
    records: Iterator[tuple[Chunk, int]], count: int, blob_index: dict[int, int]
) -> bytearray:
    """The chunk table: ``count`` records, padded to a block."""
    size = d.CHUNK_RECORD.size
    table = bytearray(d.round_up(size * count, d.BLOCK_SIZE))
    pack_into = d.CHUNK_RECORD.pack_into
    compressed_flag, crc_flag = d.CHUNK_FLAG_COMPRESSED, d.CHUNK_FLAG_HAS_CRC32
    at = 0
    for chunk, file_offset in records:
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


_RECORD_KEY_TAIL = struct.Struct(">II")  # blob index, ci index: bytes order = number order
