"""One gzip layer indexed in a single pass: its diff tree, its zran blob and its ref blob.

Spec: ../shared/spec/image.md §11 and §15 (the tar read as for native layers), blob.md §6.3 and
§12. The gzip stream is read once, through ``GzipIndexer`` (decompression, checkpoints,
SHA-256 and size of the compressed bytes), by the same tar reader native conversion uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO

from rafs.errors import InvalidInput
from rafs.model import BlobInfo, Chunk, LayerTree
from rafs.streams import Readable
from rafs.tarstream import read_layer
from rafs.zran.chunker import ZranChunker
from rafs.zran.index import GzipIndexer
from rafs.zran.refblob import write_ref_blob

GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class ZranLayer:
    tree: LayerTree
    info: BlobInfo  # the data blob: the gzip layer itself, blob id = its digest
    ref_size: int  # bytes of the ref blob written
    digest: str  # "sha256:…" of the compressed stream as read
    bytes_in: int  # uncompressed tar bytes
    contexts: int
    chunks: list[Chunk]  # the blob's chunks, index order
    warnings: list[str] = field(default_factory=list)


class _Peek:
    """The first bytes of a stream looked at, then handed on unread."""

    def __init__(self, raw: Readable) -> None:
        self.raw = raw
        self.head = b""
        while len(self.head) < 2 and (more := raw.read(2 - len(self.head))):
            self.head += more  # a socket may answer with one byte

    def read(self, n: int = -1) -> bytes:
        if self.head:
            head, self.head = self.head, b""
            return head + (self.raw.read(n - len(head)) if n is None or n > len(head) else b"")
        return self.raw.read(n)


def build_zran_layer(
    raw: Readable,
    ref_out: BinaryIO,
    layer_digest: str | None,
    chunk_size: int,
    max_bytes: int | None = None,
    verified: bool = False,
) -> ZranLayer:
    """Index the gzip layer ``raw`` and write its ref blob to ``ref_out``.

    ``layer_digest`` ("sha256:…") names the data blob; None takes the digest of the bytes read
    (a local file). ``verified``: ``raw`` itself checks that its bytes have ``layer_digest``
    (a registry's verified stream), so they are not digested twice. InvalidInput when the
    stream is not gzip.
    """
    peek = _Peek(raw)
    if peek.head != GZIP_MAGIC:
        raise InvalidInput("not a gzip stream (zran needs gzip layers)")
    trusted = verified and layer_digest is not None
    indexer = GzipIndexer(peek, max_bytes, hash_input=not trusted)
    chunker = ZranChunker(indexer, chunk_size)
    warnings: list[str] = []
    tree = read_layer(indexer, chunker.add_file, warnings, max_bytes)
    while indexer.read(1 << 20):  # the tar reader drains; make sure of the trailer anyway
        pass
    if trusted:
        assert layer_digest is not None
        digest = layer_digest
    else:
        assert indexer.sha256 is not None
        digest = "sha256:" + indexer.sha256.hexdigest()
        if layer_digest is not None and layer_digest != digest:
            raise InvalidInput(f"layer digest is {digest}, expected {layer_digest}")
    info = write_ref_blob(ref_out, chunker, digest)
    return ZranLayer(
        tree, info, info.meta_size, digest, indexer.out_pos, len(chunker.contexts.contexts),
        chunker.chunks, warnings,
    )  # fmt: skip
