"""Chunking a gzip layer in place: chunks point into the original gzip stream (zran).

Spec: ../shared/spec/blob.md §2-§3 (chunks, ids), §6.3 and §12 (ref blobs, zran), image.md
§11. The tar reader calls ``add_file`` for every regular file, as it calls
``rafs.chunker.Chunker.add_file`` for native blobs; here nothing is stored: each chunk is
digested (SHA-256, the digester upstream forces for zran) and mapped to its decompression
context. A chunk equal to an earlier chunk of the same layer is referenced, as upstream does;
every chunk still passes through the context builder first, since upstream's spacing counts
it too. Layers are never deduplicated against each other: each zran blob is its own layer.
"""

from __future__ import annotations

import hashlib

from rafs import codec
from rafs.blob.ondisk import BLOCK, MAX_CHUNKS, MAX_FILE_CHUNKS, round_up
from rafs.errors import InvalidInput, Unsupported
from rafs.model import BlobInfo, Chunk
from rafs.streams import Readable
from rafs.zran.index import ContextBuilder, GzipIndexer

DIGESTER = "sha256"
COMPRESSOR = "gzip"


class ZranChunker:
    """Chunks the files of the tar read through ``indexer`` into zran chunks."""

    def __init__(self, indexer: GzipIndexer, chunk_size: int) -> None:
        self.indexer = indexer
        self.contexts = ContextBuilder(indexer, chunk_size)
        self.info = BlobInfo(chunk_size=chunk_size, compressor=COMPRESSOR, digester=DIGESTER)
        self.chunks: list[Chunk] = []
        self.places: list[tuple[int, int]] = []  # per chunk: (context index, offset in it)
        self._next_uoff = 0
        self._known: dict[bytes, Chunk] = {}

    def add_file(self, src: Readable, size: int) -> list[Chunk]:
        tell = getattr(src, "tell", None)
        if tell is None:
            raise Unsupported("sparse files cannot be referenced in a gzip layer (zran)")
        chunk_size = self.info.chunk_size
        if -(-size // chunk_size) > MAX_FILE_CHUNKS:
            raise InvalidInput(f"file of {size} bytes needs more than {MAX_FILE_CHUNKS} chunks")
        out = []
        left = size
        while left:
            want = min(left, chunk_size)
            start = tell()
            context = self.contexts.begin(start)
            piece = src.read(want)
            if len(piece) != want:
                raise InvalidInput(f"file data ended after {size - left + len(piece)} bytes")
            left -= want
            coff, csize = self.contexts.end(start + want)
            out.append(self._chunk(piece, coff, csize, context, start))
        return out

    def _chunk(self, piece: bytes, coff: int, csize: int, context: int, start: int) -> Chunk:
        if len(self.chunks) >= MAX_CHUNKS:
            raise InvalidInput(f"layer would hold more than {MAX_CHUNKS} chunks")
        digest = hashlib.sha256(piece).digest()
        hit = self._known.get(digest)
        if hit is not None and hit.uncompressed_size == len(piece):
            return hit
        ctx = self.contexts.contexts[context]
        chunk = Chunk(
            blob=self.info,
            index=len(self.chunks),
            digest=digest,
            compressed_offset=coff,
            compressed_size=csize,
            uncompressed_offset=self._next_uoff,
            uncompressed_size=len(piece),
            compressed=True,
            # In the bootstrap only, as upstream: the ci entry's data word holds the context.
            crc32=codec.crc32c(piece) or None,
        )
        self._next_uoff += round_up(len(piece), BLOCK)
        self.chunks.append(chunk)
        self.places.append((context, start - ctx.out_offset))
        self._known.setdefault(digest, chunk)
        return chunk

    @property
    def uncompressed_size(self) -> int:
        return self._next_uoff
