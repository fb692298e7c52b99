"""Reading zran chunks: a context's compressed span inflated from its checkpoint.

Spec: ../shared/spec/blob.md §12. Decoding follows nydusd's (``ZranDecoder``): a raw inflate
primed with the checkpoint's pending bits and given its window, fed exactly the context's
``in_len`` bytes, must produce ``out_len`` bytes; a gzip member ending inside the span is
followed through its 8-byte trailer and the next member's header, with an empty window. What
this reader accepts nydusd accepts, so ``rconv check`` proves the contexts, not only the data.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import BinaryIO

from rafs import codec
from rafs.blob.ondisk import BLOB_META_HEADER_SIZE, CI_V2_SIZE, CI_ZRAN, BlobFeature
from rafs.blob.reader import (
    BlobMetaHeader,
    CiEntry,
    decode_ci,
    parse_blob_meta_header,
    read_exact,
)
from rafs.errors import InvalidImage
from rafs.model import BlobInfo
from rafs.streams import SeekableReadable
from rafs.zran import zlib as z
from rafs.zran.index import Context
from rafs.zran.ondisk import decode_contexts

TRAILER = 8


def inflate_context(ctx: Context, data: bytes, who: str = "zran context") -> bytes:
    """The ``ctx.out_len`` uncompressed bytes of a context from its ``ctx.in_len`` bytes."""
    if len(data) != ctx.in_len:
        raise InvalidImage(f"{who}: {len(data)} compressed bytes for a span of {ctx.in_len}")
    inf = z.Inflater(z.RAW_WBITS)
    try:
        if ctx.bits:
            inf.prime(ctx.bits, ctx.byte)
        inf.set_dictionary(ctx.window)
        src = (ctypes.c_ubyte * max(len(data), 1)).from_buffer_copy(data or b"\0")
        out = (ctypes.c_ubyte * max(ctx.out_len, 1))()
        zs = inf.z
        zs.next_in = ctypes.addressof(src)
        zs.avail_in = len(data)
        produced = 0
        while True:
            zs.next_out = ctypes.addressof(out) + produced
            zs.avail_out = ctx.out_len - produced
            ret = inf.inflate(z.Z_NO_FLUSH)
            produced = ctx.out_len - zs.avail_out
            if ret == z.Z_OK:
                if produced != ctx.out_len:
                    raise InvalidImage(f"{who}: inflated {produced} of {ctx.out_len} bytes")
                return ctypes.string_at(out, produced)
            if ret != z.Z_STREAM_END:
                raise z.error(who, ret, inf, InvalidImage)
            # A member ends inside the span: skip its trailer and the next member's header.
            if zs.avail_in < TRAILER:
                raise InvalidImage(f"{who}: gzip trailer cut off inside a checkpoint span")
            zs.next_in += TRAILER
            zs.avail_in -= TRAILER
            inf.reset(z.GZIP_WBITS)
            scratch = (ctypes.c_ubyte * z.WINDOW)()
            while True:
                zs.next_out = ctypes.addressof(scratch)
                zs.avail_out = z.WINDOW
                ret = inf.inflate(z.Z_BLOCK)
                if ret != z.Z_OK:
                    raise z.error(f"{who}: next gzip member", ret, inf, InvalidImage)
                if zs.data_type & z.DT_BLOCK_END:
                    break
            inf.reset(z.RAW_WBITS)
    finally:
        inf.close()


@dataclass
class ZranMeta:
    """A zran blob's chunk-info entries and contexts, from its ref blob."""

    entries: list[CiEntry]
    contexts: list[Context]


def parse_ci(ci: bytes, header: BlobMetaHeader, who: str) -> ZranMeta:
    """Entries and contexts of an uncompressed zran ci array described by ``header``."""
    if not header.features & BlobFeature.ZRAN:
        raise InvalidImage(f"{who}: blob meta lacks the ZRAN feature")
    entries = decode_ci(ci, header.ci_entries, True)
    end = header.zran_offset + header.zran_size
    if header.zran_offset < header.ci_entries * CI_V2_SIZE or end > len(ci):
        raise InvalidImage(
            f"{who}: zran area {header.zran_offset}+{header.zran_size} is outside the ci"
        )
    contexts = decode_contexts(ci[header.zran_offset : end], header.zran_count)
    for e in entries:
        k, off = e.data >> 32, e.data & 0xFFFF_FFFF
        if not e.flags & CI_ZRAN or k >= len(contexts):
            raise InvalidImage(f"{who}: ci entry {e.index} is not a zran chunk of a known context")
        if off + e.uncompressed_size > contexts[k].out_len:
            raise InvalidImage(f"{who}: ci entry {e.index} lies beyond its context {k}")
    return ZranMeta(entries, contexts)


def read_ref_meta(f: SeekableReadable, info: BlobInfo) -> ZranMeta:
    """The zran meta of ``info`` from its ref blob ``f``, checked against the blob table."""
    who = f"blob {info.blob_id} ref blob"
    raw = read_exact(f, info.ci_offset, info.ci_compressed_size + BLOB_META_HEADER_SIZE, who)
    header = parse_blob_meta_header(raw[info.ci_compressed_size :])
    have = (header.ci_entries, header.ci_compressor, header.ci_offset,
            header.ci_compressed_size, header.ci_uncompressed_size)  # fmt: skip
    want = (info.chunk_count, info.ci_compressor, info.ci_offset,
            info.ci_compressed_size, info.ci_uncompressed_size)  # fmt: skip
    if have != want:
        raise InvalidImage(f"{who}: blob meta header {have} != blob table {want}")
    stored = raw[: info.ci_compressed_size]
    if header.ci_compressor == "none":
        ci = stored
    else:
        try:
            ci = codec.decompress(header.ci_compressor, stored, header.ci_uncompressed_size)
        except InvalidImage as exc:
            raise InvalidImage(f"{who}: {exc}") from None
    meta = parse_ci(ci, header, who)
    for e in meta.entries:
        if e.uncompressed_offset + e.uncompressed_size > info.uncompressed_size:
            raise InvalidImage(f"{who}: ci entry {e.index} lies beyond the uncompressed size")
    return meta


class ZranData:
    """Chunks of a zran blob read from its gzip layer ``f`` (any seekable reader, e.g. HTTP
    range reads); the last inflated context is kept, as nydusd keeps it."""

    def __init__(self, f: SeekableReadable, meta: ZranMeta, blob_id: str = "") -> None:
        self.f = f
        self.meta = meta
        self.blob_id = blob_id
        self._context = -1
        self._out = b""

    def context(self, k: int) -> bytes:
        if k != self._context:
            ctx = self.meta.contexts[k]
            who = f"blob {self.blob_id} zran context {k}"
            data = read_exact(self.f, ctx.in_offset, ctx.in_len, who)
            self._out, self._context = inflate_context(ctx, data, who), k
        return self._out

    def chunk(self, index: int) -> bytes:
        """The uncompressed bytes of chunk ``index`` (not verified: the caller knows its id)."""
        e = self.meta.entries[index]
        k, off = e.data >> 32, e.data & 0xFFFF_FFFF
        return self.context(k)[off : off + e.uncompressed_size]


class ZranBlob:
    """A zran blob opened for reading: its gzip layer and its ref blob.

    What a blob opener hands out for a blob with the ZRAN feature, where other blobs are a
    single file: ``rafs.blob.reader`` reads chunks and views through it.
    """

    def __init__(self, data: SeekableReadable, ref: SeekableReadable, info: BlobInfo) -> None:
        self.info = info
        self.meta = read_ref_meta(ref, info)
        self.data = ZranData(data, self.meta, info.blob_id)

    # The gzip layer is the blob's file: its size and digest are the blob table's.
    def seek(self, offset: int, whence: int = 0) -> int:
        return self.data.f.seek(offset, whence)

    def tell(self) -> int:
        return self.data.f.tell()  # type: ignore[attr-defined]

    def read(self, n: int = -1) -> bytes:
        return self.data.f.read(n)

    def chunk(self, index: int) -> bytes:
        if index >= len(self.meta.entries):
            raise InvalidImage(f"blob {self.info.blob_id}: no chunk {index}")
        return self.data.chunk(index)


def write_zran_view(
    blob: ZranBlob, chunks: dict[int, tuple[bytes | None, int | None]], out: BinaryIO
) -> int:
    """The blob's uncompressed address space (blob.md §5) written to ``out``: every ci entry's
    bytes at its uncompressed offset, zeros between. ``chunks`` maps chunk indexes to the
    (id, CRC) the bootstrap records, checked when given."""
    info = blob.info
    pos = 0
    for e in sorted(blob.meta.entries, key=lambda e: (e.uncompressed_offset, e.index)):
        who = f"blob {info.blob_id} chunk {e.index}"
        if e.uncompressed_offset < pos:
            raise InvalidImage(f"{who} overlaps the chunk before it")
        data = blob.chunk(e.index)
        digest, crc = chunks.get(e.index, (None, None))
        check_chunk(who, data, info.digester, digest, crc)
        out.write(bytes(e.uncompressed_offset - pos))
        out.write(data)
        pos = e.uncompressed_offset + len(data)
    out.write(bytes(info.uncompressed_size - pos))
    return info.uncompressed_size


def check_chunk(who: str, data: bytes, digester: str, digest: bytes | None, crc: int | None):
    if crc is not None and codec.crc32c(data) != crc:
        raise InvalidImage(f"{who}: CRC-32C does not match")
    if digest is not None and codec.digest(digester, data) != digest:
        raise InvalidImage(f"{who}: {digester} digest {codec.digest(digester, data).hex()} != "
                           f"chunk id {digest.hex()}")  # fmt: skip
