"""RAFS v5 bootstrap writer.

Two stages. ``plan()`` turns a ``Bootstrap`` into numbers only: indexes, inode numbers,
parents, nlink, child ranges, sizes, blocks, digests, record sizes and offsets, section
offsets and the prefetch table. ``write_bootstrap()`` then packs that plan, one record at a
time. The layout is HEAD's (DFS pre-order records, ``s_inodes_count`` = distinct inode
numbers including the root); ``record_order="index"`` and ``inodes_count=`` reproduce the
pre-2.3 layout of the upstream fixtures.

Choices where upstream leaves room (all readers accept them):

* xattr pairs are written sorted by name bytes (upstream order is random);
* ``i_blocks`` of a regular file is ``ceil(size / 512)``, without the xattr term upstream
  adds, so that nydusd's cached mode accepts files with xattrs (§11 reader invariants);
* ``i_rdev`` is ``node.rdev`` truncated to 32 bits for every type (0 unless the tree says
  otherwise, like a directory build);
* HARDLINK is set on every name of a multi-name regular file (as tar builds do) unless
  ``hardlink_flag=False`` (as directory builds do).

Spec: ../shared/spec/rafs-v5.md §2-§13 (layout, numbering §9.4, digests §12, order §13),
§16 (version differences).
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import BinaryIO, Literal

from rafs import codec
from rafs.blob.ondisk import BlobFeature
from rafs.errors import InvalidInput
from rafs.model import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, BlobInfo, Bootstrap, Chunk, Node
from rafs.v5 import ondisk as od

RecordOrder = Literal["dfs", "index"]

_U32_MAX = 0xFFFF_FFFF
_U64_MAX = 0xFFFF_FFFF_FFFF_FFFF


@dataclass(eq=False, slots=True)
class Slot:
    """One inode record: one name of one node (every hard-link name gets its own slot)."""

    node: Node
    name: bytes
    index: int
    parent: int = 0  # i_parent: the ino of the directory holding this name
    ino: int = 0
    nlink: int = 1
    child_index: int = 0  # directories only
    child_count: int = 0  # directories: children; regular files: chunks
    children: list[Slot] = field(default_factory=list)
    hardlink: bool = False  # one of several names of a regular file
    size: int = 0
    blocks: int = 0
    xattrs: list[tuple[bytes, bytes]] = field(default_factory=list)
    xattr_size: int | None = None  # payload size of the xattr section; None = no section
    digest: bytes = b""
    offset: int = 0
    record_size: int = 0


@dataclass(frozen=True, slots=True)
class Sections:
    """Section starts of §2: prefetch table P, blob table B, extended table E, records I."""

    prefetch: int
    blob: int
    ext_blob: int
    records: int


@dataclass(slots=True)
class Plan:
    slots: list[Slot]  # index order: slots[i].index == i + 1
    order: list[Slot]  # record order in the file
    blobs: list[BlobInfo]  # the blob table
    blob_table: bytes
    prefetch: list[int]  # inode numbers
    sections: Sections
    inodes_count: int
    flags: int
    file_size: int


# --- pure arithmetic -------------------------------------------------------------------


def section_offsets(
    inode_entries: int, prefetch_entries: int, blob_table_size: int, blob_count: int
) -> Sections:
    prefetch = od.SUPERBLOCK_SIZE + od.align8(4 * inode_entries)
    blob = prefetch + od.align8(4 * prefetch_entries)
    ext_blob = blob + blob_table_size
    return Sections(prefetch, blob, ext_blob, ext_blob + od.EXT_BLOB_ENTRY_SIZE * blob_count)


def record_size(name_size: int, symlink_size: int, xattr_size: int | None, chunks: int) -> int:
    """§9.1: inode + padded name + padded target + optional xattr section + chunk infos."""
    size = od.INODE_SIZE + od.align8(name_size) + od.align8(symlink_size)
    if xattr_size is not None:
        size += od.XATTR_HEADER_SIZE + od.align8(xattr_size)
    return size + od.CHUNK_INFO_SIZE * chunks


def dir_size(child_name_sizes: Iterable[int]) -> int:
    """The builder's synthetic directory i_size (§9.3)."""
    total = sum(n + od.DIR_VIRTUAL_ENTRY_SIZE for n in child_name_sizes)
    return 4096 if total == 0 else -(-total // 4096) * 4096


def inode_blocks(size: int, xattr_size: int | None, regular: bool) -> int:
    """512-byte blocks (§9.3); regular files leave out the xattr term (see module doc)."""
    if regular or xattr_size is None:
        return -(-size // 512)
    return -(-(size + od.align8(xattr_size)) // 512)


def chunk_count(size: int, chunk_size: int) -> int:
    return -(-size // chunk_size)


# --- numbering (§9.4) ------------------------------------------------------------------


def number_tree(root: Node) -> list[Slot]:
    """Assign index, ino, parent, nlink and child ranges; returns the slots in index order.

    Each directory's children take consecutive indexes; its subdirectories are numbered
    after all of its children, depth first. A regular file met again under another name
    shares the inode number of its first name in index order.
    """
    if not root.is_dir:
        raise InvalidInput("the root of a bootstrap must be a directory")
    top = Slot(root, b"/", 1, parent=0, ino=od.ROOT_INO)
    slots = [top]
    groups: dict[int, list[Slot]] = {}
    seen_dirs = {id(root)}
    stack = [top]
    while stack:
        parent = stack.pop()
        children = parent.node.children or {}
        names = sorted(children)
        parent.child_index = len(slots) + 1  # set even without children
        parent.child_count = len(names)
        subdirs: list[Slot] = []
        for name in names:
            _check_name(name)
            node = children[name]
            slot = Slot(node, name, len(slots) + 1, parent=parent.ino)
            slots.append(slot)
            parent.children.append(slot)
            if node.is_reg:
                group = groups.setdefault(id(node), [])
                group.append(slot)
                slot.ino = group[0].index
            else:
                # HEAD numbers every non-regular name separately, even for a shared object.
                slot.ino = slot.index
                if node.is_dir:
                    if id(node) in seen_dirs:
                        raise InvalidInput(f"directory object reachable twice (name {name!r})")
                    seen_dirs.add(id(node))
                    subdirs.append(slot)
        parent.nlink = 2 + len(subdirs)
        stack.extend(reversed(subdirs))  # first subdirectory is numbered next, completely
    for group in groups.values():
        for slot in group:
            slot.nlink = len(group)
            slot.hardlink = len(group) > 1
    return slots


def dfs_order(slots: list[Slot]) -> list[Slot]:
    """Depth-first pre-order from the root, children in name order (§13)."""
    order: list[Slot] = []
    stack = [slots[0]]
    while stack:
        slot = stack.pop()
        order.append(slot)
        stack.extend(reversed(slot.children))
    return order


def _check_name(name: bytes) -> None:
    if not 1 <= len(name) <= od.MAX_NAME:
        raise InvalidInput(f"file name of {len(name)} bytes (1-255 allowed): {name[:32]!r}")
    if b"/" in name or b"\0" in name or name in (b".", b".."):
        raise InvalidInput(f"invalid file name {name!r}")


# --- prefetch (§6) ---------------------------------------------------------------------


def prefetch_inos(patterns: Iterable[bytes], root: Slot) -> list[int]:
    """Pattern rules of ``--prefetch-policy fs``, resolved to inode numbers."""
    kept: dict[tuple[bytes, ...], None] = {}  # insertion-ordered set
    for raw in patterns:
        pattern = raw.strip()
        if not pattern.startswith(b"/"):
            continue
        parts = tuple(p for p in pattern.split(b"/") if p not in (b"", b"."))
        if any(parts[:k] in kept for k in range(len(parts) + 1)):
            continue  # equal to, or below, an earlier pattern
        kept[parts] = None
    inos = []
    for parts in kept:
        slot: Slot | None = root
        for part in parts:
            assert slot is not None  # the loop breaks on None
            slot = next((c for c in slot.children if c.name == part), None)
            if slot is None:
                break
        # Upstream never matches empty regular files against patterns.
        if slot is not None and not (slot.node.is_reg and slot.node.size == 0):
            inos.append(slot.ino)
    return inos


# --- validation of the model -----------------------------------------------------------


def _check_bootstrap(bs: Bootstrap) -> None:
    cs = bs.chunk_size
    if cs & (cs - 1) or not MIN_CHUNK_SIZE <= cs <= MAX_CHUNK_SIZE:
        raise InvalidInput(f"chunk size {cs:#x} is not a power of two in [0x1000, 0x1000000]")
    if bs.compressor not in ("none", "lz4_block", "zstd"):
        raise InvalidInput(f"compressor {bs.compressor!r} cannot be written to a v5 bootstrap")
    if bs.digester not in od.DIGESTER_FLAGS:
        raise InvalidInput(f"unknown digester {bs.digester!r}")


def _check_node(node: Node, name: bytes, bs: Bootstrap, blob_index: dict[int, int]) -> None:
    kind = node.kind
    if kind not in od.FILE_TYPES:
        raise InvalidInput(f"{name!r}: unknown file type in mode {node.mode:#o}")
    if bs.explicit_uid_gid and not (0 <= node.uid <= _U32_MAX and 0 <= node.gid <= _U32_MAX):
        raise InvalidInput(f"{name!r}: uid/gid {node.uid}/{node.gid} do not fit 32 bits")
    if not 0 <= node.mtime <= _U64_MAX or not 0 <= node.mtime_nsec <= _U32_MAX:
        raise InvalidInput(f"{name!r}: mtime {node.mtime}.{node.mtime_nsec} out of range")
    if not 0 <= node.mode <= _U32_MAX:
        raise InvalidInput(f"{name!r}: mode {node.mode:#o} out of range")
    for xname, value in node.xattrs.items():
        if not xname.startswith(od.XATTR_PREFIXES) or len(xname) > od.MAX_XATTR_NAME:
            raise InvalidInput(f"{name!r}: xattr name {xname!r} cannot be stored")
        if b"\0" in xname or len(value) > od.MAX_XATTR_VALUE:
            raise InvalidInput(f"{name!r}: xattr {xname!r} is malformed or too large")
    if kind == stat.S_IFLNK and not 1 <= len(node.target) <= od.MAX_SYMLINK:
        raise InvalidInput(f"{name!r}: symlink target of {len(node.target)} bytes")
    if kind != stat.S_IFREG:
        if node.chunks:
            raise InvalidInput(f"{name!r}: only regular files may have chunks")
        return
    if not 0 <= node.size <= _U64_MAX:
        raise InvalidInput(f"{name!r}: size {node.size} out of range")
    expected = chunk_count(node.size, bs.chunk_size)
    if len(node.chunks) != expected or expected > _U32_MAX:
        raise InvalidInput(
            f"{name!r}: {len(node.chunks)} chunks for {node.size} bytes (expected {expected})"
        )
    for k, chunk in enumerate(node.chunks):
        _check_chunk(chunk, k, node.size, name, bs.chunk_size, blob_index)


def _check_chunk(
    chunk: Chunk, k: int, size: int, name: bytes, chunk_size: int, blob_index: dict[int, int]
) -> None:
    where = f"{name!r} chunk {k}"
    if id(chunk.blob) not in blob_index:
        raise InvalidInput(f"{where}: its blob {chunk.blob!r} is not in the blob list")
    want = min(chunk_size, size - k * chunk_size)
    if chunk.uncompressed_size != want:
        raise InvalidInput(f"{where}: uncompressed size {chunk.uncompressed_size} != {want}")
    if len(chunk.digest) != 32:
        raise InvalidInput(f"{where}: digest is {len(chunk.digest)} bytes, not 32")
    if not (
        0 <= chunk.compressed_size <= _U32_MAX
        and 0 <= chunk.index <= _U32_MAX
        and 0 <= chunk.compressed_offset <= _U64_MAX - chunk.compressed_size
        and 0 <= chunk.uncompressed_offset <= _U64_MAX - chunk.uncompressed_size
        and (chunk.crc32 is None or 0 <= chunk.crc32 <= _U32_MAX)
    ):
        raise InvalidInput(f"{where}: a field does not fit its on-disk size")
    blob = chunk.blob
    if blob.chunk_count and (
        chunk.index >= blob.chunk_count
        or chunk.uncompressed_offset + chunk.uncompressed_size > blob.uncompressed_size
        or chunk.compressed_offset + chunk.compressed_size > blob.compressed_size
    ):
        raise InvalidInput(f"{where}: index or offsets outside blob {blob!r}")


def _select_blobs(bs: Bootstrap, slots: list[Slot]) -> list[BlobInfo]:
    """The blobs of ``bs.blobs`` that some chunk references, in ``bs.blobs`` order."""
    used = {id(chunk.blob) for slot in slots for chunk in slot.node.chunks}
    blobs = [b for b in bs.blobs if id(b) in used]
    if len(blobs) > od.MAX_BLOBS:
        raise InvalidInput(f"{len(blobs)} blobs referenced; RAFS v5 allows {od.MAX_BLOBS}")
    for blob in blobs:
        bid = blob.blob_id
        if not bid or not bid.isascii() or "\0" in bid:
            raise InvalidInput(f"blob id {bid!r} cannot be stored (empty, NUL or not ASCII)")
        if blob.features & BlobFeature.V5_NO_EXT_TABLE:
            raise InvalidInput(f"blob {bid}: feature bit 0x80000000 is never written")
        if not (
            0 <= blob.chunk_count <= _U32_MAX
            and 0 <= blob.features <= _U32_MAX
            and 0 <= blob.uncompressed_size <= _U64_MAX
            and 0 <= blob.compressed_size <= _U64_MAX
        ):
            raise InvalidInput(f"blob {bid}: a size or count does not fit the extended table")
        if (blob.compressor, blob.digester, blob.chunk_size) != (
            bs.compressor,
            bs.digester,
            bs.chunk_size,
        ):
            raise InvalidInput(
                f"blob {bid}: compressor/digester/chunk size differ from the bootstrap's"
            )
    return blobs


# --- plan --------------------------------------------------------------------------------


def _digests(slots: list[Slot], digester: str) -> None:
    """§12, bottom-up: children always have larger indexes than their directory."""
    h = partial(codec.digest, digester)
    per_node: dict[int, bytes] = {}
    for slot in reversed(slots):
        node = slot.node
        if node.is_dir:
            slot.digest = h(b"".join(c.digest for c in slot.children))
        elif id(node) in per_node:
            slot.digest = per_node[id(node)]
        else:
            if node.is_reg:
                slot.digest = h(b"".join(c.digest for c in node.chunks))
            elif node.is_symlink:
                slot.digest = h(node.target)
            else:
                slot.digest = h(b"")
            per_node[id(node)] = slot.digest


def plan(bs: Bootstrap, *, record_order: RecordOrder = "dfs") -> Plan:
    """Everything ``write_bootstrap`` needs, as numbers and small byte strings."""
    if record_order not in ("dfs", "index"):
        raise ValueError(f"record_order must be 'dfs' or 'index', not {record_order!r}")
    _check_bootstrap(bs)
    slots = number_tree(bs.root)
    blobs = _select_blobs(bs, slots)
    blob_index = {id(b): i for i, b in enumerate(blobs)}
    checked: set[int] = set()
    for slot in slots:
        node = slot.node
        if id(node) not in checked:
            checked.add(id(node))
            _check_node(node, slot.name, bs, blob_index)
        slot.xattrs = sorted(node.xattrs.items())
        slot.xattr_size = od.xattr_payload_size(slot.xattrs) if slot.xattrs else None
        if node.is_dir:
            slot.size = dir_size(len(c.name) for c in slot.children)
        elif node.is_reg:
            slot.size = node.size
            slot.child_count = len(node.chunks)
        elif node.is_symlink:
            slot.size = len(node.target)
        slot.blocks = inode_blocks(slot.size, slot.xattr_size, node.is_reg)
        symlink_size = len(node.target) if node.is_symlink else 0
        chunks = len(node.chunks) if node.is_reg else 0
        slot.record_size = record_size(len(slot.name), symlink_size, slot.xattr_size, chunks)
    _digests(slots, bs.digester)

    prefetch = prefetch_inos(bs.prefetch, slots[0])
    blob_table = od.pack_blob_table(od.BlobTableEntry(0, 0, b.blob_id) for b in blobs)
    sections = section_offsets(len(slots), len(prefetch), len(blob_table), len(blobs))
    order = dfs_order(slots) if record_order == "dfs" else slots
    offset = sections.records
    for slot in order:
        slot.offset = offset
        offset += slot.record_size
    if offset > od.MAX_BOOTSTRAP_SIZE:
        raise InvalidInput(f"bootstrap would be {offset} bytes, over the 2 GiB limit")
    has_xattr = any(slot.xattrs for slot in slots)
    return Plan(
        slots=slots,
        order=order,
        blobs=blobs,
        blob_table=blob_table,
        prefetch=prefetch,
        sections=sections,
        inodes_count=len({slot.ino for slot in slots}),
        flags=od.encode_sb_flags(bs.compressor, bs.digester, bs.explicit_uid_gid, has_xattr),
        file_size=offset,
    )


# --- packing -----------------------------------------------------------------------------


def _pack_record(
    slot: Slot, bs: Bootstrap, blob_index: dict[int, int], hardlink_flag: bool
) -> bytes:
    node = slot.node
    flags = 0
    if node.is_symlink:
        flags |= od.INODE_SYMLINK
    if slot.hardlink and hardlink_flag:
        flags |= od.INODE_HARDLINK
    if slot.xattrs:
        flags |= od.INODE_XATTR
    target = node.target if node.is_symlink else b""
    inode = od.Inode(
        i_digest=slot.digest,
        i_parent=slot.parent,
        i_ino=slot.ino,
        i_uid=node.uid if bs.explicit_uid_gid else 0,
        i_gid=node.gid if bs.explicit_uid_gid else 0,
        i_mode=node.mode,
        i_size=slot.size,
        i_blocks=slot.blocks,
        i_flags=flags,
        i_nlink=slot.nlink,
        i_child_index=slot.child_index if node.is_dir else 0,
        i_child_count=slot.child_count,
        i_name_size=len(slot.name),
        i_symlink_size=len(target),
        i_rdev=node.rdev & _U32_MAX,
        i_mtime_nsec=node.mtime_nsec,
        i_mtime=node.mtime,
    )
    parts = [inode.pack(), od.pad8(slot.name), od.pad8(target)]
    if slot.xattrs:
        parts.append(od.pack_xattrs(slot.xattrs))
    if node.is_reg:
        for k, chunk in enumerate(node.chunks):
            flags = od.CHUNK_COMPRESSED if chunk.compressed else 0
            if chunk.crc32 is not None:
                flags |= od.CHUNK_HAS_CRC32
            info = od.ChunkInfo(
                block_id=chunk.digest,
                blob_index=blob_index[id(chunk.blob)],
                flags=flags,
                compressed_size=chunk.compressed_size,
                uncompressed_size=chunk.uncompressed_size,
                compressed_offset=chunk.compressed_offset,
                uncompressed_offset=chunk.uncompressed_offset,
                file_offset=k * bs.chunk_size,
                index=chunk.index,
                crc32=chunk.crc32 or 0,
            )
            parts.append(info.pack())
    record = b"".join(parts)
    if len(record) != slot.record_size:
        raise AssertionError(f"record {slot.index}: {len(record)} bytes, not {slot.record_size}")
    return record


def write_bootstrap(
    out: BinaryIO,
    bs: Bootstrap,
    *,
    record_order: RecordOrder = "dfs",
    inodes_count: int | None = None,
    hardlink_flag: bool = True,
) -> None:
    """Write ``bs`` as a RAFS v5 bootstrap.

    ``record_order="index"`` and ``inodes_count`` (stored verbatim in ``s_inodes_count``)
    reproduce pre-2.3 files; ``hardlink_flag=False`` leaves HARDLINK clear as directory
    builds do. Raises InvalidInput when the tree cannot be represented.
    """
    p = plan(bs, record_order=record_order)
    if inodes_count is not None and not 0 <= inodes_count <= len(p.slots):
        raise ValueError(f"inodes_count {inodes_count} outside [0, {len(p.slots)}]")
    sb = od.Superblock(
        s_block_size=bs.chunk_size,
        s_flags=p.flags,
        s_inodes_count=p.inodes_count if inodes_count is None else inodes_count,
        s_prefetch_table_offset=p.sections.prefetch,
        s_blob_table_offset=p.sections.blob,
        s_inode_table_entries=len(p.slots),
        s_prefetch_table_entries=len(p.prefetch),
        s_blob_table_size=len(p.blob_table),
        s_extended_blob_table_entries=len(p.blobs),
        s_extended_blob_table_offset=p.sections.ext_blob,
    )
    out.write(sb.pack())
    out.write(od.pack_u32_table(slot.offset >> 3 for slot in p.slots))
    out.write(od.pack_u32_table(p.prefetch))
    out.write(p.blob_table)
    for blob in p.blobs:
        entry = od.ExtBlobEntry(
            chunk_count=blob.chunk_count,
            features=blob.features,
            uncompressed_size=blob.uncompressed_size,
            compressed_size=blob.compressed_size,
        )
        out.write(entry.pack())
    blob_index = {id(b): i for i, b in enumerate(p.blobs)}
    for slot in p.order:
        out.write(_pack_record(slot, bs, blob_index, hardlink_flag))
