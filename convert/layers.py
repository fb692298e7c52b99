"""Layer conversion with cross-layer dedup: speculative per-layer blobs, then ordered assembly.

Stage 1 (parallel, one task per layer): stream the layer blob (verified by the registry
layer), decompress by magic, read the tar once, and write every chunk that the external
chunk dictionary does not hold into a speculative blob in the work dir — digesting and
compressing happen here, off the ordered path.

Stage 2 (in layer order): a chunk the final blob of an earlier layer already holds is
referenced instead; the others stay, still compressed, in the speculative blob, and the
layer's final blob is read as their byte ranges there followed by a file of its own
trailing sections (the chunk table, the TOC): nothing is copied. When nothing is dropped
the speculative blob *is* the final blob (same chunks, same order, so the same bytes). The
layer's tree is rewritten to the final chunks and applied onto the tree below it (image.md
§15.4, §15.7). Everything in stage 2 depends only on stage 1's outputs, never on timing, so
the result is byte-identical for any --jobs.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from concurrent.futures import Executor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from convert.errors import LayerError
from rafs.blob.writer import BlobWriter
from rafs.chunkdict import ChunkDict
from rafs.chunker import Chunker, resolve
from rafs.errors import RafsError
from rafs.layerstream import open_layer
from rafs.model import BlobInfo, Chunk, LayerTree, Node, nodes
from rafs.options import RafsOptions
from rafs.overlay import apply_layer
from rafs.streams import Readable
from rafs.tarstream import read_layer


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
    # The tree holds the stored chunks themselves (from a worker process), not the
    # provisional ones of an overlapped chunker: nothing to resolve.
    resolved: bool = False


@dataclass
class FinalLayer:
    digest: str  # the source layer digest
    # Final blob file, or its trailing sections after ``kept``; None when the blob comes
    # from the build cache.
    path: Path | None
    info: BlobInfo  # blob_id and sizes are final only once ``complete`` has run
    stored: list[Chunk]  # the chunks stored in the final blob, index order
    chunks_deduped: int  # chunks an earlier layer already stored
    warnings: list[str]
    bytes_in: int
    _finish: Callable[[], None] | None = None  # hashes the kept chunks, writes ``path``
    cached: Callable[[], BinaryIO] | None = None  # opens the blob in the build cache
    kept: _Kept | None = None  # the chunk data: byte ranges of the speculative blob

    def open(self) -> BinaryIO:
        """The final blob's bytes (a verified stream when they come from the build cache)."""
        if self.cached is not None:
            return self.cached()
        assert self.path is not None
        if self.kept is None:
            return open(self.path, "rb")
        ranges = [(self.kept.path, offset, length) for offset, length in self.kept.runs]
        tail = self.info.compressed_size - sum(length for _, length in self.kept.runs)
        return io.BufferedReader(_Ranges([*ranges, (self.path, 0, tail)]), _READ_SIZE)

    @property
    def chunks_stored(self) -> int:
        return len(self.stored)

    def complete(self) -> None:
        """Finish the final blob when chunks were dropped: hash the kept chunks where they
        lie, then write the trailing sections.

        Everything the next layers and the tree need was decided by ``assemble_layer``; this
        is the heavy, order-free part (SHA-256 of the chunk data), so it may run on any thread.
        """
        finish, self._finish = self._finish, None
        if finish is not None:
            finish()


_READ_SIZE = 4 << 20  # per read of a blob's kept chunks


@dataclass(frozen=True)
class _Kept:
    path: Path  # the speculative blob
    runs: list[tuple[int, int]]  # (offset, length) there, in the final blob's order


class _CountingReader:
    """Counts the decompressed bytes the tar reader consumes."""

    def __init__(self, inner: Any) -> None:  # open_layer's reader: read and readinto
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


def convert_layer(
    digest: str,
    open_compressed: Callable[[], AbstractContextManager[Readable]],
    out_path: Path,
    opts: RafsOptions,
    max_layer_size: int | None,
    chunk_dict: ChunkDict,
    compress: Executor,
    where: str,
) -> SpeculativeLayer:
    """Stage 1 for one layer, compressing on ``compress``; raises LayerError naming ``where``
    and the layer."""
    warnings: list[str] = []
    try:
        with open_compressed() as raw, open(out_path, "wb") as out:
            writer = BlobWriter(out, opts)
            chunker = Chunker(writer, chunk_dict, compress)
            try:
                stream = _CountingReader(open_layer(raw, max_bytes=max_layer_size))
                tree = read_layer(stream, chunker.add_file, warnings, max_layer_size)
                chunks = chunker.close()
            except BaseException:
                chunker.cancel()
                raise
            writer.close_data()
            info = writer.finish()
    except RafsError as exc:
        raise LayerError(f"{where}: layer {digest}: {exc}") from exc
    return SpeculativeLayer(digest, tree, out_path, info, chunks, warnings, stream.count)


def assemble_layer(
    spec: SpeculativeLayer,
    known: dict[bytes, Chunk],
    final_path: Path,
    opts: RafsOptions,
) -> FinalLayer:
    """Stage 2 for one layer: drop chunks in ``known``, rewrite the tree, extend ``known``.

    ``known`` maps chunk digests to the chunks earlier layers stored; it lives as long as
    the conversion, so it is keyed by the digest object the chunk already holds (no tuple
    per chunk), a hit counting only if its size matches too.

    The surviving chunks are only placed here; ``FinalLayer.complete`` hashes them where
    they lie.
    """
    mapping: dict[int, Chunk] = {}
    kept = []
    for chunk in spec.chunks:
        hit = known.get(chunk.digest)
        if hit is not None and hit.uncompressed_size == chunk.uncompressed_size:
            mapping[id(chunk)] = hit
        else:
            kept.append(chunk)
    finish = kept_at = None
    if len(kept) == len(spec.chunks):
        os.replace(spec.path, final_path)
        info, stored = spec.info, spec.chunks
    else:
        out = open(final_path, "wb")
        try:
            writer = BlobWriter(out, opts)
            stored = writer.place_stored_chunks(kept)
        except BaseException:
            out.close()
            raise
        for chunk, placed in zip(kept, stored, strict=True):
            mapping[id(chunk)] = placed
        info = writer.info
        kept_at = _Kept(spec.path, _runs(kept))
        finish = partial(_finish_kept, kept_at, writer, out)
    if mapping or not spec.resolved:  # else the tree holds the final chunks already
        for node in nodes(spec.tree.root):
            if node.chunks:
                resolved = resolve(node.chunks, spec.info, spec.chunks)
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
        stored,
        deduped,
        spec.warnings,
        spec.bytes_in,
        finish,
        kept=kept_at,
    )


def _finish_kept(kept: _Kept, writer: BlobWriter, out: BinaryIO) -> None:
    """Hash the kept chunks' bytes where they lie in the speculative blob, then write the
    blob's trailing sections to ``out``. Read through one buffer: a map of the file would
    add every page hashed to this process's RSS (+85 MB for an 85 MB blob, measured)."""
    buffer = memoryview(bytearray(_READ_SIZE))
    with out:
        if kept.runs:
            fd = os.open(kept.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                for offset, length in kept.runs:
                    end = offset + length
                    while offset < end:
                        n = os.preadv(fd, [buffer[: min(_READ_SIZE, end - offset)]], offset)
                        if n == 0:
                            raise LayerError(f"{kept.path}: ends before its kept chunks")
                        writer.hash_placed(buffer[:n])
                        offset += n
            finally:
                os.close(fd)
        writer.close_data()
        writer.finish()


class _Ranges(io.RawIOBase):
    """Byte ranges of files, (path, offset, length), read as one stream."""

    def __init__(self, ranges: list[tuple[Path, int, int]]) -> None:
        super().__init__()
        self._ranges = ranges
        self._files: dict[Path, int] = {}
        self._at = 0  # bytes read of the current range

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._ranges:
            path, offset, length = self._ranges[0]
            want = min(len(buffer), length - self._at)
            if want == 0:
                self._ranges.pop(0)
                self._at = 0
                continue
            n = os.preadv(self._fd(path), [memoryview(buffer)[:want]], offset + self._at)
            if n == 0:
                raise OSError(f"{path}: ends {length - self._at} bytes before its range")
            self._at += n
            return n
        return 0

    def fd_ranges(self) -> list[tuple[int, int, int]]:
        """What is left to read as (fd, offset, length): a copy into a file can stay in the
        kernel (registry.layout.local_ranges). The fds are this reader's, open until it is
        closed."""
        out = []
        for i, (path, offset, length) in enumerate(self._ranges):
            at = self._at if i == 0 else 0
            out.append((self._fd(path), offset + at, length - at))
        return out

    def _fd(self, path: Path) -> int:
        fd = self._files.get(path)
        if fd is None:
            fd = self._files[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        return fd

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()
        super().close()


def _runs(chunks: list[Chunk]) -> list[tuple[int, int]]:
    """(offset, length) of the byte ranges ``chunks`` (in blob order) are stored in, each
    range as long as the chunks lie back to back."""
    runs: list[tuple[int, int]] = []
    start = end = -1
    for chunk in chunks:
        if chunk.compressed_offset != end:
            if end > start:
                runs.append((start, end - start))
            start = chunk.compressed_offset
        end = chunk.compressed_offset + chunk.compressed_size
    if end > start:
        runs.append((start, end - start))
    return runs


def apply(lower: Node, tree: LayerTree, digest: str, where: str) -> Node:
    """The layer ``digest``'s diff tree applied onto ``lower`` (the tree is consumed)."""
    try:
        return apply_layer(lower, tree, "oci")
    except RafsError as exc:
        raise LayerError(f"{where}: layer {digest}: {exc}") from exc
