"""Chunk codecs: compressors, digesters, CRC-32C and their on-disk enum values.

Implements ../shared/spec/blob.md §3 (chunk id, CRC-32C), §4 (stored form of a chunk and the
"not strictly smaller → store raw" fallback), the compressor/digester enums of §8.4 and §10,
and the v5 superblock flag bits of rafs-v5.md §4.

Every function here is safe to call from several threads at once: the zstd contexts are kept
per thread (a python-zstandard context must not be shared), and the heavy work releases the GIL.
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from collections.abc import Callable

import blake3
import lz4.block
import zstandard

from rafs.errors import InvalidImage, Unsupported

# Enum values of the v6 blob table, the blob meta header (ci compressor) and the bootstrap.
COMPRESSOR_ENUM = {"none": 0, "lz4_block": 1, "gzip": 2, "zstd": 3}
DIGESTER_ENUM = {"blake3": 0, "sha256": 1}

# TOC entry flags (blob.md §10): gzip has no TOC encoding.
TOC_COMPRESSOR_FLAG = {"none": 0x1, "zstd": 0x2, "lz4_block": 0x4}
TOC_COMPRESSOR_MASK = 0xF


# What rconv may produce; gzip is decode-only (legacy stargz blobs).
WRITABLE_COMPRESSORS = ("none", "lz4_block", "zstd")

ZSTD_LEVEL = 3


def _lookup(table: dict[str, int], value: int, what: str) -> str:
    for name, number in table.items():
        if number == value:
            return name
    raise InvalidImage(f"unknown {what} {value:#x}")


def compressor_to_enum(name: str) -> int:
    return COMPRESSOR_ENUM[name]


def compressor_from_enum(value: int) -> str:
    return _lookup(COMPRESSOR_ENUM, value, "compressor")


def digester_from_enum(value: int) -> str:
    return _lookup(DIGESTER_ENUM, value, "digester")


def toc_flag(name: str) -> int:
    try:
        return TOC_COMPRESSOR_FLAG[name]
    except KeyError:
        raise Unsupported(f"compressor {name} has no TOC encoding") from None


def compressor_from_toc_flags(flags: int) -> str:
    return _lookup(TOC_COMPRESSOR_FLAG, flags & TOC_COMPRESSOR_MASK, "TOC compression flag")


_local = threading.local()


def _zstd_compressor() -> zstandard.ZstdCompressor:
    ctx = getattr(_local, "zc", None)
    if ctx is None:
        # Defaults give what upstream writes: content size in the header, no checksum, no dict id.
        ctx = _local.zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return ctx


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    ctx = getattr(_local, "zd", None)
    if ctx is None:
        ctx = _local.zd = zstandard.ZstdDecompressor()
    return ctx


def check_compressor(name: str) -> None:
    """Raise Unsupported unless rconv can write chunks with this compressor."""
    if name not in WRITABLE_COMPRESSORS:
        raise Unsupported(f"cannot write {name!r} compressed chunks")


def compress(name: str, data: bytes) -> tuple[bytes, bool]:
    """Stored form of ``data``: (bytes, compressed?). Raw unless strictly smaller (blob.md §4)."""
    if name == "none" or not data:
        return bytes(data), False
    if name == "zstd":
        out = _zstd_compressor().compress(data)
    elif name == "lz4_block":
        out = lz4.block.compress(data, mode="default", store_size=False)
    else:
        raise Unsupported(f"cannot write {name!r} compressed chunks")
    if len(out) < len(data):
        return out, True
    return bytes(data), False


def compress_many(name: str, pieces: list[bytes]) -> list[tuple[bytes, bool]]:
    """``compress`` of each piece, byte for byte, in fewer C calls.

    zstd batches go through one ``multi_compress_to_buffer`` call, which releases the GIL
    once per batch rather than once per piece: most files are far smaller than a chunk, and
    a GIL hand-over per tiny file costs the parsing thread more than the compression saves.
    """
    if name != "zstd" or len(pieces) < 2 or not all(pieces):
        return [compress(name, piece) for piece in pieces]
    # The stub types the list invariantly as list[bytes | bytearray | memoryview].
    frames = _zstd_compressor().multi_compress_to_buffer(pieces, threads=1)  # type: ignore[arg-type]
    out = []
    for i, piece in enumerate(pieces):
        frame = frames[i].tobytes()
        out.append((frame, True) if len(frame) < len(piece) else (bytes(piece), False))
    return out


def decompress(name: str, data: bytes, uncompressed_size: int) -> bytes:
    """Inverse of ``compress`` for a chunk marked compressed; exact output length enforced."""
    try:
        if name == "none":
            out = bytes(data)
        elif name == "zstd":
            declared = zstandard.frame_content_size(data)
            # Refuse before allocating: a hostile header could declare any size.
            if declared not in (-1, uncompressed_size):
                raise InvalidImage(
                    f"zstd frame declares {declared} bytes, expected {uncompressed_size}"
                )
            out = _zstd_decompressor().decompress(data, max_output_size=uncompressed_size)
        elif name == "lz4_block":
            out = lz4.block.decompress(data, uncompressed_size=uncompressed_size)
        elif name == "gzip":
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = d.decompress(data, uncompressed_size)
            if not d.eof:
                raise InvalidImage("gzip member is truncated or longer than declared")
        else:
            raise Unsupported(f"unknown compressor {name!r}")
    except (zstandard.ZstdError, lz4.block.LZ4BlockError, zlib.error) as exc:
        raise InvalidImage(f"corrupt {name} data: {exc}") from None
    if len(out) != uncompressed_size:
        raise InvalidImage(f"{name} data decodes to {len(out)} bytes, expected {uncompressed_size}")
    return out


def digest(name: str, data: bytes) -> bytes:
    """Chunk id: 32-byte digest of the uncompressed bytes (blob.md §3)."""
    if name == "blake3":
        return blake3.blake3(data).digest()
    if name == "sha256":
        return hashlib.sha256(data).digest()
    raise Unsupported(f"unknown digester {name!r}")


def check_digester(name: str) -> None:
    if name not in DIGESTER_ENUM:
        raise Unsupported(f"unknown digester {name!r}")


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``: check value 0xE3069283 for b"123456789"."""
    return (_crc32c or _load_crc32c())(data)


_crc32c: Callable[[bytes], int] | None = None


def _load_crc32c() -> Callable[[bytes], int]:
    # Imported at first use: the package reads its own installed metadata when imported
    # (importlib.metadata, 16-20 ms of every start-up), and most conversions never need it.
    global _crc32c
    from crc32c import crc32c as impl

    _crc32c = impl
    return impl
