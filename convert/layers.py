"""Layer conversion with cross-layer dedup: speculative per-layer blobs, then ordered assembly.

Stage 1 (parallel, one task per layer): stream the layer blob (verified by the registry
layer), decompress by magic, read the tar once, and write every chunk that the external
chunk dictionary does not hold into a speculative blob in the work dir — digesting and
compressing happen here, off the ordered path.

Stage 2 (in layer order): a chunk the final blob of an earlier layer already holds is
referenced instead; the others are copied, still compressed, into the layer's final blob.
When nothing is dropped the speculative blob *is* the final blob (same chunks, same order,
so the same bytes). The layer's tree is rewritten to the final chunks and applied onto the
tree below it (image.md §15.4, §15.7). Everything in stage 2 depends only on stage 1's
outputs, never on timing, so the result is byte-identical for any --jobs.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import BinaryIO

from rafs import codec
from rafs.blob import BlobWriter
from rafs.chunkdict import ChunkDict
from rafs.errors import RafsError
from rafs.layerstream import open_layer
from rafs.model import BlobInfo, Chunk, LayerTree, Node, walk
from rafs.overlay import apply_layer
from rafs.tarstream import read_layer


class LayerError(Exception):
    """A layer could not be converted; the message names image, layer digest and cause."""


@dataclass(frozen=True)
class BlobOptions:
    fs_version: int = 6
    chunk_size: int = 0x100000
    compressor: str = "zstd"
    digester: str = "blake3"
    max_layer_size: int | None = None


@dataclass
class SpeculativeLayer:
    """Stage 1's output for one source layer."""

    digest: str  # the source layer digest
    tree: LayerTree
    path: Path  # speculative blob file
    info: BlobInfo
    chunks: list[Chunk]  # chunks stored in the speculative blob, index order
    warnings: list[str] = field(default_factory=list)
    bytes_in: int = 0  # uncompressed tar bytes read


@dataclass
class FinalLayer:
    digest: str  # the source layer digest
    path: Path  # final blob file
    info: BlobInfo  # blob_id and sizes are final only once ``complete`` has run
    chunks_stored: int
    chunks_deduped: int  # chunks an earlier layer already stored
    warnings: list[str]
    bytes_in: int
    _copy: Callable[[], None] | None = None  # the kept chunks still to copy

    def complete(self) -> None:
        """Copy the kept chunks into the final blob (if any were dropped) and finish it.

        Everything the next layers and the tree need was decided by ``assemble_layer``; this
        is the heavy, order-free part (I/O and SHA-256), so it may run on any thread.
        """
        copy, self._copy = self._copy, None
        if copy is not None:
            copy()


class _CountingReader:
    """Counts the decompressed bytes the tar reader consumes."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.count += len(data)
        return data

    def readinto(self, buffer) -> int:
        n = self.inner.readinto(buffer)
        self.count += n or 0
        return n


class _OverlappedChunker:
    """The tar reader's ``add_file`` for stage 1, overlapping compression with parsing.

    Digests and dedup run inline (cheap, and they decide what is new); CRC and compression of
    new chunks run on a helper thread, in batches of consecutive chunks (most files are far
    smaller than a chunk, and a task per chunk costs more than compressing it); the stored
    bytes are committed to the writer strictly in order, at most ``_WINDOW`` bytes behind, so
    memory stays bounded and the blob does not depend on timing. Since a chunk's offsets are
    only known once it is committed, ``add_file`` returns *provisional* chunks: chunks of
    this blob whose ``index`` is final (new chunks are committed in order) but whose offsets
    are not; ``assemble_layer`` swaps in the stored chunks.
    """

    _BATCH = 1 << 20  # bytes of new chunks per compression task
    _WINDOW = 16 << 20  # bytes submitted but not yet committed

    def __init__(self, writer: BlobWriter, chunk_dict: ChunkDict, workers: int = 1) -> None:
        self.writer = writer
        self.info = writer.info
        self.chunk_dict = chunk_dict
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="rconv-zstd")
        self.batch: list[tuple[Chunk, bytes]] = []
        self.batch_bytes = 0
        self.pending: deque[tuple[list[Chunk], Future, int]] = deque()
        self.pending_bytes = 0
        self.known: dict[bytes, Chunk] = {}  # digest -> provisional chunk (size checked)
        self.new_count = 0

    def add_file(self, src, size: int) -> list[Chunk]:
        chunks = []
        chunk_size = self.info.chunk_size
        digester = self.info.digester
        left = size
        while left:
            want = min(left, chunk_size)
            piece = src.read(want)
            while len(piece) < want:  # the tar reader raises on a short stream
                piece += src.read(want - len(piece))
            left -= want
            digest = codec.digest(digester, piece)
            hit = self.known.get(digest)
            if hit is None or hit.uncompressed_size != want:
                hit = self.chunk_dict.get(digest, want)
            if hit is not None:
                chunks.append(hit)
                continue
            prov = Chunk(self.info, self.new_count, digest, 0, 0, 0, want, False)
            self.new_count += 1
            self.known.setdefault(digest, prov)
            chunks.append(prov)
            self.batch.append((prov, piece))
            self.batch_bytes += want
            if self.batch_bytes >= self._BATCH:
                self._submit()
        return chunks

    def _submit(self) -> None:
        if not self.batch:
            return
        provs = [prov for prov, _ in self.batch]
        pieces = [piece for _, piece in self.batch]
        self.pending.append((provs, self.pool.submit(self._compress, pieces), self.batch_bytes))
        self.pending_bytes += self.batch_bytes
        self.batch, self.batch_bytes = [], 0
        while self.pending_bytes > self._WINDOW:
            self._commit_one()

    def _compress(self, pieces: list[bytes]) -> list[tuple[bytes, bool, int | None]]:
        stored = codec.compress_many(self.info.compressor, pieces)
        crc = codec.crc32c
        return [(s, c, crc(piece) or None) for (s, c), piece in zip(stored, pieces, strict=True)]

    def _commit_one(self) -> None:
        provs, future, size = self.pending.popleft()
        self.pending_bytes -= size
        results = future.result()
        templates = [
            Chunk(prov.blob, prov.index, prov.digest, 0, len(stored), 0,
                  prov.uncompressed_size, compressed, crc)
            for prov, (stored, compressed, crc) in zip(provs, results, strict=True)
        ]  # fmt: skip
        self.writer.add_stored_chunks(templates, b"".join(r[0] for r in results))

    def close(self) -> None:
        try:
            self._submit()
            while self.pending:
                self._commit_one()
        finally:
            self.pool.shutdown(cancel_futures=True)


def convert_layer(
    digest: str,
    open_compressed: Callable[[], BinaryIO],
    out_path: Path,
    opts: BlobOptions,
    chunk_dict: ChunkDict,
    where: str,
) -> SpeculativeLayer:
    """Stage 1 for one layer; raises LayerError naming ``where`` and the layer."""
    warnings: list[str] = []
    try:
        with open_compressed() as raw, open(out_path, "wb") as out:
            writer = _writer(out, opts)
            chunker = _OverlappedChunker(writer, chunk_dict)
            try:
                stream = _CountingReader(open_layer(raw, max_bytes=opts.max_layer_size))
                tree = read_layer(stream, chunker.add_file, warnings, opts.max_layer_size)
            finally:
                chunker.close()
            writer.close_data()
            info = writer.finish()
    except RafsError as exc:
        raise LayerError(f"{where}: layer {digest}: {exc}") from exc
    return SpeculativeLayer(
        digest, tree, out_path, info, writer.new_chunks, warnings, stream.count,
    )  # fmt: skip


def _writer(out: BinaryIO, opts: BlobOptions) -> BlobWriter:
    return BlobWriter(
        out,
        fs_version=opts.fs_version,
        chunk_size=opts.chunk_size,
        compressor=opts.compressor,
        digester=opts.digester,
        workers=0,  # compression is overlapped by the caller
    )


def assemble_layer(
    spec: SpeculativeLayer,
    known: dict[bytes, Chunk],
    final_path: Path,
    opts: BlobOptions,
) -> FinalLayer:
    """Stage 2 for one layer: drop chunks in ``known``, rewrite the tree, extend ``known``.

    ``known`` maps chunk digests to the chunks earlier layers stored; it lives as long as
    the conversion, so it is keyed by the digest object the chunk already holds (no tuple
    per chunk), a hit counting only if its size matches too.

    The surviving chunks are only placed here; ``FinalLayer.complete`` copies them.
    """
    mapping: dict[int, Chunk] = {}
    kept = []
    for chunk in spec.chunks:
        hit = known.get(chunk.digest)
        if hit is not None and hit.uncompressed_size == chunk.uncompressed_size:
            mapping[id(chunk)] = hit
        else:
            kept.append(chunk)
    copy = None
    if len(kept) == len(spec.chunks):
        os.replace(spec.path, final_path)
        info, stored = spec.info, spec.chunks
    else:
        out = open(final_path, "wb")
        try:
            writer = _writer(out, opts)
            stored = writer.place_stored_chunks(kept)
        except BaseException:
            out.close()
            raise
        for chunk, placed in zip(kept, stored, strict=True):
            mapping[id(chunk)] = placed
        info = writer.info
        copy = partial(_copy_kept, spec.path, kept, writer, out)
    for _, node in walk(spec.tree.root):
        if node.chunks:
            resolved = (_stored(spec, c) if c.blob is spec.info else c for c in node.chunks)
            node.chunks = [mapping.get(id(c), c) for c in resolved]
    for chunk in stored:
        known.setdefault(chunk.digest, chunk)
    # The tree now holds the final chunks: drop what only stage 2 needed, since every
    # layer's result stays referenced until the last layer is done.
    deduped = len(spec.chunks) - len(kept)
    spec.chunks = []
    return FinalLayer(
        spec.digest,
        final_path,
        info,
        len(stored),
        deduped,
        spec.warnings,
        spec.bytes_in,
        copy,
    )


def _stored(spec: SpeculativeLayer, provisional: Chunk) -> Chunk:
    """The chunk stored in the speculative blob for a provisional chunk of its tree."""
    chunk = spec.chunks[provisional.index]
    if chunk.digest != provisional.digest:  # the chunker commits new chunks in order
        raise AssertionError(f"chunk {provisional.index} of layer {spec.digest} is misplaced")
    return chunk


def _copy_kept(src_path: Path, kept: list[Chunk], writer: BlobWriter, out: BinaryIO) -> None:
    """The bytes of ``kept`` (placed in ``writer``) from the speculative blob, then the
    blob's trailing sections; the speculative blob is removed."""
    with out, open(src_path, "rb") as src:
        for run in _runs(kept):
            src.seek(run[0].compressed_offset)
            end = run[-1].compressed_offset + run[-1].compressed_size
            writer.write_placed(src.read(end - run[0].compressed_offset))
        writer.close_data()
        writer.finish()
    src_path.unlink()


def _runs(chunks: list[Chunk], limit: int = 8 << 20) -> list[list[Chunk]]:
    """``chunks`` (in blob order) cut into runs stored back to back, of at most ``limit``
    stored bytes each (a single larger chunk makes a run of its own)."""
    runs: list[list[Chunk]] = []
    run: list[Chunk] = []
    end = start = 0
    for chunk in chunks:
        if run and (chunk.compressed_offset != end
                    or end - start + chunk.compressed_size > limit):  # fmt: skip
            runs.append(run)
            run = []
        if not run:
            start = chunk.compressed_offset
        run.append(chunk)
        end = chunk.compressed_offset + chunk.compressed_size
    if run:
        runs.append(run)
    return runs


def apply(lower: Node, spec: SpeculativeLayer, where: str) -> Node:
    try:
        return apply_layer(lower, spec.tree, "oci")
    except RafsError as exc:
        raise LayerError(f"{where}: layer {spec.digest}: {exc}") from exc
