"""The one chunking path: files cut into chunks, digested, deduplicated, compressed, stored.

Spec: ../shared/spec/blob.md §2 (fixed-size chunks), §3 (chunk id, CRC-32C), §4 (stored form),
§5 (dedup: a chunk already in this blob or in the dictionary is referenced, not stored);
image.md §14-§15.7 (dictionaries and parent bootstraps). ``rconv build`` and ``rconv convert``
both chunk through ``Chunker.add_file``, the callback the tar and directory readers call for
every regular file; the ``BlobWriter`` behind it only places and writes.

Two strategies, same bytes:
- serial (no executor): each new chunk is compressed and stored at once; ``add_file`` returns
  final chunks. For tests and small inputs.
- overlapped (an executor): digests and dedup run inline (cheap, and they decide what is new);
  CRC and compression of new chunks run on the executor, in batches of consecutive chunks (most
  files are far smaller than a chunk, and a task per chunk costs more than compressing it); the
  stored bytes are committed strictly in order, at most ``WINDOW`` bytes behind, so memory
  stays bounded and the blob does not depend on timing. A chunk's offsets are known only once
  it is committed, so ``add_file`` returns *provisional* chunks: chunks of this blob whose
  ``index`` is final (new chunks are committed in order) but whose offsets are not;
  ``resolve`` swaps in the stored chunks once ``close`` has run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor, Future

from rafs import codec
from rafs.blob.ondisk import MAX_FILE_CHUNKS
from rafs.blob.writer import BlobWriter
from rafs.chunkdict import ChunkDict, NoChunkDict
from rafs.errors import InvalidInput
from rafs.model import BlobInfo, Chunk
from rafs.streams import Readable

BATCH = 1 << 20  # bytes of new chunks per compression task
WINDOW = 16 << 20  # bytes submitted but not yet committed (32 MiB: +30 MB RSS, no speed)


class Chunker:
    """Chunks files into ``writer``; ``chunk_dict`` is only read (from this thread)."""

    def __init__(
        self,
        writer: BlobWriter,
        chunk_dict: ChunkDict = NoChunkDict(),  # noqa: B008 - stateless, shared on purpose
        executor: Executor | None = None,
        crc32: bool = True,
    ) -> None:
        self.writer = writer
        self.info = writer.info
        self.chunk_dict = chunk_dict
        self.executor = executor
        self.crc32 = crc32
        # Keyed by the digest alone (the chunk's own bytes object, no tuple per chunk); a hit
        # counts only if the size matches too.
        self.known: dict[bytes, Chunk] = {}
        self.new_count = 0
        self.batch: list[tuple[Chunk, bytes]] = []
        self.batch_bytes = 0
        self.pending: deque[tuple[list[Chunk], Future, int]] = deque()
        self.pending_bytes = 0

    def add_file(self, src: Readable, size: int) -> list[Chunk]:
        """The chunks of one regular file of ``size`` bytes read from ``src``."""
        chunk_size = self.info.chunk_size
        if size < 0:
            raise InvalidInput(f"negative file size {size}")
        if -(-size // chunk_size) > MAX_FILE_CHUNKS:
            raise InvalidInput(f"file of {size} bytes needs more than {MAX_FILE_CHUNKS} chunks")
        digester = self.info.digester
        chunks = []
        left = size
        while left:
            want = min(left, chunk_size)
            piece = src.read(want)
            while len(piece) < want:
                more = src.read(want - len(piece))
                if not more:
                    done = size - left + len(piece)
                    raise InvalidInput(f"file data ended after {done} of {size} bytes")
                piece += more
            left -= want
            digest = codec.digest(digester, piece)
            hit = self.known.get(digest)
            if hit is None or hit.uncompressed_size != want:
                hit = self.chunk_dict.get(digest, want)
            if hit is None:
                hit = self._new(digest, piece)
            chunks.append(hit)
        return chunks

    def _new(self, digest: bytes, piece: bytes) -> Chunk:
        if self.executor is None:
            stored, compressed = codec.compress(self.info.compressor, piece)
            crc = codec.crc32c(piece) if self.crc32 else None
            chunk = self.writer.add_chunk(digest, len(piece), stored, compressed, crc)
        else:
            chunk = Chunk(self.info, self.new_count, digest, 0, 0, 0, len(piece), False)
            self.batch.append((chunk, piece))
            self.batch_bytes += len(piece)
            if self.batch_bytes >= BATCH:
                self._submit()
        self.new_count += 1
        self.known.setdefault(digest, chunk)
        return chunk

    def _submit(self) -> None:
        if not self.batch:
            return
        assert self.executor is not None
        provs = [prov for prov, _ in self.batch]
        pieces = [piece for _, piece in self.batch]
        future = self.executor.submit(self._compress, pieces)
        self.pending.append((provs, future, self.batch_bytes))
        self.pending_bytes += self.batch_bytes
        self.batch, self.batch_bytes = [], 0
        while self.pending_bytes > WINDOW:
            self._commit_one()

    def _compress(self, pieces: list[bytes]) -> list[tuple[bytes, bool, int | None]]:
        stored = codec.compress_many(self.info.compressor, pieces)
        crc = codec.crc32c if self.crc32 else lambda piece: None
        return [(s, c, crc(piece)) for (s, c), piece in zip(stored, pieces, strict=True)]

    def _commit_one(self) -> None:
        provs, future, size = self.pending.popleft()
        self.pending_bytes -= size
        results = future.result()
        place = self.writer.place
        for prov, (stored, compressed, crc) in zip(provs, results, strict=True):
            place(prov.digest, prov.uncompressed_size, len(stored), compressed, crc)
        # One write for the batch: per-chunk calls would hand the GIL over for every tiny file.
        self.writer.write_placed(b"".join(r[0] for r in results))

    def close(self) -> list[Chunk]:
        """Commit what is still in flight; the chunks stored in the blob, in index order."""
        self._submit()
        while self.pending:
            self._commit_one()
        return self.writer.new_chunks

    def cancel(self) -> None:
        """Drop what is in flight (the blob is being abandoned)."""
        for _, future, _ in self.pending:
            future.cancel()
        self.pending.clear()
        self.batch = []


def resolve(chunks: Sequence[Chunk], blob: BlobInfo, stored: Sequence[Chunk]) -> list[Chunk]:
    """``chunks`` with each chunk of ``blob`` (provisional or not) replaced by the chunk stored
    at its index; chunks of other blobs are kept."""
    out = []
    for chunk in chunks:
        if chunk.blob is blob:
            final = stored[chunk.index]
            if final.digest != chunk.digest:  # new chunks are committed in order
                raise AssertionError(f"chunk {chunk.index} of blob {blob.blob_id} is misplaced")
            chunk = final
        out.append(chunk)
    return out
