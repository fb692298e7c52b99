"""Nydus data blob writer (RAFS v5 and v6): places chunks and writes the blob's sections.

Implements ../shared/spec/blob.md: offsets (§5), the v5 and v6 section layouts (§6.1, §6.2),
blob meta header and ci v1 entries (§8.1, §8.2), chunk digest array (§9), TOC (§10), feature
bits (§11) and the blob id (§13, last paragraphs: the id is the SHA-256 of the whole file, i.e.
the OCI layer digest). rafs-v6.md §12.3 states the ci invariants a v6 bootstrap relies on. The
format itself is declared in ``rafs.blob.ondisk``; which chunks are stored (chunking, digests,
dedup, compression) is decided by ``rafs.chunker``.

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

The writer only appends to ``out`` (a pipe is fine) and hashes every byte as it goes;
``hash_placed`` leaves the bytes of placed chunks where they are, outside ``out``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import BinaryIO

from rafs import codec
from rafs.blob.ondisk import (
    BLOCK,
    MAX_CHUNKS,
    MAX_COMPRESSED_OFFSET,
    MAX_UNCOMPRESSED_OFFSET,
    SECTION_BLOB,
    SECTION_BOOT,
    SECTION_DIGEST,
    SECTION_META,
    SECTION_META_HEADER,
    SECTION_TOC,
    BlobFeature,
    encode_ci_v1,
    encode_meta_header,
    encode_toc_entry,
    round_up,
    section_header,
)
from rafs.errors import InvalidImage, InvalidInput, Unsupported
from rafs.model import ZERO_DIGEST, BlobInfo, Chunk
from rafs.options import RafsOptions


class BlobWriter:
    """Streams one data blob: chunks in index order, then ``close_data`` and ``finish``.

    Chunks arrive digested and in stored form (``add_chunk``), or as a run of chunks another
    writer with the same options stored (``place_stored_chunks`` + ``write_placed``, how a
    converter keeps only some chunks of a speculative blob without compressing twice). The
    writer assigns indexes and offsets; it never decides which chunks to store.
    """

    def __init__(self, out: BinaryIO, opts: RafsOptions = RafsOptions()) -> None:  # noqa: B008
        self.info = BlobInfo(
            chunk_size=opts.chunk_size, compressor=opts.compressor, digester=opts.digester
        )
        self._out = out
        self._version = opts.fs_version
        self._align = BLOCK if opts.fs_version == 6 else 1
        self._sha = hashlib.sha256()
        self._pos = 0  # bytes written
        self._placed = 0  # bytes of the chunks placed so far (written, or about to be)
        self._chunks: list[Chunk] = []
        self._next_uoff = 0
        self._inline: bool | None = None  # fixed by close_data
        self._toc: list[bytes] = []
        self._finished = False

    @property
    def new_chunks(self) -> list[Chunk]:
        """Chunks stored in this blob, in index order."""
        return list(self._chunks)

    # -- data -------------------------------------------------------------------------------

    def add_chunk(
        self, digest: bytes, size: int, stored: bytes, compressed: bool, crc: int | None
    ) -> Chunk:
        """Store one new chunk of ``size`` uncompressed bytes; ``stored`` is its stored form."""
        if self._inline is not None:
            raise RuntimeError("add_chunk after close_data")
        chunk = self.place(digest, size, len(stored), compressed, crc)
        self._write(stored)
        return chunk

    def place_stored_chunks(self, chunks: Sequence[Chunk]) -> list[Chunk]:
        """This blob's chunks for chunks of another writer with the same options, placed
        after everything placed so far; their stored bytes must follow, in order, through
        ``write_placed`` (possibly later, from another thread, before ``close_data``).

        The chunk offsets, all a bootstrap needs, are known before a byte is copied.
        """
        if self._inline is not None:
            raise RuntimeError("place_stored_chunks after close_data")
        return [
            self.place(c.digest, c.uncompressed_size, c.compressed_size, c.compressed, c.crc32)
            for c in chunks
        ]

    def write_placed(self, stored: bytes | memoryview) -> None:
        """Stored bytes of chunks placed by ``place_stored_chunks``, in placement order."""
        self._check_due(len(stored))
        self._write(stored)

    def hash_placed(self, stored: bytes | memoryview) -> None:
        """Count ``stored``, the next placed bytes, as written, without writing them: they
        stay where they are and ``out`` holds the blob from the next byte on (how a converter
        serves a blob as byte ranges of its speculative blob followed by ``out``). They are
        hashed, so the blob id still covers every byte."""
        self._check_due(len(stored))
        self._sha.update(stored)
        self._pos += len(stored)

    def _check_due(self, length: int) -> None:
        if self._pos + length > self._placed:
            raise InvalidImage(
                f"{length} stored bytes given, {self._placed - self._pos} placed bytes due"
            )

    def place(
        self, digest: bytes, size: int, stored_size: int, compressed: bool, crc: int | None
    ) -> Chunk:
        """Record a new chunk of ``size`` uncompressed bytes, ``stored_size`` stored; its
        stored bytes must follow through ``write_placed``, in placement order."""
        if len(self._chunks) >= MAX_CHUNKS:
            raise InvalidInput(f"blob would hold more than {MAX_CHUNKS} chunks")
        if self._placed + stored_size > MAX_COMPRESSED_OFFSET:
            raise Unsupported("chunk data beyond 1 TiB cannot be addressed by the chunk info")
        if self._next_uoff + size > MAX_UNCOMPRESSED_OFFSET:
            raise Unsupported("uncompressed blob beyond 16 TiB cannot be addressed")
        # Positional (blob, index, digest, compressed offset and size, uncompressed offset and
        # size, compressed, crc32). A true CRC of 0 cannot be recorded: v6 readers take "flag
        # with crc 0" as corrupt.
        chunk = Chunk(
            self.info, len(self._chunks), digest, self._placed, stored_size, self._next_uoff,
            size, compressed, crc or None,
        )  # fmt: skip
        self._placed += stored_size
        self._next_uoff += round_up(size, self._align)
        self._chunks.append(chunk)
        return chunk

    def _write(self, data: bytes | memoryview) -> None:
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
