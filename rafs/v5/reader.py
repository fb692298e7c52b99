"""RAFS v5 bootstrap reader.

``parse()`` reads and validates the raw structures: the superblock, the four tables and
every inode record (in index order, with its offset), applying the load-time checks of both
nydusd modes (direct: per inode through the table; cached: records back to back from the
first one). ``read_bootstrap()`` turns that into the shared tree model: hard-link names
become one ``Node``, chunk infos become ``Chunk`` objects pointing at the ``BlobInfo``
objects of the blob table. Every rule violation raises ``InvalidImage`` with a one-line
message naming the offset, field or inode at fault; features the model cannot hold raise
``Unsupported``.

Deliberate leniency, so that every bootstrap current nydusd loads is accepted: a regular
file's ``i_blocks`` may also include the xattr term that the upstream builder adds (cached
mode rejects such files; direct mode, the default, loads them); an extended blob table
longer than the blob table is accepted; prefetch entries naming no inode are skipped.

Spec: ../shared/spec/rafs-v5.md §2-§12 (layout), §18 (validation), §12 (digests).
"""

from __future__ import annotations

import logging
import stat
from dataclasses import dataclass
from functools import partial
from typing import BinaryIO

from rafs import codec
from rafs.blob import ondisk as blob_od
from rafs.errors import InvalidImage, Unsupported
from rafs.model import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, BlobInfo, Bootstrap, Chunk, Node
from rafs.v5 import ondisk as od

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Tables:
    inode_table: list[int]  # raw values: record offset >> 3, entry k is index k + 1
    prefetch: list[int]  # raw values: inode numbers
    blobs: list[od.BlobTableEntry]
    ext_blobs: list[od.ExtBlobEntry]


@dataclass(slots=True)
class Record:
    """One inode record as stored: the 128-byte inode plus what follows it."""

    index: int
    offset: int
    size: int  # bytes occupied by the whole record
    inode: od.Inode
    name: bytes
    target: bytes
    xattrs: list[tuple[bytes, bytes]] | None  # None when the XATTR flag is clear
    chunks: list[od.ChunkInfo]

    @property
    def kind(self) -> int:
        return stat.S_IFMT(self.inode.i_mode)

    def where(self) -> str:
        return f"inode {self.inode.i_ino} (index {self.index}, offset {self.offset})"


@dataclass(slots=True)
class Parsed:
    superblock: od.Superblock
    file_size: int
    tables: Tables
    records: list[Record]  # index order: records[i].index == i + 1
    record_order: list[int]  # indexes in file order


# --- low-level reads ---------------------------------------------------------------------


def _read_at(f: BinaryIO, offset: int, size: int, what: str) -> bytes:
    if size == 0:
        return b""
    try:
        f.seek(offset)
    except (OverflowError, ValueError):
        raise InvalidImage(f"{what}: offset {offset} is out of range") from None
    data = f.read(size)
    if len(data) != size:
        raise InvalidImage(f"truncated file: {what} needs {size} bytes at offset {offset}")
    return data


def _file_size(f: BinaryIO) -> int:
    return f.seek(0, 2)


# --- superblock and tables (§3-§8, §18) -------------------------------------------------


def read_superblock(f: BinaryIO) -> tuple[od.Superblock, int]:
    """Read and validate the superblock; returns it with the file size."""
    size = _file_size(f)
    f.seek(0)
    head = f.read(od.SUPERBLOCK_SIZE)
    if len(head) < 8 or int.from_bytes(head[:4], "little") != od.MAGIC:
        raise InvalidImage("bad magic at offset 0: not a RAFS v5 bootstrap")
    version = int.from_bytes(head[4:8], "little")
    if version != od.VERSION:
        raise InvalidImage(f"s_fs_version {version:#x} at offset 4 is not 0x500")
    if size <= od.SUPERBLOCK_SIZE:
        raise InvalidImage(f"file of {size} bytes is too small for a RAFS v5 bootstrap")
    sb = od.Superblock.unpack(head)
    if sb.s_sb_size != od.SUPERBLOCK_SIZE:
        raise InvalidImage(f"s_sb_size {sb.s_sb_size} at offset 8 is not 8192")
    if size % od.ALIGNMENT or size > od.MAX_BOOTSTRAP_SIZE:
        raise InvalidImage(f"file size {size} is not a multiple of 8 or exceeds 2 GiB")
    bs = sb.s_block_size
    if bs & (bs - 1) or not MIN_CHUNK_SIZE <= bs <= MAX_CHUNK_SIZE:
        raise InvalidImage(f"s_block_size {bs:#x} at offset 12 is not a valid chunk size")
    if sb.s_flags & ~od.KNOWN_SB_FLAGS:
        raise InvalidImage(
            f"s_flags {sb.s_flags:#x} at offset 16 has unknown bits "
            f"{sb.s_flags & ~od.KNOWN_SB_FLAGS:#x}"
        )
    _check_table_ranges(sb, size)
    return sb, size


def _check_table_ranges(sb: od.Superblock, size: int) -> None:
    """Table placement rules of the superblock loader (§18)."""

    def checked(name: str, start: int, length: int) -> tuple[int, int]:
        if start % od.ALIGNMENT:
            raise InvalidImage(f"{name} offset {start} is not 8-aligned")
        return start, start + length

    def inside(rng: tuple[int, int]) -> bool:
        return rng[0] >= od.SUPERBLOCK_SIZE and rng[1] <= size

    def overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
        return a[0] < b[1] and a[1] > b[0]

    n = sb.s_inode_table_entries
    inodes = checked("inode table", sb.s_inode_table_offset, 4 * n)
    if sb.s_inodes_count > n or not inside(inodes):
        raise InvalidImage(
            f"inode table at {inodes[0]} with {n} entries (s_inodes_count "
            f"{sb.s_inodes_count}) does not fit the file"
        )
    if n == 0:
        raise InvalidImage("s_inode_table_entries is 0: no root inode")
    blobs = checked("blob table", sb.s_blob_table_offset, sb.s_blob_table_size)
    if not inside(blobs) or overlap(blobs, inodes):
        raise InvalidImage(f"blob table [{blobs[0]}, {blobs[1]}) is outside or overlaps")
    ext = checked(
        "extended blob table",
        sb.s_extended_blob_table_offset,
        od.EXT_BLOB_ENTRY_SIZE * sb.s_extended_blob_table_entries,
    )
    has_ext = ext[1] > ext[0]
    if has_ext and (not inside(ext) or overlap(ext, inodes) or overlap(ext, blobs)):
        raise InvalidImage(f"extended blob table [{ext[0]}, {ext[1]}) is outside or overlaps")
    pre = checked("prefetch table", sb.s_prefetch_table_offset, 4 * sb.s_prefetch_table_entries)
    if pre[1] > pre[0] and (
        not inside(pre)
        or overlap(pre, inodes)
        or overlap(pre, blobs)
        or (has_ext and overlap(pre, ext))
    ):
        raise InvalidImage(f"prefetch table [{pre[0]}, {pre[1]}) is outside or overlaps")


def read_tables(f: BinaryIO, sb: od.Superblock) -> Tables:
    """Read the inode, prefetch, blob and extended blob tables (ranges already checked)."""
    n = sb.s_inode_table_entries
    raw = _read_at(f, sb.s_inode_table_offset, 4 * n, "inode table")
    inode_table = od.unpack_u32_table(raw, n)
    for k, value in enumerate(inode_table):
        if not od.MIN_TABLE_VALUE < value < od.MAX_TABLE_VALUE:
            raise InvalidImage(
                f"inode table entry {k} (index {k + 1}) at offset "
                f"{sb.s_inode_table_offset + 4 * k}: value {value} out of range"
            )
    m = sb.s_prefetch_table_entries
    prefetch = od.unpack_u32_table(
        _read_at(f, sb.s_prefetch_table_offset, 4 * m, "prefetch table"), m
    )
    blobs = od.unpack_blob_table(
        _read_at(f, sb.s_blob_table_offset, sb.s_blob_table_size, "blob table")
    )
    k = sb.s_extended_blob_table_entries
    ext_blobs: list[od.ExtBlobEntry] = []
    if k:
        raw = _read_at(
            f, sb.s_extended_blob_table_offset, od.EXT_BLOB_ENTRY_SIZE * k, "extended blob table"
        )
        ext_blobs = [od.ExtBlobEntry.unpack(raw, i * od.EXT_BLOB_ENTRY_SIZE) for i in range(k)]
        if k < len(blobs):
            raise InvalidImage(f"extended blob table has {k} entries for {len(blobs)} blobs")
    return Tables(inode_table, prefetch, blobs, ext_blobs)


# --- inode records (§9-§11, §18) -------------------------------------------------------


def _check_inode(inode: od.Inode, where: str, entries: int) -> None:
    """Direct- and cached-mode rules that need only the 128-byte inode."""
    ino, kind = inode.i_ino, stat.S_IFMT(inode.i_mode)
    if ino == 0 or ino > entries:
        raise InvalidImage(f"{where}: i_ino {ino} outside 1..{entries}")
    if ino != od.ROOT_INO and inode.i_parent == 0:
        raise InvalidImage(f"{where}: i_parent is 0 but the inode is not the root")
    if inode.i_nlink == 0:
        raise InvalidImage(f"{where}: i_nlink is 0")
    if not 1 <= inode.i_name_size <= od.MAX_NAME:
        raise InvalidImage(f"{where}: i_name_size {inode.i_name_size} outside 1..255")
    hardlink = kind == stat.S_IFREG and inode.i_nlink > 1
    if not hardlink and inode.i_parent >= ino:
        raise InvalidImage(f"{where}: i_parent {inode.i_parent} >= i_ino {ino}")
    if kind not in od.FILE_TYPES:
        raise InvalidImage(f"{where}: i_mode {inode.i_mode:#o} has no valid file type")
    if kind == stat.S_IFDIR and inode.i_child_count > 0:
        first, count = inode.i_child_index, inode.i_child_count
        if first <= ino or count >= entries or first + count - 1 > entries:
            raise InvalidImage(
                f"{where}: directory children {first}+{count} invalid for {entries} inodes"
            )
    if kind == stat.S_IFLNK and inode.i_symlink_size == 0:
        raise InvalidImage(f"{where}: symlink with i_symlink_size 0")
    if kind != stat.S_IFLNK and inode.i_symlink_size != 0:
        # Direct mode skips these bytes and cached mode does not: they must be absent.
        raise InvalidImage(f"{where}: i_symlink_size {inode.i_symlink_size} on a non-symlink")


def _check_regular(inode: od.Inode, where: str, chunk_size: int, xattr_size: int) -> None:
    if inode.i_flags & od.INODE_HAS_HOLE:
        raise Unsupported(f"{where}: HAS_HOLE files are not supported")
    size = inode.i_size
    want = -(-size // chunk_size)
    if inode.i_child_count != want:
        raise InvalidImage(
            f"{where}: i_child_count {inode.i_child_count} but {size} bytes need {want} chunks"
        )
    allowed = {0, -(-size // 512), -(-(size + od.align8(xattr_size)) // 512)}
    if inode.i_blocks not in allowed:
        raise InvalidImage(f"{where}: i_blocks {inode.i_blocks} does not match i_size {size}")


def _read_record(
    f: BinaryIO, offset: int, index: int, file_size: int, entries: int, chunk_size: int
) -> Record:
    where = f"inode record at offset {offset} (index {index})"
    if offset + od.INODE_SIZE > file_size:
        raise InvalidImage(f"{where} runs past the end of the file ({file_size} bytes)")
    inode = od.Inode.unpack(_read_at(f, offset, od.INODE_SIZE, where))
    _check_inode(inode, where, entries)
    kind = stat.S_IFMT(inode.i_mode)
    pos = offset + od.INODE_SIZE
    name_end = pos + od.align8(inode.i_name_size)
    target_end = name_end + od.align8(inode.i_symlink_size)
    if target_end > file_size:
        raise InvalidImage(f"{where}: name or symlink target runs past the end of the file")
    body = _read_at(f, pos, target_end - pos, where)
    name = body[: inode.i_name_size]
    target = body[name_end - pos : name_end - pos + inode.i_symlink_size]
    pos = target_end
    xattrs = None
    xattr_size = 0
    if inode.i_flags & od.INODE_XATTR:
        header = _read_at(f, pos, od.XATTR_HEADER_SIZE, f"{where} xattr size")
        xattr_size = od.unpack_xattr_size(header)
        if pos + od.XATTR_HEADER_SIZE + od.align8(xattr_size) > file_size:
            raise InvalidImage(f"{where}: xattr section of {xattr_size} bytes runs past the end")
        payload = _read_at(f, pos + od.XATTR_HEADER_SIZE, xattr_size, f"{where} xattrs")
        try:
            xattrs = od.unpack_xattr_pairs(payload)
        except InvalidImage as e:
            raise InvalidImage(f"{where}: {e}") from None
        pos += od.XATTR_HEADER_SIZE + od.align8(xattr_size)
    chunks: list[od.ChunkInfo] = []
    if kind == stat.S_IFREG:
        _check_regular(inode, where, chunk_size, xattr_size)
        length = od.CHUNK_INFO_SIZE * inode.i_child_count
        if pos + length > file_size:
            raise InvalidImage(f"{where}: {inode.i_child_count} chunk infos run past the end")
        raw = _read_at(f, pos, length, f"{where} chunk infos")
        chunks = [
            od.ChunkInfo.unpack(raw, k * od.CHUNK_INFO_SIZE) for k in range(inode.i_child_count)
        ]
        pos += length
    return Record(index, offset, pos - offset, inode, name, target, xattrs, chunks)


def _read_records(
    f: BinaryIO, sb: od.Superblock, tables: Tables, file_size: int
) -> tuple[list[Record], list[int]]:
    """Records back to back from the first table entry; each must be a table entry."""
    index_of: dict[int, int] = {}
    for k, value in enumerate(tables.inode_table):
        offset = value << 3
        if offset in index_of:
            raise InvalidImage(
                f"inode table entries {index_of[offset]} and {k + 1} both point at {offset}"
            )
        index_of[offset] = k + 1
    entries = sb.s_inode_table_entries
    records: list[Record | None] = [None] * entries
    order: list[int] = []
    pos = tables.inode_table[0] << 3
    for _ in range(entries):
        index = index_of.get(pos)
        if index is None:
            raise InvalidImage(f"inode record at offset {pos} is not in the inode table")
        record = _read_record(f, pos, index, file_size, entries, sb.s_block_size)
        records[index - 1] = record
        order.append(index)
        pos += record.size
    return records, order  # type: ignore[return-value]  # every slot was filled


def _check_tree(records: list[Record]) -> None:
    """Structure the runtime relies on and the tree model needs (§9.4, §9.5)."""
    root = records[0]
    if root.inode.i_ino != od.ROOT_INO or root.kind != stat.S_IFDIR:
        raise InvalidImage(f"{root.where()}: the first index is not the root directory")
    for record in records:
        owner_ino = record.inode.i_ino
        if owner_ino == record.index:
            continue
        owner = records[owner_ino - 1]
        if record.kind == stat.S_IFDIR:
            raise InvalidImage(f"{record.where()}: a directory shares another index's inode")
        if owner.inode.i_ino != owner_ino or owner.kind != record.kind:
            raise InvalidImage(
                f"{record.where()}: hard link to index {owner_ino}, which is not its inode"
            )
    claimed = [False] * (len(records) + 1)
    for record in records:
        if record.kind != stat.S_IFDIR or record.inode.i_child_count == 0:
            continue
        first = record.inode.i_child_index
        previous = b""
        for index in range(first, first + record.inode.i_child_count):
            child = records[index - 1]
            if claimed[index]:
                raise InvalidImage(f"{child.where()}: listed by two directories")
            claimed[index] = True
            if child.inode.i_parent != record.inode.i_ino:
                raise InvalidImage(
                    f"{child.where()}: i_parent {child.inode.i_parent} but listed by "
                    f"directory inode {record.inode.i_ino}"
                )
            name = child.name
            if b"/" in name or b"\0" in name or name in (b".", b".."):
                raise InvalidImage(f"{child.where()}: invalid name {name!r}")
            if name <= previous:
                raise InvalidImage(f"{child.where()}: name {name!r} out of order or duplicated")
            previous = name
    for index in range(2, len(records) + 1):
        if not claimed[index]:
            raise InvalidImage(f"{records[index - 1].where()}: not listed by any directory")


def _check_chunks(records: list[Record], tables: Tables, chunk_size: int) -> None:
    nblobs = len(tables.blobs)
    for record in records:
        size = record.inode.i_size
        for k, info in enumerate(record.chunks):
            where = f"{record.where()} chunk {k}"
            if info.blob_index >= nblobs:
                raise InvalidImage(f"{where}: blob_index {info.blob_index} >= {nblobs} blobs")
            if info.flags & (od.CHUNK_ENCRYPTED | od.CHUNK_BATCH):
                raise Unsupported(f"{where}: encrypted or batch chunk in a v5 bootstrap")
            if info.file_offset != k * chunk_size:
                raise InvalidImage(f"{where}: file_offset {info.file_offset} != {k * chunk_size}")
            want = min(chunk_size, size - k * chunk_size)
            if info.uncompressed_size != want:
                raise InvalidImage(f"{where}: uncompressed_size {info.uncompressed_size} != {want}")
            if info.blob_index < len(tables.ext_blobs):
                ext = tables.ext_blobs[info.blob_index]
                if ext.chunk_count and (
                    info.index >= ext.chunk_count
                    or info.uncompressed_offset + info.uncompressed_size > ext.uncompressed_size
                    or info.compressed_offset + info.compressed_size > ext.compressed_size
                ):
                    raise InvalidImage(f"{where}: index or offsets outside its blob")


def parse(f: BinaryIO) -> Parsed:
    """Read and validate every structure of a RAFS v5 bootstrap."""
    sb, size = read_superblock(f)
    tables = read_tables(f, sb)
    records, order = _read_records(f, sb, tables, size)
    _check_tree(records)
    _check_chunks(records, tables, sb.s_block_size)
    return Parsed(sb, size, tables, records, order)


# --- digests (§12) ---------------------------------------------------------------------


def check_digests(parsed: Parsed) -> None:
    """Recompute every inode digest from the stored chunk ids, targets and child digests."""
    h = partial(codec.digest, od.decode_digester(parsed.superblock.s_flags))
    records = parsed.records
    for record in records:
        inode = record.inode
        if record.kind == stat.S_IFDIR:
            first = inode.i_child_index
            children = records[first - 1 : first - 1 + inode.i_child_count]
            want = h(b"".join(c.inode.i_digest for c in children))
        elif record.kind == stat.S_IFREG:
            want = h(b"".join(c.block_id for c in record.chunks))
        elif record.kind == stat.S_IFLNK:
            want = h(record.target)
        else:
            want = h(b"")
        if inode.i_digest != want:
            raise InvalidImage(
                f"{record.where()}: i_digest {inode.i_digest.hex()} != computed {want.hex()}"
            )


# --- tree --------------------------------------------------------------------------------


def _blob_infos(sb: od.Superblock, tables: Tables) -> list[BlobInfo]:
    compressor = od.decode_compressor(sb.s_flags)
    digester = od.decode_digester(sb.s_flags)
    blobs = []
    for i, entry in enumerate(tables.blobs):
        blob = BlobInfo(
            chunk_size=sb.s_block_size,
            compressor=compressor,
            digester=digester,
            blob_id=entry.blob_id,
        )
        if i < len(tables.ext_blobs):
            ext = tables.ext_blobs[i]
            unknown = ext.features & ~blob_od.KNOWN_V5
            if unknown:
                log.warning("blob %s: dropping unknown feature bits %#x", entry.blob_id, unknown)
            blob.chunk_count = ext.chunk_count
            blob.features = ext.features & blob_od.KNOWN_V5
            blob.uncompressed_size = ext.uncompressed_size
            blob.compressed_size = ext.compressed_size
        blobs.append(blob)
    return blobs


def _node(record: Record, blobs: list[BlobInfo]) -> Node:
    inode = record.inode
    xattrs: dict[bytes, bytes] = {}
    for name, value in record.xattrs or ():
        if name in xattrs:
            raise InvalidImage(f"{record.where()}: xattr {name!r} stored twice")
        xattrs[name] = value
    kind = record.kind
    chunks = [
        Chunk(
            blob=blobs[c.blob_index],
            index=c.index,
            digest=c.block_id,
            compressed_offset=c.compressed_offset,
            compressed_size=c.compressed_size,
            uncompressed_offset=c.uncompressed_offset,
            uncompressed_size=c.uncompressed_size,
            compressed=bool(c.flags & od.CHUNK_COMPRESSED),
            crc32=c.crc32 if c.flags & od.CHUNK_HAS_CRC32 else None,
        )
        for c in record.chunks
    ]
    return Node(
        mode=inode.i_mode,
        uid=inode.i_uid,
        gid=inode.i_gid,
        mtime=inode.i_mtime,
        mtime_nsec=inode.i_mtime_nsec,
        xattrs=xattrs,
        size=inode.i_size if kind == stat.S_IFREG else 0,
        chunks=chunks,
        target=record.target,
        rdev=inode.i_rdev,
        children={} if kind == stat.S_IFDIR else None,
    )


def build_tree(parsed: Parsed, blobs: list[BlobInfo]) -> tuple[Node, list[bytes]]:
    """The root node and the absolute path of every index (list position = index - 1)."""
    records = parsed.records
    nodes: list[Node | None] = [None] * len(records)
    for record in records:  # inode owners first, so other names can share their node
        if record.inode.i_ino == record.index:
            nodes[record.index - 1] = _node(record, blobs)
    for record in records:
        if nodes[record.index - 1] is None:
            nodes[record.index - 1] = nodes[record.inode.i_ino - 1]
    paths = [b"/"] * len(records)
    for record in records:  # a directory's index is below its children's
        if record.kind != stat.S_IFDIR:
            continue
        directory = nodes[record.index - 1]
        base = paths[record.index - 1].rstrip(b"/")
        first = record.inode.i_child_index
        for index in range(first, first + record.inode.i_child_count):
            child = records[index - 1]
            # Every index holds a node by now (owners first, then the names sharing them),
            # and a directory record always has a children dict.
            directory.children[child.name] = nodes[index - 1]  # type: ignore[union-attr,index,assignment]
            paths[index - 1] = base + b"/" + child.name
    return nodes[0], paths  # type: ignore[return-value]


def _prefetch_paths(parsed: Parsed, paths: list[bytes]) -> list[bytes]:
    result = []
    for ino in parsed.tables.prefetch:
        if ino == 0:
            break  # the runtime stops at the first 0
        if ino > len(paths):
            log.warning("prefetch table names inode %d of %d; skipped", ino, len(paths))
            continue
        result.append(paths[ino - 1])
    return result


def read_bootstrap(f: BinaryIO, *, verify_digests: bool = False) -> Bootstrap:
    """Parse, validate and rebuild the tree of a RAFS v5 bootstrap."""
    parsed = parse(f)
    if verify_digests:
        check_digests(parsed)
    sb = parsed.superblock
    blobs = _blob_infos(sb, parsed.tables)
    root, paths = build_tree(parsed, blobs)
    return Bootstrap(
        root=root,
        blobs=blobs,
        version=5,
        chunk_size=sb.s_block_size,
        compressor=od.decode_compressor(sb.s_flags),
        digester=od.decode_digester(sb.s_flags),
        explicit_uid_gid=bool(sb.s_flags & od.EXPLICIT_UID_GID),
        prefetch=_prefetch_paths(parsed, paths),
    )
