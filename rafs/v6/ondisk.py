"""RAFS v6 on-disk structures: constants and the fixed-size records, each declared once.

Spec: ../shared/spec/rafs-v6.md §1 (constants), §3 (EROFS superblock), §4 (extended
superblock), §6 (device slot), §7 (blob table entry), §9 (inodes), §10 (xattrs),
§11 (dirents), §12 (chunk indexes), §13 (legacy chunk table). Little-endian throughout.

File layout (§2)::

    0x0000 ┌──────────────────────────────────────────────┐ block 0
           │ 1024 zero bytes                              │
    0x0400 │ EROFS superblock (128)                       │
    0x0480 │ RAFS extended superblock (256)               │
    0x0580 │ device table: n × 128                        │
           ├──────────────────────────────────────────────┤ BT = align4K(1408 + 128n)
           │ blob table n × 256, prefetch table p × u32   │
           ├──────────────────────────────────────────────┤ META = align4K(BT + 256n + 4p)
           │ one empty block (nids 0..127)                │
           ├──────────────────────────────────────────────┤ META + 4096: root, nid 128
           │ inodes, xattrs, chunk indexes, dirent blocks │
           ├──────────────────────────────────────────────┤ align4K
           │ legacy chunk table m × 80                    │
           └──────────────────────────────────────────────┘ align4K = end of file
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

EROFS_MAGIC = 0xE0F5E1E2
SB_OFFSET = 1024
EXT_SB_OFFSET = 1152
DEVT_SLOT_OFFSET = 11  # in units of 128 bytes: the device table starts at 1408
DEVT_OFFSET = DEVT_SLOT_OFFSET * 128
BLOCK_SIZE = 4096
BLOCK_BITS = 12
ROOT_NID = 128
MAX_BLOBS = 254
MAX_CI_INDEX = 0xFFFFFF
MAPPED_BLKADDR_ALIGN = 0x80000

FEATURE_COMPAT_RAFS_V6 = 0x4000_0000
FEATURE_INCOMPAT_CHUNKED_FILE = 0x4
FEATURE_INCOMPAT_DEVICE_TABLE = 0x8
FEATURE_INCOMPAT = FEATURE_INCOMPAT_CHUNKED_FILE | FEATURE_INCOMPAT_DEVICE_TABLE

# i_format data layouts (§9.1); bit 0 selects the extended (64-byte) inode.
LAYOUT_FLAT_PLAIN = 0
LAYOUT_FLAT_INLINE = 2
LAYOUT_CHUNK_BASED = 4
INODE_EXTENDED = 1
CHUNK_FORMAT_INDEXES = 0x0020

# RAFS superblock flags (§4) are shared with v5: rafs.sbflags.

# Legacy chunk-table record flags (§13).
CHUNK_FLAG_COMPRESSED = 0x1
CHUNK_FLAG_ENCRYPTED = 0x4
CHUNK_FLAG_BATCH = 0x8
CHUNK_FLAG_HAS_CRC32 = 0x10

# Dirent file types (§11.1), keyed by stat.S_IFMT values.
DIRENT_TYPES = {
    0o100000: 1,  # regular
    0o040000: 2,  # directory
    0o020000: 3,  # char device
    0o060000: 4,  # block device
    0o010000: 5,  # fifo
    0o140000: 6,  # socket
    0o120000: 7,  # symlink
}

# Xattr name prefixes (§10): index -> prefix. Indexes 2 and 3 are whole names.
XATTR_PREFIXES = {
    1: b"user.",
    2: b"system.posix_acl_access",
    3: b"system.posix_acl_default",
    4: b"trusted.",
    6: b"security.",
}

# struct layouts -------------------------------------------------------------------------

# EROFS superblock (§3), 128 bytes: magic, checksum, feature_compat, blkszbits, extslots,
# root_nid, inos, build_time, build_time_nsec, blocks, meta_blkaddr, xattr_blkaddr, uuid,
# volume_name, feature_incompat, u, extra_devices, devt_slotoff, 38 reserved.
SUPERBLOCK = struct.Struct("<IIIBBHQQIIII16s16sIHHH38s")
# Extended superblock (§4), 256 bytes: flags, blob table offset, blob table size, chunk size,
# chunk table offset, chunk table size, prefetch table offset, prefetch table size, padding.
EXT_SUPERBLOCK = struct.Struct("<QQIIQQQII200s")
# Device slot (§6), 128 bytes: tag (blob id), blocks, mapped_blkaddr.
DEVICE_SLOT = struct.Struct("<64sII56s")
# Blob table entry (§7), 256 bytes.
BLOB_ENTRY = struct.Struct("<64sIIIIIIQQIIQQQ32s32sQQI36s")
# Extended inode (§9.2), 64 bytes: format, xattr_icount, mode, reserved, size, u, ino, uid,
# gid, mtime, mtime_nsec, nlink, 16 reserved.
INODE_EXTENDED_S = struct.Struct("<HHHHQIIIIQII16s")
# Compact inode (§9.3), 32 bytes: format, xattr_icount, mode, nlink, size, reserved, u, ino,
# uid, gid, reserved.
INODE_COMPACT_S = struct.Struct("<HHHHIIIIHHI")
XATTR_IBODY_HEADER = struct.Struct("<IB7s")
XATTR_ENTRY = struct.Struct("<BBH")
DIRENT = struct.Struct("<QHBB")
CHUNK_INDEX = struct.Struct("<HHI")
# Legacy chunk-table record (§13), 80 bytes.
CHUNK_RECORD = struct.Struct("<32sIIIIQQQII")

for _s, _size in (
    (SUPERBLOCK, 128),
    (EXT_SUPERBLOCK, 256),
    (DEVICE_SLOT, 128),
    (BLOB_ENTRY, 256),
    (INODE_EXTENDED_S, 64),
    (INODE_COMPACT_S, 32),
    (XATTR_IBODY_HEADER, 12),
    (XATTR_ENTRY, 4),
    (DIRENT, 12),
    (CHUNK_INDEX, 8),
    (CHUNK_RECORD, 80),
):
    assert _s.size == _size, (_s.format, _s.size, _size)


def round_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def encode_rdev(major: int, minor: int) -> int:
    """Linux "new" dev_t encoding as EROFS stores it in i_u (§9.4)."""
    return ((minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)) & 0xFFFFFFFF


def decode_rdev(value: int) -> tuple[int, int]:
    major = (value & 0xFFF00) >> 8
    minor = (value & 0xFF) | ((value >> 12) & 0xFFF00)
    return major, minor


def encode_chunk_index(blob_index: int, ci_index: int, blkaddr: int) -> bytes:
    """Chunk index (§12.2): ci index split around the device id byte."""
    hi = ((ci_index >> 16) << 8) | (blob_index + 1)
    return CHUNK_INDEX.pack(ci_index & 0xFFFF, hi, blkaddr)


def decode_chunk_index(raw: bytes, offset: int = 0) -> tuple[int, int, int]:
    """Returns (blob index, ci index, blkaddr); blob index -1 means device id 0 (invalid)."""
    lo, hi, blkaddr = CHUNK_INDEX.unpack_from(raw, offset)
    return (hi & 0xFF) - 1, ((hi >> 8) << 16) | lo, blkaddr


def split_xattr_name(name: bytes) -> tuple[int, bytes] | None:
    """(EROFS prefix index, stored suffix) for a full xattr name, None if not encodable."""
    for index in (2, 3):
        if name == XATTR_PREFIXES[index]:
            return index, b""
    for index in (1, 4, 6):
        prefix = XATTR_PREFIXES[index]
        if name.startswith(prefix) and len(name) > len(prefix):
            return index, name[len(prefix) :]
    return None


def xattr_body_size(xattrs: Mapping[bytes, bytes]) -> int:
    """Bytes of the inline xattr area after the inode (§10); 0 without xattrs."""
    if not xattrs:
        return 0
    size = XATTR_IBODY_HEADER.size
    for name, value in xattrs.items():
        split = split_xattr_name(name)
        suffix = split[1] if split else name
        size += round_up(XATTR_ENTRY.size + len(suffix) + len(value), 4)
    return size


def dirent_size(names: list[bytes], block_size: int = BLOCK_SIZE) -> int:
    """i_size of a directory whose sorted entry names (incl. . and ..) are given (§11.3)."""
    d = 0
    for name in names:
        need = DIRENT.size + len(name)
        if d % block_size + need > block_size:
            d = round_up(d, block_size)
        d += need
    return d
