"""The Nydus data blob format, declared once: feature bits, sections, structs and encoders.

Spec: ../shared/spec/blob.md — feature bits (§11), section tar headers (§7), blob meta header
(§8.1), ci v1/v2 entries (§8.2, §8.3), TOC entries (§10) and the size limits of §2 and §5.
The writer (``rafs.blob.writer``), the readers (``rafs.blob.reader``), the bootstrap codecs and
the chunk dictionary import these; none declares a blob fact of its own.
"""

from __future__ import annotations

import struct
from enum import IntFlag

from rafs import codec
from rafs.errors import Unsupported
from rafs.model import Chunk


class BlobFeature(IntFlag):
    """Blob feature bits of the v5 extended table, v6 blob table and meta header (blob.md §11)."""

    ALIGNED = 0x0000_0001
    INLINED_FS_META = 0x0000_0002
    CHUNK_INFO_V2 = 0x0000_0004
    ZRAN = 0x0000_0008
    SEPARATE = 0x0000_0010
    INLINED_CHUNK_DIGEST = 0x0000_0020
    TARFS = 0x0000_0040
    BATCH = 0x0000_0080
    ENCRYPTED = 0x0000_0100
    IS_CHUNKDICT_GENERATED = 0x0000_0200
    IS_SEPARATED_WITH_PREFETCH_FILES = 0x0000_0400
    EXTERNAL = 0x0000_0800
    HAS_TAR_HEADER = 0x1000_0000
    HAS_TOC = 0x2000_0000
    CAP_TAR_TOC = 0x4000_0000
    V5_NO_EXT_TABLE = 0x8000_0000  # upstream's in-memory v5 marker: no extended table entry


# Bits known to the runtime, which a v5 reader keeps; a v6 blob table entry with any bit of
# INCOMPAT_V6 is refused, as nydusd does.
KNOWN_V5 = 0x0000_0FFF | 0x7000_0000
INCOMPAT_V6 = 0x0000_F000 | 0x8000_0000
# Chunks of blobs with these a dictionary must not hand out (image.md §14.3): data that is not
# a plain stored chunk (gzip contexts, tar-backed, batch members, encrypted).
UNSHAREABLE = BlobFeature.ZRAN | BlobFeature.TARFS | BlobFeature.BATCH | BlobFeature.ENCRYPTED


# Section names (blob.md §7, §10).
SECTION_BLOB = "image.blob"
SECTION_META = "blob.meta"
SECTION_META_HEADER = "blob.meta.header"
SECTION_DIGEST = "blob.digest"
SECTION_BOOT = "image.boot"
SECTION_TOC = "rafs.blob.toc"

TAR_HEADER_SIZE = 512
BLOB_META_MAGIC = 0xB10B_B10B
BLOB_META_HEADER_SIZE = 4096
CI_V1_SIZE = 16
CI_V2_SIZE = 24
TOC_ENTRY_SIZE = 128
BLOCK = 4096

MAX_CHUNKS = 0xFF_FFFF  # distinct chunks per blob: indexes 0 … 0xFF_FFFE (blob.md §2, §5)
MAX_FILE_CHUNKS = 1 << 24
MAX_COMPRESSED_OFFSET = 1 << 40  # ci comp_info keeps 40 bits of offset
MAX_UNCOMPRESSED_OFFSET = 1 << 44  # ci uncomp_info keeps offset bits 12-43

# Blob meta header fields before the reserved area (blob.md §8.1); s_magic2 sits at 4092.
META_HEADER = struct.Struct("<IIIIQQQQQI")
META_MAGIC2_OFFSET = BLOB_META_HEADER_SIZE - 4
# TOC entry (blob.md §10): flags, reserved, name, sha256, offset, stored size, size, reserved.
TOC_ENTRY = struct.Struct("<II16s32sQQQ48x")
CI_V1 = struct.Struct("<QQ")
CI_V2 = struct.Struct("<QQQ")

assert META_HEADER.size == 60 and TOC_ENTRY.size == TOC_ENTRY_SIZE

MAX_TOC_SIZE = 65536

# ci v2 flag bits (bits 56-63 of uncomp_info, blob.md §8.3).
CI_COMPRESSED = 0x01
CI_ZRAN = 0x02
CI_BATCH = 0x04
CI_ENCRYPTED = 0x08
CI_HAS_CRC32 = 0x10


def round_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def section_header(name: str, size: int) -> bytes:
    """The 512-byte GNU tar header that follows a section (blob.md §7, byte-exact)."""
    if size >= 8**11:
        raise Unsupported(f"section {name} of {size} bytes needs a base-256 tar size")
    hdr = bytearray(TAR_HEADER_SIZE)
    raw = name.encode()
    hdr[0 : len(raw)] = raw
    hdr[124:136] = b"%011o\0" % size
    hdr[136:148] = b"00000000000\0"
    hdr[156] = ord("0")
    hdr[257:265] = b"ustar  \0"
    hdr[148:156] = b" " * 8
    hdr[148:156] = b"%07o\0" % sum(hdr)
    return bytes(hdr)


def encode_ci_v1(chunk: Chunk) -> bytes:
    """16-byte ci v1 entry (blob.md §8.2): sizes minus one, split 4 high + 20 low bits."""
    usz = chunk.uncompressed_size - 1
    csz = chunk.compressed_size - 1
    uncomp = ((usz >> 20) & 0xF) << 8 | chunk.uncompressed_offset | (usz & 0xF_FFFF) << 44
    comp = chunk.compressed_offset | ((csz >> 20) & 0xF) << 40 | (csz & 0xF_FFFF) << 44
    return CI_V1.pack(uncomp, comp)


def encode_meta_header(
    features: int,
    ci_compressor: str,
    entries: int,
    ci_offset: int,
    ci_compressed_size: int,
    ci_uncompressed_size: int,
    zran_offset: int = 0,
    zran_size: int = 0,
    zran_count: int = 0,
) -> bytes:
    hdr = bytearray(BLOB_META_HEADER_SIZE)
    META_HEADER.pack_into(
        hdr,
        0,
        BLOB_META_MAGIC,
        features,
        codec.compressor_to_enum(ci_compressor),
        entries,
        ci_offset,
        ci_compressed_size,
        ci_uncompressed_size,
        zran_offset,  # zran/batch context table inside the uncompressed ci
        zran_size,
        zran_count,
    )
    struct.pack_into("<I", hdr, META_MAGIC2_OFFSET, BLOB_META_MAGIC)
    return bytes(hdr)


def encode_toc_entry(
    name: str, compressor: str, digest: bytes, offset: int, stored: int, size: int
) -> bytes:
    return TOC_ENTRY.pack(
        codec.toc_flag(compressor), 0, name.encode(), digest, offset, stored, size
    )
