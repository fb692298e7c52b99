"""Blob writer and readers: upstream fixture blobs, then round trips of our own blobs."""

from __future__ import annotations

import hashlib
import io
import random
import stat
import struct
from dataclasses import replace

import blake3
import pytest

from rafs import codec
from rafs.blob.ondisk import BlobFeature, encode_ci_v1, encode_meta_header, section_header
from rafs.blob.reader import (
    CiEntry,
    decode_ci,
    extract_toc_entry,
    iter_file,
    parse_blob_meta_header,
    parse_section_header,
    read_blob_meta,
    read_chunk,
    read_sections,
    read_toc,
    write_blob_view,
)
from rafs.blob.writer import BlobWriter
from rafs.errors import InvalidImage, InvalidInput
from rafs.model import BlobInfo, Chunk, Node
from rafs.options import RafsOptions
from tests.rafs.chunking import chunk_files, serial_chunker

BE7D = "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
TOC_BLOB = "2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca"
LZ4_BLOB = "d7b86b1e74e316fe945741d1a9fa1b271459fe41481e304977659e0c6ecf56ac"
RAW_BLOB = "7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00"
ZRAN_META = "233c72f2b6b698c07021c4da367cfe2dff4f049efbaa885ca0ff760ea297865a.blob.meta"

# ---------------------------------------------------------------------------------------------
# Upstream fixtures (fixtures.md §4, §6, §7, §8)


def be7d_info() -> BlobInfo:
    """The blob table entry of rafs-v6-2.2.boot (fixtures.md §6)."""
    return BlobInfo(
        chunk_size=0x100000,
        compressor="zstd",
        digester="blake3",
        blob_id=BE7D,
        chunk_count=2,
        compressed_size=14554,
        uncompressed_size=36864,
        features=0x7000_0021,
        ci_compressor="none",
        ci_offset=8314,
        ci_compressed_size=32,
        ci_uncompressed_size=32,
        toc_size=1024,
        toc_digest=bytes.fromhex(
            "cfc89ed0739aef4eb1bf0904f0dfdb1c857134eca7319465baae95a99b84acde"
        ),
    )


def test_be7d_sections_and_headers(upstream):
    data = (upstream / "blobs" / BE7D).read_bytes()
    f = io.BytesIO(data)
    sections = [(s.name, s.offset, s.size) for s in read_sections(f, len(data))]
    assert sections == [
        ("image.blob", 0, 7802),
        ("blob.meta", 8314, 4128),
        ("blob.digest", 12954, 64),
        ("rafs.blob.toc", 13530, 512),
    ]
    # Our header encoder reproduces every section header byte for byte (blob.md §7).
    for name, offset, size in sections:
        assert data[offset + size : offset + size + 512] == section_header(name, size)
    assert (
        section_header("image.blob", 7802)[124:156] == b"00000017172\x0000000000000\x000005641\x00"
    )


def test_be7d_toc(upstream):
    data = (upstream / "blobs" / BE7D).read_bytes()
    f = io.BytesIO(data)
    info = be7d_info()
    assert hashlib.sha256(data[-1024:]).digest() == info.toc_digest
    toc = read_toc(f, len(data), info.toc_digest)
    assert [(e.name, e.compressor) for e in toc] == [
        ("image.blob", "none"),
        ("blob.meta", "none"),
        ("blob.meta.header", "none"),
        ("blob.digest", "none"),
    ]
    blob_entry, meta, header, digests = toc
    # Fixture-era quirk: offset = end of data; digest covers the data plus its tar header.
    assert (blob_entry.compressed_offset, blob_entry.compressed_size) == (7802, 7802)
    assert blob_entry.uncompressed_size == 36864
    assert blob_entry.digest == hashlib.sha256(data[:8314]).digest()
    assert (meta.compressed_offset, meta.compressed_size, meta.uncompressed_size) == (8314, 32, 32)
    assert (header.compressed_offset, header.compressed_size) == (8346, 4096)
    assert (digests.compressed_offset, digests.compressed_size) == (12954, 64)
    for entry in (meta, header, digests):
        assert (
            extract_toc_entry(f, entry) == data[entry.compressed_offset :][: entry.compressed_size]
        )
    with pytest.raises(InvalidImage, match="TOC digest"):
        read_toc(f, len(data), bytes(31) + b"\x01")


def test_be7d_blob_meta_and_chunks(upstream):
    data = (upstream / "blobs" / BE7D).read_bytes()
    f = io.BytesIO(data)
    info = be7d_info()
    header = parse_blob_meta_header(data[8346:12442])
    assert header.features == 0x7000_0021 and header.ci_entries == 2
    assert data[8346:12442] == encode_meta_header(0x7000_0021, "none", 2, 8314, 32, 32)
    entries = read_blob_meta(f, info)
    assert entries == [
        CiEntry(0, 0, 4828, 0, 16931, True),
        CiEntry(1, 4828, 2974, 20480, 13400, True),
    ]
    ids = [data[12954:12986], data[12986:13018]]
    chunks = [
        Chunk(info, e.index, ids[e.index], e.compressed_offset, e.compressed_size,
              e.uncompressed_offset, e.uncompressed_size, e.compressed)
        for e in entries
    ]  # fmt: skip
    assert b"".join(encode_ci_v1(c) for c in chunks) == data[8314:8346]
    for chunk in chunks:
        plain = read_chunk(f, chunk, "blake3")
        assert len(plain) == chunk.uncompressed_size
        assert blake3.blake3(plain).digest() == chunk.digest
    # blob.md §13: the builder's id skips the digest array; rconv's ids never do.
    assert hashlib.sha256(data[:12954] + data[13018:]).hexdigest() == BE7D
    view = io.BytesIO()
    assert write_blob_view(f, info, chunks, view) == 36864
    image = view.getvalue()
    assert len(image) == 36864
    assert image[:16931] == read_chunk(f, chunks[0], "blake3")
    assert image[16931:20480] == bytes(20480 - 16931)
    assert image[20480:33880] == read_chunk(f, chunks[1], "blake3")
    assert image[33880:] == bytes(36864 - 33880)
    # The blob alone (ci array, no bootstrap chunks) gives the same image.
    alone = io.BytesIO()
    write_blob_view(f, info, None, alone)
    assert alone.getvalue() == image


def test_be7d_meta_validation_against_table(upstream):
    data = (upstream / "blobs" / BE7D).read_bytes()
    f = io.BytesIO(data)
    for field, value in [
        ("chunk_count", 3),
        ("ci_compressor", "zstd"),
        ("ci_offset", 8313),
        ("ci_uncompressed_size", 48),
    ]:
        info = be7d_info()
        setattr(info, field, value)
        with pytest.raises(InvalidImage):
            read_blob_meta(f, info)
    broken = bytearray(data)
    broken[8346 + 4092] ^= 1  # magic2
    with pytest.raises(InvalidImage, match="magic"):
        read_blob_meta(io.BytesIO(bytes(broken)), be7d_info())


def test_toc_fixture(upstream):
    data = (upstream / "toc" / TOC_BLOB).read_bytes()
    f = io.BytesIO(data)
    assert hashlib.sha256(data).hexdigest() == TOC_BLOB
    digest = bytes.fromhex("4fdfbb36ef74a3c63a28e2abafa54044c7594155beb6ddad9f36825cfe58286c")
    toc = read_toc(f, len(data), digest)
    assert [(e.name, e.compressor) for e in toc] == [
        ("image.blob", "none"),
        ("blob.meta", "none"),
        ("blob.meta.header", "none"),
        ("image.boot", "zstd"),
    ]
    assert [s.name for s in read_sections(f, len(data))] == [
        "image.blob",
        "blob.meta",
        "image.boot",
        "rafs.blob.toc",
    ]
    meta, header, boot = toc[1], toc[2], toc[3]
    assert meta.uncompressed_size == 0x30 and len(extract_toc_entry(f, meta)) == 0x30
    assert len(extract_toc_entry(f, header)) == 0x1000
    assert (boot.compressed_offset, boot.compressed_size) == (7997, 501)
    bootstrap = extract_toc_entry(f, boot)
    assert len(bootstrap) == 20480
    assert struct.unpack_from("<I", bootstrap, 1024)[0] == 0xE0F5E1E2
    hdr = parse_blob_meta_header(extract_toc_entry(f, header))
    ci = decode_ci(extract_toc_entry(f, meta), hdr.ci_entries, v2=False)
    assert len(ci) == 3 and hdr.ci_offset == 3341
    assert [e.uncompressed_offset % 4096 for e in ci] == [0, 0, 0]
    assert sum(e.compressed_size for e in ci) == 2829
    # A damaged entry is refused on extraction.
    broken = bytearray(data)
    broken[7997 + 100] ^= 0xFF
    with pytest.raises(InvalidImage):
        extract_toc_entry(io.BytesIO(bytes(broken)), boot)


# fixtures.md §4: (compressed_offset, compressed_size, uncompressed_size, compressed, blake3 id)
LZ4_TABLE = """
0 778 944 1 1d6c6721690cb5399df84c95901afda43192092f6ebecc8c6a10058b460dceeb
778 837 1497 1 b98feba6955703140aa56755e645fec861024879b8d39fc4eaf5c78ed3b28fd5
1615 203 203 0 fd81be82630d02c030a83d21b25f69697267f2004fe86163fd2d13a6099dd5f5
1818 90 90 0 276b9da2d71a793a940421fae6a5e5b6b9fa63cba2d5b935c4366d49a3ee7548
1908 3 3 0 ecf87622ea5c78b2b1f44016ea95d14feb3bd825f7544e7201862f3d12b4cd1b
1911 650 1174 1 16322441c1f934f9332d7696b548b10d335657051bb03c3047b1323fc87f7b25
2561 882808 1048576 1 91154097eac62e00a950f44aeeccdabc0677b8e8c7ee9631a8d1527ca3b62a81
885369 100121 367104 1 daacf6958ee830c517490073b009d3408c7eb51b5acb47e47d02ca9378759efe
985490 291 307 1 fa02373dfc8c948f241a1a7a82613685ded5eb4ca7af6cee7dee2c7334c24b2e
985781 57 127 1 fc59af28ab20959f95344953771ecd1bd7d60378ae9bf42c37bc62417c8ce5a6
985838 242 340 1 48e8c8dc82ec84ff1e0dec4878c807fd5fd252be841f6897f92047bc04a97a39
986080 105 243 1 9c23fc96c2ff8b9fb31a70a0d1e4ec9e01df6482eeb16548c6f344aae8e220a5
986185 376 441 1 7801142c8cdda80d44ac11ca8b6441c603fe7e5f20c602c915d4e0e22b1cd13c
986561 4122 1048576 1 488de202f73bd976de4e7048f4e1f39a776d86d582b7348ff53bf432b987fca8
990683 7 7 0 534659321d2eea6b13aea4f4c94c3b4f624622295da31506722b47a8eb9d726c
990690 4000 1016839 1 6adf7caa40bcf6561e94d2c90aa76eb97913b7e1049f786fc016840947c0b7be
994690 20 2055 1 99bde056f7f1fe2007f8051d9c83faa360ca0b0b53ac6d5a4072bab90b8b4fe9
994710 27 1024 1 87f637403ee383ebf9b1a84e764dc55d2b9fd097ffd9530c61e3fe194c4b7501
994737 40 4096 1 cc410ab3828f31464b1ef3066f88010a5f95bd7f87d2ac96eb64eda35c1a0013
994777 43 5000 1 b85282bc1994948d8f5f0f6d00820052f550ee38a1ea96e4fd3c06d8cbcc21da
994820 29 1024 1 2543b096da650b11df88337183431e99d1a8cb2ddab1dfac890f83e11c345b93
994849 41 4096 1 fba2695411a1f705681e1ea2a2a9d73c44fdac4636222b2682044fc0e4b61668
994890 45 5000 1 788c174d129c55fcbe0b51fc8fa9b11551a1ed35f86639a56b1cbe81ab63aeef
"""


def test_lz4_fixture_blob(upstream):
    lz4_path = upstream / "repeatable" / "blobs" / LZ4_BLOB
    raw = (upstream / "repeatable" / "blobs" / RAW_BLOB).read_bytes()
    info = BlobInfo(compressor="lz4_block", digester="blake3", blob_id=LZ4_BLOB, chunk_count=23)
    chunks = []
    uoff = 0
    for index, line in enumerate(LZ4_TABLE.split()[i : i + 5] for i in range(0, 115, 5)):
        coff, csize, usize, flag, hexid = line
        chunks.append(
            Chunk(info, index, bytes.fromhex(hexid), int(coff), int(csize), uoff, int(usize),
                  flag == "1")
        )  # fmt: skip
        uoff += int(usize)
    info.uncompressed_size = uoff
    assert len(chunks) == 23 and uoff == len(raw) == 3508766
    assert sorted(c.uncompressed_size for c in chunks if not c.compressed) == [3, 7, 90, 203]
    with open(lz4_path, "rb") as f:
        for chunk in chunks:
            plain = read_chunk(f, chunk, "blake3")
            assert len(plain) == chunk.uncompressed_size
            assert blake3.blake3(plain).digest() == chunk.digest
            f.seek(chunk.compressed_offset)
            stored = f.read(chunk.compressed_size)
            if not chunk.compressed:
                # Stored raw because LZ4 did not shrink them (blob.md §4); ours does not either.
                assert stored == plain and codec.compress("lz4_block", plain) == (plain, False)
        # v5 (no ci array): the view from the bootstrap's chunks is the uncompressed blob.
        view = io.BytesIO()
        write_blob_view(f, info, chunks, view)
    assert view.getvalue() == raw


def test_zran_blob_meta_cache_file(upstream):
    data = (upstream / "zran" / ZRAN_META).read_bytes()
    assert len(data) == 667648
    header = parse_blob_meta_header(data[663552:])
    assert header.features == 0xF
    assert header.ci_compressor == "none"
    assert (header.ci_entries, header.ci_offset) == (163, 0)
    assert (header.ci_compressed_size, header.ci_uncompressed_size) == (660112, 660112)
    assert (header.zran_offset, header.zran_size, header.zran_count) == (3912, 0xA0348, 21)
    ci = decode_ci(data[: header.ci_uncompressed_size], header.ci_entries, v2=True)
    first = ci[0]
    assert (first.uncompressed_offset, first.uncompressed_size) == (0, 1404)
    assert (first.compressed_offset, first.compressed_size) == (184, 649)
    assert first.flags == 0x03 and first.compressed  # compressed | zran
    assert first.data == (0 << 32) | 1024
    assert first.crc32 is None
    assert all(e.uncompressed_offset % 4096 == 0 for e in ci)
    assert all(e.flags & 0x02 for e in ci)


# ---------------------------------------------------------------------------------------------
# Our writer

SMALL = 0x1000  # smallest legal chunk size keeps multi-chunk tests fast


def text(n: int, seed: int = 0) -> bytes:
    rnd = random.Random(seed)
    words = [bytes(rnd.choice(b"abcdefghij") for _ in range(rnd.randint(2, 9))) for _ in range(64)]
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(words) + b" "
    return bytes(out[:n])


def noise(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def write_blob(files, *, bootstrap=None, **kw) -> tuple[bytes, BlobInfo, list[list[Chunk]]]:
    out = io.BytesIO()
    w, lists = chunk_files(out, files, **kw)
    info = w.finish(bootstrap)
    return out.getvalue(), info, lists


def stored_chunks(lists) -> list[Chunk]:
    seen: dict[int, Chunk] = {}
    for chunks in lists:
        for c in chunks:
            seen.setdefault(c.index, c)
    return [seen[i] for i in sorted(seen)]


FILES = [
    text(3 * SMALL + 100),  # multi-chunk with a short tail
    noise(2 * SMALL),  # incompressible: stored raw
    b"",  # empty: no chunks
    text(SMALL, seed=5),  # exactly one chunk
    text(3 * SMALL + 100),  # a duplicate file
    text(100, seed=9),  # tiny
]


@pytest.mark.parametrize("version", [5, 6])
@pytest.mark.parametrize("compressor", ["none", "lz4_block", "zstd"])
def test_round_trip(version, compressor):
    data, info, lists = write_blob(
        FILES, fs_version=version, compressor=compressor, chunk_size=SMALL
    )
    f = io.BytesIO(data)
    assert info.blob_id == hashlib.sha256(data).hexdigest()
    assert info.compressed_size == len(data)
    assert (info.chunk_size, info.compressor, info.digester) == (SMALL, compressor, "blake3")
    assert [len(c) for c in lists] == [4, 2, 0, 1, 4, 1]
    assert lists[4] == lists[0] and all(a is b for a, b in zip(lists[4], lists[0], strict=True))
    chunks = stored_chunks(lists)
    assert info.chunk_count == len(chunks) == 8
    assert [c.index for c in chunks] == list(range(8))
    assert all(c.blob is info for c in chunks)
    # Content comes back through the chunk lists.
    for content, file_chunks in zip(FILES, lists, strict=True):
        node = Node(mode=stat.S_IFREG | 0o644, size=len(content), chunks=file_chunks)
        assert b"".join(iter_file(node, lambda _b: f, "blake3")) == content
    # Offsets: compressed contiguous from 0; uncompressed 4K-aligned for v6, packed for v5.
    coff = 0
    uoff = 0
    for c in chunks:
        assert c.compressed_offset == coff
        assert c.uncompressed_offset == uoff
        assert c.digest == blake3.blake3(read_chunk(f, c, "blake3")).digest()
        assert c.crc32 == codec.crc32c(read_chunk(f, c, "blake3"))
        assert c.compressed == (c.compressed_size != c.uncompressed_size)
        coff += c.compressed_size
        uoff += -(-c.uncompressed_size // 4096) * 4096 if version == 6 else c.uncompressed_size
    assert info.uncompressed_size == uoff
    raw_chunks = [c for c in chunks if not c.compressed]
    assert {lists[1][0].index, lists[1][1].index} <= {c.index for c in raw_chunks}
    if compressor == "none":
        assert raw_chunks == chunks
    else:
        assert lists[0][0].compressed
    view = io.BytesIO()
    write_blob_view(f, info, chunks, view)
    image = view.getvalue()
    assert len(image) == info.uncompressed_size
    for content, file_chunks in zip(FILES, lists, strict=True):
        assert b"".join(
            image[c.uncompressed_offset :][: c.uncompressed_size] for c in file_chunks
        ) == (content)
    if version == 5:
        assert len(data) == coff  # nothing but chunk data
        assert info.features == BlobFeature.CAP_TAR_TOC
        assert (info.ci_offset, info.ci_compressed_size, info.toc_size) == (0, 0, 0)
    else:
        check_v6_layout(data, info, chunks, coff)


def check_v6_layout(data: bytes, info: BlobInfo, chunks: list[Chunk], data_end: int) -> None:
    f = io.BytesIO(data)
    n = len(chunks)
    assert info.features == 0x7000_0021
    sections = read_sections(f, len(data))
    assert [(s.name, s.offset, s.size) for s in sections] == [
        ("image.blob", 0, data_end),
        ("blob.meta", info.ci_offset, info.ci_compressed_size + 4096),
        ("blob.digest", info.ci_offset + info.ci_compressed_size + 4096 + 512, 32 * n),
        ("rafs.blob.toc", len(data) - 512 - 4 * 128, 4 * 128),
    ]
    assert info.ci_offset == data_end + 512
    assert info.ci_uncompressed_size == 16 * n
    assert info.toc_size == 4 * 128 + 512
    assert info.toc_digest == hashlib.sha256(data[-info.toc_size :]).digest()
    toc = read_toc(f, len(data), info.toc_digest)
    assert [e.name for e in toc] == ["image.blob", "blob.meta", "blob.meta.header", "blob.digest"]
    blob_entry = toc[0]
    assert (blob_entry.compressed_offset, blob_entry.compressed_size) == (0, data_end)
    assert blob_entry.uncompressed_size == info.uncompressed_size
    assert blob_entry.digest == hashlib.sha256(data[: data_end + 512]).digest()
    assert toc[1].compressor == info.ci_compressor
    for entry in toc[1:]:
        extract_toc_entry(f, entry)
    assert extract_toc_entry(f, toc[3]) == b"".join(c.digest for c in chunks)
    # Reserved bytes of every TOC entry are zero (blob.md §10).
    raw_toc = data[-info.toc_size : -512]
    assert all(raw_toc[i * 128 + 80 : (i + 1) * 128] == bytes(48) for i in range(4))
    assert all(raw_toc[i * 128 + 4 : i * 128 + 8] == bytes(4) for i in range(4))
    header = parse_blob_meta_header(extract_toc_entry(f, toc[2]))
    assert header.features == info.features and header.ci_entries == n
    entries = read_blob_meta(f, info)
    assert [
        (e.compressed_offset, e.compressed_size, e.uncompressed_offset, e.uncompressed_size)
        for e in entries
    ] == [
        (c.compressed_offset, c.compressed_size, c.uncompressed_offset, c.uncompressed_size)
        for c in chunks
    ]
    # The ci array alone rebuilds the same uncompressed image.
    with_chunks, alone = io.BytesIO(), io.BytesIO()
    write_blob_view(f, info, chunks, with_chunks)
    write_blob_view(f, info, None, alone)
    assert alone.getvalue() == with_chunks.getvalue()


def test_default_chunk_size_boundaries():
    big = text(0x100000 * 2 + 4096)
    _, info, (chunks,) = write_blob([big])
    assert [c.uncompressed_size for c in chunks] == [0x100000, 0x100000, 4096]
    assert [c.uncompressed_offset for c in chunks] == [0, 0x100000, 0x200000]
    assert info.chunk_count == 3 and info.uncompressed_size == 0x200000 + 4096


def test_repeated_chunks_are_stored_once():
    unit = noise(SMALL, seed=3)
    once, info1, _ = write_blob([unit], chunk_size=SMALL, compressor="none")
    many, info2, (chunks,) = write_blob([unit * 6], chunk_size=SMALL, compressor="none")
    assert info2.chunk_count == 1 and len(chunks) == 6
    assert len({id(c) for c in chunks}) == 1
    assert many == once  # nothing at all was added for the repeats
    # A chunk of the same digest but different size is a different chunk.
    _, info3, (c3,) = write_blob([unit + unit[:100]], chunk_size=SMALL)
    assert info3.chunk_count == 2


def test_uncompressed_offsets_v6_aligned_v5_packed():
    _, info, (a, b) = write_blob([text(4096), text(10, seed=4)], fs_version=6)
    assert a[0].uncompressed_size == 4096 and b[0].uncompressed_offset == 4096
    _, info6, (_, d) = write_blob([text(100), text(10, seed=4)], fs_version=6)
    assert d[0].uncompressed_offset == 4096 and info6.uncompressed_size == 8192
    _, info5, (_, b) = write_blob([text(100), text(10, seed=4)], fs_version=5)
    assert b[0].uncompressed_offset == 100 and info5.uncompressed_size == 110


def test_incompressible_chunk_is_raw():
    content = noise(3 * SMALL)
    data, info, (chunks,) = write_blob([content], chunk_size=SMALL, compressor="zstd")
    assert all(not c.compressed and c.compressed_size == c.uncompressed_size for c in chunks)
    assert data[: len(content)] == content


def test_empty_blob_layouts():
    # v6 without chunks: no image.blob, ci or digest sections (blob.md §10); TOC still ends it.
    data, info, lists = write_blob([b"", b""])
    assert lists == [[], []]
    assert info.chunk_count == 0 and info.uncompressed_size == 0
    assert data == section_header("rafs.blob.toc", 0)
    assert info.toc_size == 512 and info.toc_digest == hashlib.sha256(data).digest()
    assert read_toc(io.BytesIO(data), len(data), info.toc_digest) == []
    assert info.features == 0x7000_0001
    assert (info.ci_offset, info.ci_compressed_size, info.ci_uncompressed_size) == (0, 0, 0)
    assert info.blob_id == hashlib.sha256(data).hexdigest()
    # v5 without chunks or bootstrap: an empty file.
    data5, info5, _ = write_blob([b""], fs_version=5)
    assert data5 == b"" and info5.blob_id == hashlib.sha256(b"").hexdigest()


def test_v6_inline_bootstrap():
    boot = bytes(1024) + b"\xe2\xe1\xf5\xe0" + text(20000)
    data, info, lists = write_blob([text(5000)], bootstrap=boot)
    f = io.BytesIO(data)
    assert info.features == 0x7000_0023
    assert [s.name for s in read_sections(f, len(data))] == [
        "image.blob",
        "blob.meta",
        "blob.digest",
        "image.boot",
        "rafs.blob.toc",
    ]
    toc = read_toc(f, len(data), info.toc_digest)
    assert toc[-1].name == "image.boot" and toc[-1].compressor == "zstd"
    assert extract_toc_entry(f, toc[-1]) == boot
    assert info.toc_size == 5 * 128 + 512
    assert parse_blob_meta_header(extract_toc_entry(f, toc[2])).features == info.features
    # Bootstrap only (layer without file data, image.md §4).
    data, info, _ = write_blob([b""], bootstrap=noise(3000))
    toc = read_toc(io.BytesIO(data), len(data), info.toc_digest)
    assert [(e.name, e.compressor, e.compressed_offset) for e in toc] == [("image.boot", "none", 0)]
    assert data[:3000] == noise(3000)
    assert info.features == 0x7000_0003 and info.chunk_count == 0


def test_v5_inline_bootstrap():
    boot = text(9000, seed=11)
    content = text(5000)
    out = io.BytesIO()
    chunker = serial_chunker(out, fs_version=5)
    (chunk,) = chunker.add_file(io.BytesIO(content), len(content))
    w = chunker.writer
    partial = w.close_data(inline_bootstrap=True)
    # What the inlined bootstrap records before the blob is finished (rafs-v5.md §8).
    assert partial.compressed_size == chunk.compressed_size + 512
    assert partial.features == 0x5000_0002
    info = w.finish(boot)
    data = out.getvalue()
    end = chunk.compressed_size
    assert data[end : end + 512] == section_header("image.blob", end)
    assert data[end + 512 : end + 512 + len(boot)] == boot
    assert data[-512:] == section_header("image.boot", len(boot))
    assert len(data) == end + 1024 + len(boot) == info.compressed_size
    assert info.toc_size == 0 and info.ci_compressed_size == 0
    assert info.blob_id == hashlib.sha256(data).hexdigest()
    # Without file data: [bootstrap][image.boot header].
    data, info, _ = write_blob([], bootstrap=boot, fs_version=5)
    assert data == boot + section_header("image.boot", len(boot))
    assert [s.name for s in read_sections(io.BytesIO(data), len(data))] == ["image.boot"]


def test_inline_announcement_must_match():
    w = BlobWriter(io.BytesIO())
    w.close_data()
    with pytest.raises(RuntimeError):
        w.finish(b"boot")


def test_ci_array_is_compressed_when_it_pays():
    # Many small identical-size chunks: the ci array is regular enough to shrink.
    files = [text(100, seed=s) for s in range(300)]
    for compressor in ("zstd", "lz4_block"):
        data, info, lists = write_blob(files, compressor=compressor)
        assert info.ci_compressor == compressor
        assert info.ci_compressed_size < info.ci_uncompressed_size == 16 * info.chunk_count
        entries = read_blob_meta(io.BytesIO(data), info)
        assert [e.uncompressed_offset for e in entries] == [4096 * i for i in range(300)]


def test_deterministic_output_across_pool_sizes():
    files = [text(5 * SMALL + 17, seed=2), noise(3 * SMALL), text(5 * SMALL + 17, seed=2)]
    outputs = {
        write_blob(files, chunk_size=SMALL, workers=w, bootstrap=b"boot" * 100)[0]
        for w in (0, 1, 2, 4)
    }
    outputs.add(write_blob(files, chunk_size=SMALL, workers=2, bootstrap=b"boot" * 100)[0])
    assert len(outputs) == 1


def test_crc_options(monkeypatch):
    content = text(3 * SMALL)
    _, _, (chunks,) = write_blob([content], chunk_size=SMALL, crc32=False)
    assert all(c.crc32 is None for c in chunks)
    # A true CRC of zero cannot be recorded (blob.md §3): the chunk carries no CRC instead.
    monkeypatch.setattr(codec, "crc32c", lambda data: 0)
    _, _, (chunks,) = write_blob([content], chunk_size=SMALL)
    assert all(c.crc32 is None for c in chunks)


def test_writer_only_appends():
    class Pipe:
        def __init__(self):
            self.parts = []

        def write(self, b):
            self.parts.append(bytes(b))
            return len(b)

    pipe = Pipe()
    w, _ = chunk_files(pipe, [text(3 * 0x100000 + 5)], workers=2)
    info = w.finish(b"boot")
    data = b"".join(pipe.parts)
    assert info.blob_id == hashlib.sha256(data).hexdigest()


def test_stored_chunks_assemble_the_same_blob():
    """Copying another writer's stored chunks gives byte for byte the blob that writing
    those files directly gives, whether the bytes come with the placement or later."""
    files = [text(3 * SMALL + 5, seed=7), noise(SMALL), text(100, seed=8)]
    direct, direct_info, _ = write_blob(files[1:], chunk_size=SMALL)
    source, _, per_file = write_blob(files, chunk_size=SMALL)
    wanted = per_file[1] + per_file[2]  # drop the first file's chunks

    def stored(chunks):
        return b"".join(source[c.compressed_offset : c.compressed_offset + c.compressed_size]
                        for c in chunks)  # fmt: skip

    out = io.BytesIO()
    w = BlobWriter(out, RafsOptions(chunk_size=SMALL))
    placed = w.place_stored_chunks(wanted)
    w.write_placed(stored(wanted))
    assert w.finish().blob_id == direct_info.blob_id and out.getvalue() == direct
    assert [c.index for c in placed] == [0, 1] and placed[1].compressed_offset > 0

    out = io.BytesIO()
    w = BlobWriter(out, RafsOptions(chunk_size=SMALL))
    placed = w.place_stored_chunks(wanted)  # offsets known before any byte is written
    assert out.getvalue() == b""
    assert [(c.compressed_offset, c.uncompressed_offset) for c in placed] == [
        (0, 0), (wanted[0].compressed_size, 4096)
    ]  # fmt: skip
    with pytest.raises(RuntimeError, match="not written"):
        w.close_data()
    for chunk in wanted:
        w.write_placed(stored([chunk]))
    with pytest.raises(InvalidImage, match="placed bytes due"):
        w.write_placed(b"x")
    assert w.finish().blob_id == direct_info.blob_id and out.getvalue() == direct


def test_hash_placed_leaves_the_chunk_data_where_it_lies():
    """A blob spliced from byte ranges of another blob plus ``out``: the same bytes and id as
    the blob ``write_placed`` writes whole."""
    files = [text(3 * SMALL, seed=11), text(SMALL + 5, seed=12), text(2 * SMALL, seed=13)]
    source, _, per_file = write_blob(files, chunk_size=SMALL)
    wanted = per_file[0][1:] + per_file[2]  # two runs: a gap where the dropped chunks were
    expected = io.BytesIO()
    w = BlobWriter(expected, RafsOptions(chunk_size=SMALL))
    w.place_stored_chunks(wanted)
    for c in wanted:
        w.write_placed(source[c.compressed_offset : c.compressed_offset + c.compressed_size])
    want_id = w.finish().blob_id

    tail = io.BytesIO()
    w = BlobWriter(tail, RafsOptions(chunk_size=SMALL))
    w.place_stored_chunks(wanted)
    runs = []
    for run in (wanted[: len(per_file[0]) - 1], wanted[len(per_file[0]) - 1 :]):
        start = run[0].compressed_offset
        end = run[-1].compressed_offset + run[-1].compressed_size
        runs.append(source[start:end])
        w.hash_placed(memoryview(source)[start:end])
    info = w.finish()
    assert info.blob_id == want_id
    assert b"".join(runs) + tail.getvalue() == expected.getvalue()
    assert info.compressed_size == len(expected.getvalue())
    with pytest.raises(InvalidImage, match="placed bytes due"):
        w = BlobWriter(io.BytesIO(), RafsOptions(chunk_size=SMALL))
        w.place_stored_chunks(wanted[:1])
        w.hash_placed(source[: wanted[0].compressed_size + 1])


def test_stored_chunks_checked():
    source, _, (chunks,) = write_blob([text(2 * SMALL, seed=9)], chunk_size=SMALL)
    first = chunks[0]
    w = BlobWriter(io.BytesIO(), RafsOptions(chunk_size=SMALL))
    with pytest.raises(InvalidImage, match="placed bytes due"):
        w.place_stored_chunks([first])
        w.write_placed(source[: first.compressed_size + 1])


class Trickle:
    """A source that returns at most 1000 bytes per read, like a pipe."""

    def __init__(self, data: bytes):
        self.f = io.BytesIO(data)

    def read(self, n=-1):
        return self.f.read(min(n, 1000) if n >= 0 else 1000)


def test_short_reads_and_short_source():
    content = text(3 * SMALL + 1)
    chunker = serial_chunker(io.BytesIO(), chunk_size=SMALL)
    chunks = chunker.add_file(Trickle(content), len(content))
    assert [c.uncompressed_size for c in chunks] == [SMALL, SMALL, SMALL, 1]
    with pytest.raises(InvalidInput, match="ended after 12289 of 20000"):
        chunker.add_file(io.BytesIO(content), 20000)
    with pytest.raises(InvalidInput, match="ended after 3 of 4"):
        serial_chunker(io.BytesIO()).add_file(Trickle(b"abc"), 4)


def test_bad_options():
    for size in (0x800, 0x3000, 0x2000000):
        with pytest.raises(InvalidInput):
            RafsOptions(chunk_size=size)
    with pytest.raises(Exception, match="gzip"):
        RafsOptions(compressor="gzip")


def test_sha256_digester():
    content = text(2 * SMALL)
    data, info, (chunks,) = write_blob([content], chunk_size=SMALL, digester="sha256")
    assert chunks[0].digest == hashlib.sha256(content[:SMALL]).digest()
    assert info.digester == "sha256"
    assert read_chunk(io.BytesIO(data), chunks[1], "sha256") == content[SMALL:]


# ---------------------------------------------------------------------------------------------
# Damaged blobs


def one_blob():
    content = text(2 * SMALL) + noise(SMALL)
    data, info, (chunks,) = write_blob([content], chunk_size=SMALL)
    return data, info, chunks


def test_truncated_blob_is_invalid():
    data, info, chunks = one_blob()
    last = chunks[-1]
    cut = io.BytesIO(data[: last.compressed_offset + 10])
    with pytest.raises(InvalidImage, match=rf"blob {info.blob_id} chunk 2: .*ends at"):
        read_chunk(cut, last, "blake3")
    with pytest.raises(InvalidImage):
        read_blob_meta(io.BytesIO(data[: info.ci_offset + 100]), info)
    with pytest.raises(InvalidImage):
        read_toc(io.BytesIO(data[:-1]), len(data) - 1)


def test_flipped_byte_is_invalid():
    data, info, chunks = one_blob()
    for chunk in chunks:
        broken = bytearray(data)
        broken[chunk.compressed_offset + chunk.compressed_size // 2] ^= 0x40
        with pytest.raises(InvalidImage, match=rf"chunk {chunk.index}"):
            read_chunk(io.BytesIO(bytes(broken)), chunk, "blake3")
        view = io.BytesIO()
        with pytest.raises(InvalidImage):
            write_blob_view(io.BytesIO(bytes(broken)), info, chunks, view)
    # Without a CRC, only the digest check catches raw damage.
    raw = chunks[-1]
    bare = replace(raw, crc32=None)
    broken = bytearray(data)
    broken[raw.compressed_offset] ^= 1
    with pytest.raises(InvalidImage, match="digest"):
        read_chunk(io.BytesIO(bytes(broken)), bare, "blake3")
    assert read_chunk(io.BytesIO(bytes(broken)), bare, "blake3", verify=False) != noise(SMALL)


def test_ci_entry_out_of_range_is_invalid():
    content = text(2 * SMALL) + noise(SMALL)
    data, info, (chunks,) = write_blob([content], chunk_size=SMALL, compressor="none")
    assert info.ci_compressor == "none"
    for entry_field, value in ((1, info.ci_offset), (0, info.uncompressed_size)):
        broken = bytearray(data)
        word = struct.unpack_from("<Q", data, info.ci_offset + 16 + 8 * entry_field)[0]
        mask = 0xFF_FFFF_FFFF if entry_field else 0xFFF_FFFF_F000
        word = word & ~mask | value
        struct.pack_into("<Q", broken, info.ci_offset + 16 + 8 * entry_field, word)
        with pytest.raises(InvalidImage, match="ci entry 1"):
            read_blob_meta(io.BytesIO(bytes(broken)), info)


def test_file_size_must_match_chunks():
    data, info, chunks = one_blob()
    node = Node(mode=stat.S_IFREG | 0o644, size=3 * SMALL + 1, chunks=chunks)
    with pytest.raises(InvalidImage, match="inode says"):
        b"".join(iter_file(node, lambda _b: io.BytesIO(data), "blake3"))


def test_tar_header_checks():
    hdr = bytearray(section_header("blob.meta", 4128))
    assert parse_section_header(bytes(hdr)) == ("blob.meta", 4128)
    hdr[0] ^= 1
    with pytest.raises(InvalidImage, match="checksum"):
        parse_section_header(bytes(hdr))
    with pytest.raises(InvalidImage):
        read_sections(io.BytesIO(b"x" * 100 + section_header("a", 50)), 612)


def test_chunk_from_other_blob_refused_in_view():
    data, info, chunks = one_blob()
    other = BlobInfo()
    stray = Chunk(other, 0, bytes(32), 0, 1, 0, 1, False)
    with pytest.raises(InvalidImage):
        write_blob_view(io.BytesIO(data), info, [stray], io.BytesIO())
