"""RAFS v5 on-disk structures and constants.

Each structure is declared once, fields in upstream order and with upstream names, and its
packed size is checked when the module is imported. Packing and unpacking are symmetric;
``unpack`` never validates semantics (the reader does), it only refuses short buffers.

Spec: ../shared/spec/rafs-v5.md §1 (constants), §3-§4 (superblock, flags), §5-§6 (u32
tables), §7-§8 (blob tables), §9.2 (inode), §10 (xattrs), §11 (chunk info), §12 (digester).
"""

from __future__ import annotations

import stat
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from rafs.errors import InvalidImage

# Superblock flags (§4): the same bits as v6, declared once in rafs.sbflags; the ones the v5
# modules use are re-exported here.
from rafs.sbflags import (  # noqa: F401
    COMPRESSION_NONE,
    COMPRESSION_ZSTD,
    COMPRESSOR_FLAGS,
    DIGESTER_FLAGS,
    EXPLICIT_UID_GID,
    HAS_XATTR,
    HASH_BLAKE3,
    HASH_SHA256,
)
from rafs.sbflags import KNOWN as KNOWN_SB_FLAGS  # noqa: F401

MAGIC = 0x52414653
VERSION = 0x500
SUPERBLOCK_SIZE = 8192
ALIGNMENT = 8
INODE_SIZE = 128
CHUNK_INFO_SIZE = 80
EXT_BLOB_ENTRY_SIZE = 64
XATTR_HEADER_SIZE = 8  # the u64 payload size in front of the pairs
ROOT_INO = 1
MAX_NAME = 255
MAX_SYMLINK = 0xFFFF
MAX_XATTR_NAME = 255
MAX_XATTR_VALUE = 65536
MAX_BLOBS = 256
MAX_BOOTSTRAP_SIZE = 0x8000_0000
# Inode table values are offsets >> 3; the direct-mode reader rejects these bounds.
MIN_TABLE_VALUE = 1024  # exclusive
MAX_TABLE_VALUE = 1 << 29  # exclusive
DIR_VIRTUAL_ENTRY_SIZE = 8  # per-child term of the synthetic directory size (§9.3)

# The st_mode file types an inode may have.
FILE_TYPES = (
    stat.S_IFDIR,
    stat.S_IFREG,
    stat.S_IFLNK,
    stat.S_IFCHR,
    stat.S_IFBLK,
    stat.S_IFIFO,
    stat.S_IFSOCK,
)

# Inode flags (§9.2).
INODE_SYMLINK = 0x1
INODE_HARDLINK = 0x2
INODE_XATTR = 0x4
INODE_HAS_HOLE = 0x8

# Chunk flags (§11).
CHUNK_COMPRESSED = 0x01
CHUNK_HOLE = 0x02
CHUNK_ENCRYPTED = 0x04
CHUNK_BATCH = 0x08
CHUNK_HAS_CRC32 = 0x10

# Name prefixes an xattr may carry (§10); the ACL names are matched as prefixes too.
XATTR_PREFIXES = (
    b"user.",
    b"security.",
    b"trusted.",
    b"system.posix_acl_access",
    b"system.posix_acl_default",
)


def align8(n: int) -> int:
    return (n + ALIGNMENT - 1) & ~(ALIGNMENT - 1)


def pad8(data: bytes) -> bytes:
    return data + bytes(align8(len(data)) - len(data))


def encode_sb_flags(compressor: str, digester: str, explicit_uid_gid: bool, has_xattr: bool) -> int:
    """Exactly one compression bit and one hash bit, as the builder sets them (§4)."""
    flags = COMPRESSOR_FLAGS[compressor] | DIGESTER_FLAGS[digester]
    if explicit_uid_gid:
        flags |= EXPLICIT_UID_GID
    if has_xattr:
        flags |= HAS_XATTR
    return flags


def decode_compressor(flags: int) -> str:
    """First match wins, LZ4 when no bit is set (§4)."""
    for name, bit in COMPRESSOR_FLAGS.items():
        if flags & bit:
            return name
    return "lz4_block"


def decode_digester(flags: int) -> str:
    if flags & HASH_BLAKE3:
        return "blake3"
    if flags & HASH_SHA256:
        return "sha256"
    return "blake3"


def _layout(fmt: str, size: int) -> struct.Struct:
    layout = struct.Struct(fmt)
    if layout.size != size:
        raise AssertionError(f"struct {fmt!r} is {layout.size} bytes, expected {size}")
    return layout


class _Packed:
    """Shared pack/unpack for the fixed-size structures below (fields in declaration order)."""

    __slots__ = ()
    STRUCT: ClassVar[struct.Struct]
    NAME: ClassVar[str]

    def pack(self) -> bytes:
        # Dataclass slots list the fields in declaration order, i.e. on-disk order.
        names: tuple[str, ...] = self.__slots__
        return self.STRUCT.pack(*(getattr(self, name) for name in names))

    @classmethod
    def unpack(cls, buf: bytes, offset: int = 0):
        if len(buf) - offset < cls.STRUCT.size:
            raise InvalidImage(f"truncated {cls.NAME} at offset {offset}")
        return cls(*cls.STRUCT.unpack_from(buf, offset))


@dataclass(slots=True)
class Superblock(_Packed):
    """§3; the 8112 reserved bytes are written as zeros and ignored on read."""

    s_magic: int = MAGIC
    s_fs_version: int = VERSION
    s_sb_size: int = SUPERBLOCK_SIZE
    s_block_size: int = 0
    s_flags: int = 0
    s_inodes_count: int = 0
    s_inode_table_offset: int = SUPERBLOCK_SIZE
    s_prefetch_table_offset: int = 0
    s_blob_table_offset: int = 0
    s_inode_table_entries: int = 0
    s_prefetch_table_entries: int = 0
    s_blob_table_size: int = 0
    s_extended_blob_table_entries: int = 0
    s_extended_blob_table_offset: int = 0

    STRUCT: ClassVar[struct.Struct] = _layout("<IIIIQQQQQIIIIQ8112x", SUPERBLOCK_SIZE)
    NAME: ClassVar[str] = "superblock"


@dataclass(slots=True)
class Inode(_Packed):
    """§9.2: the fixed 128-byte part of an inode record (8 reserved bytes at the end)."""

    i_digest: bytes = bytes(32)
    i_parent: int = 0
    i_ino: int = 0
    i_uid: int = 0
    i_gid: int = 0
    i_projid: int = 0
    i_mode: int = 0
    i_size: int = 0
    i_blocks: int = 0
    i_flags: int = 0
    i_nlink: int = 0
    i_child_index: int = 0
    i_child_count: int = 0
    i_name_size: int = 0
    i_symlink_size: int = 0
    i_rdev: int = 0
    i_mtime_nsec: int = 0
    i_mtime: int = 0

    STRUCT: ClassVar[struct.Struct] = _layout("<32sQQIIIIQQQIIIHHIIQ8x", INODE_SIZE)
    NAME: ClassVar[str] = "inode"


@dataclass(slots=True)
class ChunkInfo(_Packed):
    """§11."""

    block_id: bytes = bytes(32)
    blob_index: int = 0
    flags: int = 0
    compressed_size: int = 0
    uncompressed_size: int = 0
    compressed_offset: int = 0
    uncompressed_offset: int = 0
    file_offset: int = 0
    index: int = 0
    crc32: int = 0

    STRUCT: ClassVar[struct.Struct] = _layout("<32sIIIIQQQII", CHUNK_INFO_SIZE)
    NAME: ClassVar[str] = "chunk info"


@dataclass(slots=True)
class ExtBlobEntry(_Packed):
    """§8 (40 reserved bytes at the end)."""

    chunk_count: int = 0
    features: int = 0
    uncompressed_size: int = 0
    compressed_size: int = 0

    STRUCT: ClassVar[struct.Struct] = _layout("<IIQQ40x", EXT_BLOB_ENTRY_SIZE)
    NAME: ClassVar[str] = "extended blob entry"


_BLOB_ENTRY_HEAD = _layout("<II", 8)
_U32 = _layout("<I", 4)
_U64 = _layout("<Q", 8)


@dataclass(slots=True)
class BlobTableEntry:
    """§7: variable length (two u32 then the id bytes)."""

    prefetch_offset: int
    prefetch_size: int
    blob_id: str


def pack_u32_table(values: Iterable[int]) -> bytes:
    """Inode or prefetch table: u32 values then zero padding to 8 (§5, §6)."""
    values = list(values)
    return pad8(struct.pack(f"<{len(values)}I", *values))


def unpack_u32_table(buf: bytes, count: int) -> list[int]:
    if len(buf) < 4 * count:
        raise InvalidImage(f"truncated u32 table: {len(buf)} bytes for {count} entries")
    return list(struct.unpack_from(f"<{count}I", buf))


def pack_blob_table(entries: Iterable[BlobTableEntry]) -> bytes:
    """Entries joined by one NUL (none after the last), padded to 8 (§7)."""
    parts = [
        _BLOB_ENTRY_HEAD.pack(e.prefetch_offset, e.prefetch_size) + e.blob_id.encode("ascii")
        for e in entries
    ]
    return pad8(b"\0".join(parts))


def unpack_blob_table(buf: bytes) -> list[BlobTableEntry]:
    """The runtime's algorithm: entries while more than 8 bytes remain (§7)."""
    entries: list[BlobTableEntry] = []
    pos = 0
    while len(buf) - pos > _BLOB_ENTRY_HEAD.size:
        prefetch_offset, prefetch_size = _BLOB_ENTRY_HEAD.unpack_from(buf, pos)
        end = buf.find(b"\0", pos + 8)
        if end < 0:
            end = len(buf)
        raw_id = buf[pos + 8 : end]
        try:
            blob_id = raw_id.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidImage(f"blob table entry {len(entries)}: blob id is not UTF-8") from None
        entries.append(BlobTableEntry(prefetch_offset, prefetch_size, blob_id))
        pos = end + 1
    return entries


def xattr_payload_size(pairs: Iterable[tuple[bytes, bytes]]) -> int:
    """``xattr_size`` of §10: pair headers + names + NULs + values, without padding."""
    return sum(4 + len(name) + 1 + len(value) for name, value in pairs)


def pack_xattrs(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """The whole xattr section: u64 size, pairs, zero padding (§10)."""
    body = b"".join(
        _U32.pack(len(name) + 1 + len(value)) + name + b"\0" + value for name, value in pairs
    )
    return _U64.pack(len(body)) + pad8(body)


def unpack_xattr_size(buf: bytes, offset: int = 0) -> int:
    if len(buf) - offset < XATTR_HEADER_SIZE:
        raise InvalidImage(f"truncated xattr header at offset {offset}")
    return _U64.unpack_from(buf, offset)[0]


def unpack_xattr_pairs(payload: bytes) -> list[tuple[bytes, bytes]]:
    """Split ``xattr_size`` bytes of pairs; every pair must hold a name, a NUL and a value."""
    pairs: list[tuple[bytes, bytes]] = []
    pos = 0
    while pos < len(payload):
        if len(payload) - pos < 4:
            raise InvalidImage(f"xattr pair {len(pairs)}: truncated pair size")
        (pair_size,) = _U32.unpack_from(payload, pos)
        pos += 4
        if pair_size > len(payload) - pos:
            raise InvalidImage(f"xattr pair {len(pairs)}: size {pair_size} runs past the section")
        pair = payload[pos : pos + pair_size]
        nul = pair.find(b"\0")
        if nul <= 0:
            raise InvalidImage(f"xattr pair {len(pairs)}: missing name or NUL separator")
        pairs.append((pair[:nul], pair[nul + 1 :]))
        pos += pair_size
    return pairs
