"""Readers for Nydus data blobs: section headers, TOC, blob meta (ci arrays) and chunk data.

Implements the reading side of ../shared/spec/blob.md: section tar headers walked from the end
(§6, §7), the TOC (§10), the blob meta header and its validation against the blob table (§8.1,
§8.4), ci v1 and v2 entries (§8.2, §8.3), chunk decoding with size, digest and CRC checks
(§3, §4), and the uncompressed address space of a blob (§5; rafs-v6.md §12.3, §20) that an
EROFS extra device or an fscache cache file holds.

Every function takes a seekable binary file object; none opens a path.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from rafs import codec
from rafs.blob.ondisk import (
    BLOB_META_HEADER_SIZE,
    BLOB_META_MAGIC,
    CI_BATCH,
    CI_COMPRESSED,
    CI_ENCRYPTED,
    CI_HAS_CRC32,
    CI_V1,
    CI_V1_SIZE,
    CI_V2,
    CI_V2_SIZE,
    CI_ZRAN,
    MAX_TOC_SIZE,
    META_HEADER,
    META_MAGIC2_OFFSET,
    SECTION_BLOB,
    SECTION_TOC,
    TAR_HEADER_SIZE,
    TOC_ENTRY,
    TOC_ENTRY_SIZE,
    BlobFeature,
)
from rafs.errors import InvalidImage, Unsupported
from rafs.model import ZERO_DIGEST, BlobInfo, Chunk, Node
from rafs.streams import SeekableReadable


@dataclass(frozen=True, slots=True)
class Section:
    """A section found by walking the trailing tar headers: its bytes are [offset, offset+size)."""

    name: str
    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class TocEntry:
    name: str
    compressor: str
    flags: int
    digest: bytes  # SHA-256 of the uncompressed bytes
    compressed_offset: int
    compressed_size: int
    uncompressed_size: int


@dataclass(frozen=True, slots=True)
class BlobMetaHeader:
    features: int
    ci_compressor: str
    ci_entries: int
    ci_offset: int
    ci_compressed_size: int
    ci_uncompressed_size: int
    zran_offset: int
    zran_size: int
    zran_count: int


@dataclass(frozen=True, slots=True)
class CiEntry:
    """One decoded chunk-info entry; ``index`` is its position in the array."""

    index: int
    compressed_offset: int
    compressed_size: int
    uncompressed_offset: int
    uncompressed_size: int
    compressed: bool
    flags: int = 0  # v2 flag byte; v1 entries have none
    crc32: int | None = None
    data: int = 0  # v2 third word (CRC, zran or batch location)


def read_exact(f: SeekableReadable, offset: int, size: int, what: str) -> bytes:
    """``size`` bytes at ``offset``; InvalidImage naming ``what`` if the file is shorter."""
    try:
        f.seek(offset)
    except (OverflowError, ValueError):  # a 64-bit offset read from a hostile table
        raise InvalidImage(f"{what}: offset {offset} is out of range") from None
    parts = []
    got = 0
    while got < size:
        part = f.read(size - got)
        if not part:
            raise InvalidImage(
                f"{what}: needs bytes {offset}..{offset + size} but the blob ends at {offset + got}"
            )
        parts.append(part)
        got += len(part)
    return b"".join(parts) if len(parts) != 1 else bytes(parts[0])


# -- tar headers and TOC ------------------------------------------------------------------------


def parse_section_header(buf: bytes) -> tuple[str, int]:
    """(name, size) of a section tar header; checks length, checksum, type and magic (§7)."""
    if len(buf) != TAR_HEADER_SIZE:
        raise InvalidImage(f"tar header of {len(buf)} bytes")
    if buf[257:262] != b"ustar":
        raise InvalidImage("section header lacks the ustar magic")
    try:
        stored = int(buf[148:156].rstrip(b"\0 ") or b"0", 8)
        size = int(buf[124:136].rstrip(b"\0 ") or b"0", 8)
    except ValueError:
        raise InvalidImage("section header has a malformed checksum or size") from None
    computed = sum(buf[:148]) + 8 * ord(" ") + sum(buf[156:])
    if stored != computed:
        raise InvalidImage(f"section header checksum {stored:o} != computed {computed:o}")
    if buf[156:157] not in (b"0", b"\0"):
        raise InvalidImage(f"section header type {buf[156:157]!r} is not a regular file")
    name = buf[:100].split(b"\0", 1)[0].decode("ascii", errors="replace")
    return name, size


def read_sections(f: SeekableReadable, size: int) -> list[Section]:
    """Sections of a tar-headed blob in file order, found by walking headers from the end.

    The walk stops at offset 0 (a v6 blob-toc or inline-meta blob) or raises InvalidImage.
    A plain v5 blob has no headers at all and cannot be walked.
    """
    found: list[Section] = []
    end = size
    while end > 0:
        if end < TAR_HEADER_SIZE:
            raise InvalidImage(f"{end} stray bytes at the start of the blob")
        name, length = parse_section_header(
            read_exact(f, end - TAR_HEADER_SIZE, TAR_HEADER_SIZE, "section header")
        )
        start = end - TAR_HEADER_SIZE - length
        if start < 0:
            raise InvalidImage(f"section {name} of {length} bytes starts before the blob")
        found.append(Section(name, start, length))
        end = start
    found.reverse()
    return found


def read_toc(
    f: SeekableReadable, size: int, expected_digest: bytes | None = None
) -> list[TocEntry]:
    """TOC entries at the end of a v6 blob of ``size`` bytes (blob.md §10).

    When ``expected_digest`` (the blob table's TOC digest) is given and non-zero, the SHA-256
    of entries plus header must equal it.
    """
    if size < TAR_HEADER_SIZE:
        raise InvalidImage(f"blob of {size} bytes is too small for a TOC")
    header = read_exact(f, size - TAR_HEADER_SIZE, TAR_HEADER_SIZE, "TOC header")
    name, length = parse_section_header(header)
    if name != SECTION_TOC:
        raise InvalidImage(f"blob ends with section {name!r}, not {SECTION_TOC}")
    if length % TOC_ENTRY_SIZE or length + TAR_HEADER_SIZE > min(size, MAX_TOC_SIZE):
        raise InvalidImage(f"TOC of {length} bytes does not fit a {size}-byte blob")
    raw = read_exact(f, size - TAR_HEADER_SIZE - length, length, "TOC")
    if expected_digest and expected_digest != ZERO_DIGEST:
        actual = hashlib.sha256(raw + header).digest()
        if actual != expected_digest:
            raise InvalidImage(
                f"TOC digest {actual.hex()} != {expected_digest.hex()} recorded in the bootstrap"
            )
    entries = []
    for flags, _res, name_raw, digest, offset, stored, usize in TOC_ENTRY.iter_unpack(raw):
        entries.append(
            TocEntry(
                name=name_raw.split(b"\0", 1)[0].decode("ascii", errors="replace"),
                compressor=codec.compressor_from_toc_flags(flags),
                flags=flags,
                digest=digest,
                compressed_offset=offset,
                compressed_size=stored,
                uncompressed_size=usize,
            )
        )
    return entries


def extract_toc_entry(f: SeekableReadable, entry: TocEntry) -> bytes:
    """The uncompressed bytes of a TOC entry, size and SHA-256 checked.

    The ``image.blob`` entry's digest also covers its tar header (an upstream quirk) and is
    not checked here; do not extract that entry, it is the whole chunk data.
    """
    stored = read_exact(
        f, entry.compressed_offset, entry.compressed_size, f"TOC entry {entry.name}"
    )
    if entry.compressor == "none":
        if entry.compressed_size != entry.uncompressed_size:
            raise InvalidImage(f"TOC entry {entry.name}: raw entry with two different sizes")
        data = stored
    else:
        data = _decompress(entry.compressor, stored, entry.uncompressed_size, f"{entry.name}")
    if entry.name != SECTION_BLOB and entry.digest != ZERO_DIGEST:
        if hashlib.sha256(data).digest() != entry.digest:
            raise InvalidImage(f"TOC entry {entry.name}: SHA-256 does not match")
    return data


# -- blob meta ------------------------------------------------------------------------------------


def parse_blob_meta_header(buf: bytes) -> BlobMetaHeader:
    if len(buf) != BLOB_META_HEADER_SIZE:
        raise InvalidImage(f"blob meta header of {len(buf)} bytes")
    (magic, features, ci_comp, entries, offset, csize, usize, zoff, zsize, zcount) = (
        META_HEADER.unpack_from(buf)
    )
    (magic2,) = struct.unpack_from("<I", buf, META_MAGIC2_OFFSET)
    if magic != BLOB_META_MAGIC or magic2 != BLOB_META_MAGIC:
        raise InvalidImage(f"blob meta magic {magic:#x}/{magic2:#x}, expected {BLOB_META_MAGIC:#x}")
    return BlobMetaHeader(
        features=features,
        ci_compressor=codec.compressor_from_enum(ci_comp),
        ci_entries=entries,
        ci_offset=offset,
        ci_compressed_size=csize,
        ci_uncompressed_size=usize,
        zran_offset=zoff,
        zran_size=zsize,
        zran_count=zcount,
    )


def decode_ci(data: bytes, count: int, v2: bool) -> list[CiEntry]:
    """The first ``count`` ci entries of an uncompressed ci array (blob.md §8.2, §8.3)."""
    width = CI_V2_SIZE if v2 else CI_V1_SIZE
    if len(data) < count * width:
        raise InvalidImage(f"ci array of {len(data)} bytes is too short for {count} entries")
    out = []
    if not v2:
        for index, (u, c) in enumerate(CI_V1.iter_unpack(data[: count * width])):
            usize = (((u >> 8) & 0xF) << 20 | (u >> 44)) + 1
            csize = (((c >> 40) & 0xF) << 20 | (c >> 44)) + 1
            out.append(
                CiEntry(
                    index=index,
                    compressed_offset=c & 0xFF_FFFF_FFFF,
                    compressed_size=csize,
                    uncompressed_offset=u & 0xFFF_FFFF_F000,
                    uncompressed_size=usize,
                    compressed=csize != usize,
                )
            )
        return out
    for index, (u, c, d) in enumerate(CI_V2.iter_unpack(data[: count * width])):
        flags = u >> 56
        entry = CiEntry(
            index=index,
            compressed_offset=c & 0xFF_FFFF_FFFF,
            compressed_size=c >> 40,
            uncompressed_offset=(u & 0xFFFF_FFFF) << 12,
            uncompressed_size=((u >> 32) & 0xFF_FFFF) + 1,
            compressed=bool(flags & CI_COMPRESSED),
            flags=flags,
            crc32=d & 0xFFFF_FFFF if flags & CI_HAS_CRC32 else None,
            data=d,
        )
        if entry.crc32 == 0:
            raise InvalidImage(f"ci entry {index} has the CRC flag with a zero CRC")
        if not flags & (CI_COMPRESSED | CI_ENCRYPTED) and entry.compressed_size not in (
            0,
            entry.uncompressed_size,
        ):
            raise InvalidImage(f"ci entry {index}: uncompressed chunk with two different sizes")
        out.append(entry)
    return out


def read_blob_meta(f: SeekableReadable, info: BlobInfo) -> list[CiEntry]:
    """The ci array of a v6 blob, its header checked against the blob table's ``info``."""
    if info.chunk_count == 0:
        return []
    who = f"blob {info.blob_id or '<unnamed>'}"
    if info.ci_compressed_size == 0:
        raise InvalidImage(f"{who}: blob table records no chunk info array")
    raw = read_exact(
        f, info.ci_offset, info.ci_compressed_size + BLOB_META_HEADER_SIZE, f"{who} blob meta"
    )
    header = parse_blob_meta_header(raw[info.ci_compressed_size :])
    expected = {
        "entries": (header.ci_entries, info.chunk_count),
        "ci compressor": (header.ci_compressor, info.ci_compressor),
        "ci offset": (header.ci_offset, info.ci_offset),
        "ci compressed size": (header.ci_compressed_size, info.ci_compressed_size),
        "ci uncompressed size": (header.ci_uncompressed_size, info.ci_uncompressed_size),
    }
    for what, (have, want) in expected.items():
        if have != want:
            raise InvalidImage(f"{who}: blob meta header {what} {have} != blob table {want}")
    stored = raw[: info.ci_compressed_size]
    if header.ci_compressor == "none":
        if header.ci_compressed_size != header.ci_uncompressed_size:
            raise InvalidImage(f"{who}: raw ci array with two different sizes")
        ci = stored
    else:
        ci = _decompress(header.ci_compressor, stored, header.ci_uncompressed_size, f"{who} ci")
    entries = decode_ci(ci, header.ci_entries, bool(header.features & BlobFeature.CHUNK_INFO_V2))
    # Chunk data precedes the blob meta unless it lives in another blob (ref/zran types).
    data_end = (
        None if header.features & (BlobFeature.SEPARATE | BlobFeature.ZRAN) else info.ci_offset
    )
    for e in entries:
        if e.uncompressed_offset + e.uncompressed_size > info.uncompressed_size:
            raise InvalidImage(f"{who}: ci entry {e.index} lies beyond the uncompressed size")
        if data_end is not None and e.compressed_offset + e.compressed_size > data_end:
            raise InvalidImage(f"{who}: ci entry {e.index} points past the chunk data")
    return entries


# -- chunk data -----------------------------------------------------------------------------------


def _decompress(name: str, data: bytes, size: int, what: str) -> bytes:
    try:
        return codec.decompress(name, data, size)
    except InvalidImage as exc:
        raise InvalidImage(f"{what}: {exc}") from None


def _decode(
    f: SeekableReadable,
    who: str,
    compressor: str,
    offset: int,
    stored_size: int,
    size: int,
    compressed: bool,
) -> bytes:
    raw = read_exact(f, offset, stored_size, who)
    if compressed:
        return _decompress(compressor, raw, size, who)
    if stored_size != size:
        raise InvalidImage(f"{who}: stored raw with {stored_size} bytes for {size}")
    return raw


def _verify(who: str, data: bytes, digester: str, digest: bytes | None, crc: int | None) -> None:
    if crc is not None:
        actual = codec.crc32c(data)
        if actual != crc:
            raise InvalidImage(f"{who}: CRC-32C {actual:#010x} != recorded {crc:#010x}")
    if digest is not None:
        actual_digest = codec.digest(digester, data)
        if actual_digest != digest:
            raise InvalidImage(
                f"{who}: {digester} digest {actual_digest.hex()} != chunk id {digest.hex()}"
            )


def _who(blob: BlobInfo, index: int) -> str:
    return f"blob {blob.blob_id or '<unnamed>'} chunk {index}"


def read_chunk(f: SeekableReadable, chunk: Chunk, digester: str, verify: bool = True) -> bytes:
    """A chunk's uncompressed bytes. A recorded CRC is always checked (as nydusd does), the
    chunk id only with ``verify``."""
    who = _who(chunk.blob, chunk.index)
    if chunk.blob.features & BlobFeature.ZRAN:  # ``f`` is a rafs.zran.reader.ZranBlob
        data = f.chunk(chunk.index)  # type: ignore[attr-defined]
        if len(data) != chunk.uncompressed_size:
            raise InvalidImage(
                f"{who}: {len(data)} bytes where the bootstrap says {chunk.uncompressed_size}"
            )
        _verify(who, data, digester, chunk.digest if verify else None, chunk.crc32)
        return data
    data = _decode(
        f,
        who,
        chunk.blob.compressor,
        chunk.compressed_offset,
        chunk.compressed_size,
        chunk.uncompressed_size,
        chunk.compressed,
    )
    _verify(who, data, digester, chunk.digest if verify else None, chunk.crc32)
    return data


def iter_file(
    node: Node,
    open_blob: Callable[[BlobInfo], SeekableReadable],
    digester: str,
    verify: bool = True,
) -> Iterator[bytes]:
    """A regular file's content, chunk by chunk.

    ``open_blob`` is called once per distinct blob of the file; the caller owns (and closes)
    the file objects it returns.
    """
    opened: dict[int, SeekableReadable] = {}
    total = 0
    for chunk in node.chunks:
        f = opened.get(id(chunk.blob))
        if f is None:
            f = opened[id(chunk.blob)] = open_blob(chunk.blob)
        data = read_chunk(f, chunk, digester, verify)
        total += len(data)
        yield data
    if total != node.size:
        raise InvalidImage(f"file chunks hold {total} bytes, the inode says {node.size}")


_ZEROS = bytes(1 << 20)


def _write_zeros(out: BinaryIO, count: int) -> None:
    while count:
        step = min(count, len(_ZEROS))
        out.write(_ZEROS[:step] if step < len(_ZEROS) else _ZEROS)
        count -= step


def write_blob_view(
    f_in: SeekableReadable,
    info: BlobInfo,
    chunks: Iterable[Chunk] | None,
    out: BinaryIO,
    verify: bool = True,
) -> int:
    """Write the blob's uncompressed address space to ``out`` (sequentially); its length.

    Every distinct chunk is decompressed at its uncompressed offset, gaps are zeros, and the
    result is exactly ``info.uncompressed_size`` bytes: the content of an EROFS extra device or
    fscache cache file (rafs-v6.md §12.3). Chunk locations come from the blob's own ci array
    when the blob has one (v6), else from ``chunks`` (v5). ``chunks`` of this blob, when given,
    must agree with the ci array and supply ids (and CRCs) to check the data against.
    """
    if info.features & BlobFeature.ZRAN:  # ``f_in`` is a rafs.zran.reader.ZranBlob
        from rafs.zran.reader import write_zran_view

        given = {c.index: (c.digest if verify else None, c.crc32) for c in chunks or ()}
        return write_zran_view(f_in, given, out)  # type: ignore[arg-type]
    known: dict[int, Chunk] = {}
    for chunk in chunks or ():
        if chunk.blob is not info:
            raise InvalidImage(f"chunk {chunk.index} belongs to another blob than {info!r}")
        known.setdefault(chunk.index, chunk)
    places: list[CiEntry]
    if info.ci_compressed_size:
        places = read_blob_meta(f_in, info)
        for index, chunk in known.items():
            entry = places[index] if index < len(places) else None
            if entry is None or (
                entry.compressed_offset,
                entry.compressed_size,
                entry.uncompressed_offset,
                entry.uncompressed_size,
            ) != (
                chunk.compressed_offset,
                chunk.compressed_size,
                chunk.uncompressed_offset,
                chunk.uncompressed_size,
            ):
                raise InvalidImage(f"{_who(info, index)}: bootstrap and ci array disagree")
    else:
        places = [
            CiEntry(
                c.index,
                c.compressed_offset,
                c.compressed_size,
                c.uncompressed_offset,
                c.uncompressed_size,
                c.compressed,
                crc32=c.crc32,
            )
            for c in known.values()
        ]
    places.sort(key=lambda e: (e.uncompressed_offset, e.index))
    pos = 0
    for entry in places:
        who = _who(info, entry.index)
        if entry.uncompressed_offset < pos:
            raise InvalidImage(f"{who} overlaps the chunk before it")
        end = entry.uncompressed_offset + entry.uncompressed_size
        if end > info.uncompressed_size:
            raise InvalidImage(f"{who} ends at {end}, beyond {info.uncompressed_size}")
        if entry.flags & (CI_ZRAN | CI_BATCH | CI_ENCRYPTED):
            raise Unsupported(f"{who}: zran, batch and encrypted chunks are not supported")
        data = _decode(
            f_in,
            who,
            info.compressor,
            entry.compressed_offset,
            entry.compressed_size,
            entry.uncompressed_size,
            entry.compressed,
        )
        recorded = known.get(entry.index)
        crc = entry.crc32 if entry.crc32 is not None else (recorded.crc32 if recorded else None)
        digest = recorded.digest if recorded is not None and verify else None
        _verify(who, data, info.digester, digest, crc)
        _write_zeros(out, entry.uncompressed_offset - pos)
        out.write(data)
        pos = end
    _write_zeros(out, info.uncompressed_size - pos)
    return info.uncompressed_size
