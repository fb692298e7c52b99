"""Nydus data blob writer (RAFS v5 and v6) and the on-disk structs shared with its reader.

Implements ../shared/spec/blob.md: chunking (§2), dedup and offsets (§5), the v5 and v6 section
layouts (§6.1, §6.2), section tar headers (§7), blob meta header and ci v1 entries (§8.1, §8.2),
chunk digest array (§9), TOC (§10), feature bits (§11) and the blob id (§13, last paragraphs:
the id is the SHA-256 of the whole file, i.e. the OCI layer digest). rafs-v6.md §12.3 states
the ci invariants a v6 bootstrap relies on.

v6 layout written here (blob-toc, tar headers; sections in brackets only when present)::

    0                  chunk data (stored chunks, contiguous)
    data_end           tar "image.blob"  (size = data_end)                 [chunks]
    ci_offset          ci array, v1 entries, stored form                    [chunks]
    +ci_compressed     blob meta header, 4096 bytes                         [chunks]
                       tar "blob.meta"   (size = ci stored + 4096)          [chunks]
                       chunk digest array, 32 x chunk_count                 [chunks]
                       tar "blob.digest" (size = 32 x chunk_count)          [chunks]
                       bootstrap, zstd or raw                               [inline]
                       tar "image.boot"  (size = stored bootstrap)          [inline]
                       TOC entries, 128 bytes each
    size - 512         tar "rafs.blob.toc" (size = 128 x entries)

v5 layout: the chunk data alone, or with an inline bootstrap
``data [tar "image.blob"] bootstrap tar "image.boot"`` (no ``image.blob`` header without chunks).

The writer only appends to ``out`` (a pipe is fine) and hashes every byte as it goes.
"""

from __future__ import annotations

import hashlib
import struct
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from enum import IntFlag
from typing import BinaryIO, Protocol

from rafs import codec
from rafs.chunkdict import ChunkDict, NoChunkDict
from rafs.errors import InvalidImage, InvalidInput, Unsupported
from rafs.model import DEFAULT_CHUNK_SIZE, ZERO_DIGEST, BlobInfo, Chunk


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

MIN_CHUNK_SIZE = 0x1000
MAX_CHUNK_SIZE = 0x100_0000
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

# Chunks in flight per worker. Measured on 2 vCPUs (1 MiB chunks, text-like data, best of 15):
# zstd 206 -> 298 MB/s and lz4 318 -> 443 MB/s with 2 workers; the SHA-256 of the output, done
# in order on the calling thread, bounds the rest.
_READ_AHEAD = 2


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
        0,  # zran/batch context table: never written by rconv
        0,
        0,
    )
    struct.pack_into("<I", hdr, META_MAGIC2_OFFSET, BLOB_META_MAGIC)
    return bytes(hdr)


def encode_toc_entry(
    name: str, compressor: str, digest: bytes, offset: int, stored: int, size: int
) -> bytes:
    return TOC_ENTRY.pack(
        codec.toc_flag(compressor), 0, name.encode(), digest, offset, stored, size
    )


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class BlobWriter:
    """Streams one data blob: ``add_file`` for every regular file, then ``finish``.

    New chunks are digested and compressed on a small thread pool (the codecs release the
    GIL) but committed strictly in input order, so the output does not depend on timing.
    A chunk already stored in this blob, or found in ``chunk_dict`` (looked up from worker
    threads: its ``get`` must be thread-safe), is not stored again; the existing ``Chunk``
    object is returned in its place. The dictionary is never modified here.
    """

    def __init__(
        self,
        out: BinaryIO,
        *,
        fs_version: int = 6,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        compressor: str = "zstd",
        digester: str = "blake3",
        chunk_dict: ChunkDict = NoChunkDict(),  # noqa: B008 - stateless, shared on purpose
        crc32: bool = True,
        workers: int = 2,
    ) -> None:
        if fs_version not in (5, 6):
            raise Unsupported(f"RAFS version {fs_version}")
        if chunk_size & (chunk_size - 1) or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise InvalidInput(f"chunk size {chunk_size:#x} is not a power of two in 4K…16M")
        codec.check_compressor(compressor)
        codec.check_digester(digester)
        self.info = BlobInfo(chunk_size=chunk_size, compressor=compressor, digester=digester)
        self._out = out
        self._version = fs_version
        self._align = BLOCK if fs_version == 6 else 1
        self._dict = chunk_dict
        self._crc = crc32
        self._workers = max(0, workers)
        self._sha = hashlib.sha256()
        self._pos = 0  # bytes written
        self._placed = 0  # bytes of the chunks placed so far (written, or about to be)
        self._chunks: list[Chunk] = []
        # Keyed by digest alone (the chunk's own bytes object, no tuple per chunk); a hit
        # counts only if the size matches too.
        self._known: dict[bytes, Chunk] = {}
        self._next_uoff = 0
        self._inline: bool | None = None  # fixed by close_data
        self._toc: list[bytes] = []
        self._finished = False

    @property
    def new_chunks(self) -> list[Chunk]:
        """Chunks stored in this blob, in index order."""
        return list(self._chunks)

    # -- data -------------------------------------------------------------------------------

    def add_file(self, src: Readable, size: int) -> list[Chunk]:
        """Store one regular file of ``size`` bytes read from ``src``; its chunk list."""
        if self._inline is not None:
            raise RuntimeError("add_file after close_data")
        if size < 0:
            raise InvalidInput(f"negative file size {size}")
        count = -(-size // self.info.chunk_size)
        if count > MAX_FILE_CHUNKS:
            raise InvalidInput(f"file of {size} bytes needs more than {MAX_FILE_CHUNKS} chunks")
        pieces = self._pieces(src, size)
        if count <= 1 or self._workers <= 1:
            return [self._commit(len(piece), self._prepare(piece)) for piece in pieces]
        result: list[Chunk] = []
        window: deque[tuple[int, Future]] = deque()
        with ThreadPoolExecutor(self._workers, thread_name_prefix="rafs-blob") as pool:
            for piece in pieces:
                window.append((len(piece), pool.submit(self._prepare, piece)))
                if len(window) >= self._workers * _READ_AHEAD:
                    length, fut = window.popleft()
                    result.append(self._commit(length, fut.result()))
            while window:
                length, fut = window.popleft()
                result.append(self._commit(length, fut.result()))
        return result

    def add_stored_chunks(self, chunks: Sequence[Chunk], stored: bytes | memoryview) -> list[Chunk]:
        """Append chunks already digested and compressed by another writer with the same
        options, ``stored`` being their stored bytes back to back in ``chunks`` order;
        returns this blob's chunks for them (see ``place_stored_chunks``).

        The bytes are written and hashed in one call: per-chunk calls would hand the GIL
        over once for every tiny file.
        """
        placed = self.place_stored_chunks(chunks)
        self.write_placed(stored)
        return placed

    def place_stored_chunks(self, chunks: Sequence[Chunk]) -> list[Chunk]:
        """This blob's chunks for chunks of another writer with the same options, placed
        after everything placed so far; their stored bytes must follow, in order, through
        ``write_placed`` (possibly later, from another thread, before ``close_data``).

        This is how a converter assembles a final blob from a speculative one, keeping only
        the chunks earlier layers do not already hold, without compressing twice: the chunk
        offsets, all a bootstrap needs, are known before a byte is copied.
        """
        if self._inline is not None:
            raise RuntimeError("place_stored_chunks after close_data")
        placed = []
        for chunk in chunks:
            if self._own(chunk.digest, chunk.uncompressed_size) is not None:
                raise InvalidInput(f"chunk {chunk.digest.hex()[:12]} is already in this blob")
            placed.append(
                self._place(chunk.digest, chunk.uncompressed_size, chunk.compressed_size,
                            chunk.compressed, chunk.crc32)
            )  # fmt: skip
        return placed

    def write_placed(self, stored: bytes | memoryview) -> None:
        """Stored bytes of chunks placed by ``place_stored_chunks``, in placement order."""
        if self._pos + len(stored) > self._placed:
            raise InvalidImage(
                f"{len(stored)} stored bytes given, {self._placed - self._pos} placed bytes due"
            )
        self._write(stored)

    def _pieces(self, src: Readable, size: int) -> Iterator[bytes]:
        left = size
        while left:
            want = min(left, self.info.chunk_size)
            piece = src.read(want)
            if len(piece) < want:
                parts = [piece]
                got = len(piece)
                while got < want:
                    more = src.read(want - got)
                    if not more:
                        raise InvalidInput(
                            f"file data ended after {size - left + got} of {size} bytes"
                        )
                    parts.append(more)
                    got += len(more)
                piece = b"".join(parts)
            left -= want
            yield piece

    def _prepare(self, piece: bytes) -> tuple[bytes, int | None, bytes | None, bool]:
        """Worker side: id, and for a chunk not seen before its CRC and stored form."""
        digest = codec.digest(self.info.digester, piece)
        # _known only grows, so a hit seen here is still a hit at commit time.
        key = (digest, len(piece))
        if self._own(*key) is not None or self._dict.get(digest, len(piece)) is not None:
            return digest, None, None, False
        crc = codec.crc32c(piece) if self._crc else None
        stored, compressed = codec.compress(self.info.compressor, piece)
        return digest, crc, stored, compressed

    def _commit(self, size: int, prepared: tuple[bytes, int | None, bytes | None, bool]) -> Chunk:
        digest, crc, stored, compressed = prepared
        found = self._own(digest, size) or self._dict.get(digest, size)
        if found is not None:
            return found
        if stored is None:  # cannot happen: hits never disappear; keep the writer honest
            raise AssertionError("chunk prepared as a duplicate has no stored form")
        chunk = self._place(digest, size, len(stored), compressed, crc)
        self._write(stored)
        return chunk

    def _place(
        self, digest: bytes, size: int, stored_size: int, compressed: bool, crc: int | None
    ) -> Chunk:
        """Record a new chunk whose stored bytes are written next (by the caller)."""
        if len(self._chunks) >= MAX_CHUNKS:
            raise InvalidInput(f"blob would hold more than {MAX_CHUNKS} chunks")
        if self._placed + stored_size > MAX_COMPRESSED_OFFSET:
            raise Unsupported("chunk data beyond 1 TiB cannot be addressed by the chunk info")
        if self._next_uoff + size > MAX_UNCOMPRESSED_OFFSET:
            raise Unsupported("uncompressed blob beyond 16 TiB cannot be addressed")
        chunk = Chunk(
            blob=self.info,
            index=len(self._chunks),
            digest=digest,
            compressed_offset=self._placed,
            compressed_size=stored_size,
            uncompressed_offset=self._next_uoff,
            uncompressed_size=size,
            compressed=compressed,
            # A true CRC of 0 cannot be recorded: v6 readers take "flag with crc 0" as corrupt.
            crc32=crc or None,
        )
        self._placed += stored_size
        self._next_uoff += round_up(size, self._align)
        self._chunks.append(chunk)
        self._known.setdefault(digest, chunk)
        return chunk

    def _own(self, digest: bytes, size: int) -> Chunk | None:
        """The chunk this blob already holds for (digest, size), if any."""
        found = self._known.get(digest)
        return found if found is not None and found.uncompressed_size == size else None

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._sha.update(data)
        self._pos += len(data)

    # -- trailing sections ------------------------------------------------------------------

    def close_data(self, *, inline_bootstrap: bool = False) -> BlobInfo:
        """End the chunk data and write the chunk-describing sections.

        ``inline_bootstrap`` announces that ``finish`` will append a bootstrap (it decides the
        INLINED_FS_META feature and, for v5, the ``image.blob`` header). Afterwards every
        BlobInfo field a bootstrap needs is set except ``blob_id`` and the TOC fields;
        ``compressed_size`` holds the bytes written so far (what an inlined v5 bootstrap
        records, rafs-v5.md §8) until ``finish`` sets the file length.
        """
        if self._inline is not None:
            raise RuntimeError("close_data called twice")
        if self._pos != self._placed:
            raise RuntimeError(f"{self._placed - self._pos} bytes of placed chunks not written")
        self._inline = inline_bootstrap
        info = self.info
        info.chunk_count = len(self._chunks)
        info.uncompressed_size = self._next_uoff
        features = BlobFeature.CAP_TAR_TOC
        if inline_bootstrap:
            features |= BlobFeature.INLINED_FS_META | BlobFeature.HAS_TAR_HEADER
        if self._version == 5:
            if inline_bootstrap and self._chunks:
                self._write(section_header(SECTION_BLOB, self._pos))
        else:
            features |= BlobFeature.ALIGNED | BlobFeature.HAS_TAR_HEADER | BlobFeature.HAS_TOC
            if self._chunks:
                features |= BlobFeature.INLINED_CHUNK_DIGEST
                self._write_v6_meta(int(features))
        info.features = int(features)
        info.compressed_size = self._pos
        return info

    def _write_v6_meta(self, features: int) -> None:
        info = self.info
        data_end = self._pos
        self._write(section_header(SECTION_BLOB, data_end))
        # Upstream hashes the data together with its own header for this TOC entry (§10).
        self._toc.append(
            encode_toc_entry(
                SECTION_BLOB, "none", self._sha.copy().digest(), 0, data_end, info.uncompressed_size
            )
        )
        ci = b"".join(encode_ci_v1(c) for c in self._chunks)
        stored, compressed = codec.compress(info.compressor, ci)
        info.ci_compressor = info.compressor if compressed else "none"
        info.ci_offset = self._pos
        info.ci_compressed_size = len(stored)
        info.ci_uncompressed_size = len(ci)
        header = encode_meta_header(
            features, info.ci_compressor, len(self._chunks), self._pos, len(stored), len(ci)
        )
        self._toc.append(
            encode_toc_entry(
                SECTION_META,
                info.ci_compressor,
                hashlib.sha256(ci).digest(),
                self._pos,
                len(stored),
                len(ci),
            )
        )
        self._write(stored)
        self._toc.append(
            encode_toc_entry(
                SECTION_META_HEADER,
                "none",
                hashlib.sha256(header).digest(),
                self._pos,
                len(header),
                len(header),
            )
        )
        self._write(header)
        self._write(section_header(SECTION_META, len(stored) + len(header)))
        digests = b"".join(c.digest for c in self._chunks)
        self._toc.append(
            encode_toc_entry(
                SECTION_DIGEST,
                "none",
                hashlib.sha256(digests).digest(),
                self._pos,
                len(digests),
                len(digests),
            )
        )
        self._write(digests)
        self._write(section_header(SECTION_DIGEST, len(digests)))

    def finish(self, inline_bootstrap: bytes | None = None) -> BlobInfo:
        """Append the optional bootstrap (and for v6 the TOC); set id, size and TOC fields."""
        if self._finished:
            raise RuntimeError("finish called twice")
        if self._inline is None:
            self.close_data(inline_bootstrap=inline_bootstrap is not None)
        if self._inline != (inline_bootstrap is not None):
            raise RuntimeError("close_data was told otherwise about the inline bootstrap")
        self._finished = True
        info = self.info
        if self._version == 5:
            if inline_bootstrap is not None:
                self._write(inline_bootstrap)
                self._write(section_header(SECTION_BOOT, len(inline_bootstrap)))
        else:
            if inline_bootstrap is not None:
                stored, compressed = codec.compress("zstd", inline_bootstrap)
                self._toc.append(
                    encode_toc_entry(
                        SECTION_BOOT,
                        "zstd" if compressed else "none",
                        hashlib.sha256(inline_bootstrap).digest(),
                        self._pos,
                        len(stored),
                        len(inline_bootstrap),
                    )
                )
                self._write(stored)
                self._write(section_header(SECTION_BOOT, len(stored)))
            toc = b"".join(self._toc)
            toc += section_header(SECTION_TOC, len(toc))
            self._write(toc)
            info.toc_size = len(toc)
            info.toc_digest = hashlib.sha256(toc).digest()
        info.blob_id = self._sha.hexdigest()
        info.compressed_size = self._pos
        if info.toc_size == 0:
            info.toc_digest = ZERO_DIGEST
        return info
