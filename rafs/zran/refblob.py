"""The ref blob of a zran layer: chunk-info array with contexts and windows, and its header.

Spec: ../shared/spec/blob.md §6.3, §8 (blob meta), §12; image.md §6 rule 2 and §11. Layout, as
upstream's ``nydus-image create -t targz-ref`` writes its separate meta blob::

    0                 ci (zstd, or raw when not smaller): ci v2 entries, contexts, windows
    ci_compressed     blob meta header, 4096 bytes

The data blob is the original gzip layer: the blob id is its digest and the blob table
entry's compressed size its length; the ref blob's digest and size are the entry's meta
digest and meta size (feature SEPARATE), and ``ci_offset`` is an offset inside the ref blob.
"""

from __future__ import annotations

import hashlib
from typing import BinaryIO

from rafs import codec
from rafs.blob.ondisk import BlobFeature, encode_meta_header
from rafs.model import BlobInfo
from rafs.zran.chunker import ZranChunker
from rafs.zran.ondisk import encode_ci, encode_contexts

FEATURES = (
    BlobFeature.ALIGNED
    | BlobFeature.CHUNK_INFO_V2
    | BlobFeature.ZRAN
    | BlobFeature.SEPARATE
    | BlobFeature.CAP_TAR_TOC
)
CI_COMPRESSOR = "zstd"


def write_ref_blob(out: BinaryIO, chunker: ZranChunker, layer_digest: str) -> BlobInfo:
    """Write the ref blob of the layer chunked by ``chunker`` (whose gzip stream has been
    read to its end) to ``out``; the finished BlobInfo of the layer's data blob."""
    info = chunker.info
    entries = b"".join(
        encode_ci(c.uncompressed_offset, c.uncompressed_size, c.compressed_offset,
                  c.compressed_size, ctx, off)
        for c, (ctx, off) in zip(chunker.chunks, chunker.places, strict=True)
    )  # fmt: skip
    contexts = chunker.contexts.contexts
    zran = encode_contexts(contexts)
    ci = entries + zran
    stored, compressed = codec.compress(CI_COMPRESSOR, ci)
    ci_compressor = CI_COMPRESSOR if compressed else "none"
    header = encode_meta_header(
        int(FEATURES), ci_compressor, len(chunker.chunks), 0, len(stored), len(ci),
        zran_offset=len(entries), zran_size=len(zran), zran_count=len(contexts),
    )  # fmt: skip
    out.write(stored)
    out.write(header)
    info.blob_id = layer_digest.removeprefix("sha256:")
    info.chunk_count = len(chunker.chunks)
    info.compressed_size = chunker.indexer.compressed_size
    info.uncompressed_size = chunker.uncompressed_size
    info.features = int(FEATURES)
    info.ci_compressor = ci_compressor
    info.ci_offset = 0
    info.ci_compressed_size = len(stored)
    info.ci_uncompressed_size = len(ci)
    info.meta_digest = hashlib.sha256(stored + header).digest()
    info.meta_size = len(stored) + len(header)
    return info
