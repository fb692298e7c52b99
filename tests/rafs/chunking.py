"""Writing test blobs through the one chunking path (rafs.chunker)."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

from rafs.blob.writer import BlobWriter
from rafs.chunkdict import ChunkDict, NoChunkDict
from rafs.chunker import Chunker, resolve
from rafs.model import Chunk
from rafs.options import RafsOptions


def serial_chunker(out, chunk_dict: ChunkDict | None = None, crc32: bool = True, **rafs) -> Chunker:
    """A chunker whose ``add_file`` returns final chunks (``chunker.writer`` is its writer)."""
    return Chunker(BlobWriter(out, RafsOptions(**rafs)), chunk_dict or NoChunkDict(), None, crc32)


def chunk_files(
    out, files: list[bytes], workers: int = 0, chunk_dict: ChunkDict | None = None,
    crc32: bool = True, **rafs,
) -> tuple[BlobWriter, list[list[Chunk]]]:  # fmt: skip
    """Every file chunked into a new writer, compressed on ``workers`` threads (0: inline)."""
    writer = BlobWriter(out, RafsOptions(**rafs))
    pool = ThreadPoolExecutor(workers) if workers else None
    try:
        chunker = Chunker(writer, chunk_dict or NoChunkDict(), pool, crc32)
        lists = [chunker.add_file(io.BytesIO(data), len(data)) for data in files]
        stored = chunker.close()
    finally:
        if pool is not None:
            pool.shutdown()
    return writer, [resolve(chunks, writer.info, stored) for chunks in lists]
