"""RAFS v5 bootstrap writer and reader.

Upstream fixtures (fixtures.md §1-§5, §10) pin the byte layout; generated trees exercise the
writer -> reader round trip; the worked example of rafs-v5.md §17 pins numbering and record
order; corrupted images must fail with InvalidImage (or Unsupported), never anything else.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import struct
from functools import partial

import blake3
import crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rafs import codec
from rafs.errors import InvalidImage, InvalidInput, RafsError, Unsupported
from rafs.model import BlobInfo, Bootstrap, Chunk, Node, lookup, new_dir, walk
from rafs.v5 import ondisk as od
from rafs.v5.reader import check_digests, parse, read_bootstrap, read_superblock, read_tables
from rafs.v5.writer import (
    Sections,
    dfs_order,
    dir_size,
    inode_blocks,
    number_tree,
    plan,
    prefetch_inos,
    record_size,
    section_offsets,
    write_bootstrap,
)

REPEATABLE = {
    "sha256-nocompress-repeatable": (0x9, "sha256"),
    "blake3-lz4_block-non_repeatable": (0x5, "blake3"),
}
BLOB_ID = "7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00"
BB = "/normal-file-test/busybox/1f777dbdd68d1c4d554bc0d20e027bfef9ed2dfe2d8d5f029e958552a0e12475"
JSON = "af2f74c517aac1d26793a6ed05ff45b299a037e1a9eefeae5eacda133e70a825.json"

# fixtures.md §1: index offset ino parent mode nlink size blocks child_index child_count path
FIXTURE_RECORDS = """
1 8544 1 0 40755 5 4096 8 2 3 /
2 8680 2 1 40775 2 4096 8 5 2 /hardlink-test
3 8824 3 1 40775 4 4096 8 7 3 /normal-file-test
4 8968 4 1 40775 2 4096 8 48 7 /symlink-test
5 9112 5 2 100775 3 944 2 0 1 /hardlink-test/foo
6 9328 5 2 100775 3 944 2 0 1 /hardlink-test/test.sh
7 9544 7 3 40775 3 4096 8 10 4 /normal-file-test/busybox
8 9680 8 3 40775 2 4096 8 38 10 /normal-file-test/holefiles
9 9824 5 3 100775 3 944 2 0 1 /normal-file-test/test.sh
10 10040 10 7 40755 10 4096 8 14 11 {BB}
11 10232 11 7 100644 1 1497 3 0 1 /normal-file-test/busybox/{JSON}
12 10512 12 7 100644 1 203 1 0 1 /normal-file-test/busybox/manifest.json
13 10736 13 7 100644 1 90 1 0 1 /normal-file-test/busybox/repositories
14 10960 14 10 100644 1 3 1 0 1 {BB}/VERSION
15 11176 15 10 40755 2 4096 8 25 0 {BB}/bin
16 11312 16 10 40755 2 4096 8 25 0 {BB}/dev
17 11448 17 10 40755 3 4096 8 25 5 {BB}/etc
18 11584 18 10 40755 2 4096 8 34 0 {BB}/home
19 11720 19 10 100644 1 1174 3 0 1 {BB}/json
20 11936 20 10 100644 1 1415680 2765 0 2 {BB}/layer.tar
21 12240 21 10 40700 2 4096 8 34 0 {BB}/root
22 12376 22 10 40775 2 4096 8 34 0 {BB}/tmp
23 12512 23 10 40755 3 4096 8 34 1 {BB}/usr
24 12648 24 10 40755 4 4096 8 35 2 {BB}/var
25 12784 25 17 100664 1 307 1 0 1 {BB}/etc/group
26 13000 26 17 100644 1 127 1 0 1 {BB}/etc/localtime
27 13224 27 17 40755 6 4096 8 30 4 {BB}/etc/network
28 13360 28 17 100644 1 340 1 0 1 {BB}/etc/passwd
29 13576 29 17 100600 1 243 1 0 1 {BB}/etc/shadow
30 13792 30 27 40755 2 4096 8 34 0 {BB}/etc/network/if-down.d
31 13936 31 27 40755 2 4096 8 34 0 {BB}/etc/network/if-post-down.d
32 14080 32 27 40755 2 4096 8 34 0 {BB}/etc/network/if-pre-up.d
33 14224 33 27 40755 2 4096 8 34 0 {BB}/etc/network/if-up.d
34 14360 34 23 40755 2 4096 8 35 0 {BB}/usr/sbin
35 14496 35 24 40755 3 4096 8 37 1 {BB}/var/spool
36 14632 36 24 40755 2 4096 8 38 0 {BB}/var/www
37 14768 37 35 40755 2 4096 8 38 0 {BB}/var/spool/mail
38 14904 38 8 100664 1 441 1 0 1 /normal-file-test/holefiles/chsum
39 15120 39 8 100664 1 2097159 4097 0 3 /normal-file-test/holefiles/head-hole-1
40 15504 40 8 100664 1 2065415 4035 0 2 /normal-file-test/holefiles/head-hole-2
41 15808 41 8 100664 1 2099207 4101 0 3 /normal-file-test/holefiles/head-hole-3
42 16192 42 8 100664 1 1024 2 0 1 /normal-file-test/holefiles/mid-non-hole-1024
43 16424 43 8 100664 1 4096 8 0 1 /normal-file-test/holefiles/mid-non-hole-4096
44 16656 44 8 100664 1 5000 10 0 1 /normal-file-test/holefiles/mid-non-hole-5000
45 16888 45 8 100664 1 1024 2 0 1 /normal-file-test/holefiles/tail-hole-1024
46 17112 46 8 100664 1 4096 8 0 1 /normal-file-test/holefiles/tail-hole-4096
47 17336 47 8 100664 1 5000 10 0 1 /normal-file-test/holefiles/tail-hole-5000
48 17560 48 4 120777 1 19 1 0 0 /symlink-test/bar ../hardlink-test-tt
49 17720 49 4 120777 1 20 1 0 0 /symlink-test/foo ../normal-file-test/
50 17880 50 4 120777 1 12 1 0 0 /symlink-test/foo1 ../../fc/foo
51 18032 51 4 120777 1 1 1 0 0 /symlink-test/root /
52 18176 52 4 120777 1 17 1 0 0 /symlink-test/root-1 /////////////////
53 18336 53 4 120777 1 7 1 0 0 /symlink-test/root-2 /foobar
54 18480 54 4 120777 1 27 1 0 0 /symlink-test/test.sh ../normal-file-test/test.sh
"""


def fixture_rows() -> list[list[str]]:
    text = FIXTURE_RECORDS.replace("{BB}", BB).replace("{JSON}", JSON)
    return [line.split() for line in text.strip().splitlines()]


def record_paths(parsed) -> list[bytes]:
    """Absolute path of every index, from the raw records."""
    paths = [b"/"] * len(parsed.records)
    for rec in parsed.records:
        if stat.S_ISDIR(rec.inode.i_mode):
            first = rec.inode.i_child_index
            for index in range(first, first + rec.inode.i_child_count):
                child = parsed.records[index - 1]
                paths[index - 1] = paths[rec.index - 1].rstrip(b"/") + b"/" + child.name
    return paths


@pytest.fixture(scope="module", params=sorted(REPEATABLE))
def repeatable(request, upstream):
    name = request.param
    return name, (upstream / "repeatable" / name).read_bytes()


# --- fixtures.md §1, §2, §10 -----------------------------------------------------------


def test_fixture_superblock_and_tables(repeatable):
    name, data = repeatable
    parsed = parse(io.BytesIO(data))
    sb = parsed.superblock
    assert (sb.s_magic, sb.s_fs_version, sb.s_sb_size) == (0x52414653, 0x500, 8192)
    assert sb.s_block_size == 0x100000
    assert sb.s_flags == REPEATABLE[name][0]
    assert sb.s_inodes_count == 51
    assert (sb.s_inode_table_offset, sb.s_inode_table_entries) == (8192, 54)
    assert (sb.s_prefetch_table_offset, sb.s_prefetch_table_entries) == (8408, 0)
    assert (sb.s_blob_table_offset, sb.s_blob_table_size) == (8408, 72)
    assert (sb.s_extended_blob_table_offset, sb.s_extended_blob_table_entries) == (8480, 1)
    tables = parsed.tables
    assert tables.inode_table[:2] == [1068, 1085]
    assert [(b.prefetch_offset, b.prefetch_size, b.blob_id) for b in tables.blobs] == [
        (0, 0, BLOB_ID)
    ]
    ext = tables.ext_blobs
    assert [(e.chunk_count, e.features, e.uncompressed_size, e.compressed_size) for e in ext] == [
        (23, 0, 3508766, 3508766)
    ]
    assert data[8480 + 24 : 8544] == bytes(40)  # reserved part of the extended entry


def test_fixture_records(repeatable):
    _, data = repeatable
    parsed = parse(io.BytesIO(data))
    assert parsed.record_order == list(range(1, 55))  # pre-2.3 files are in index order
    ends = [r.offset + r.size for r in parsed.records]
    assert [r.offset for r in parsed.records[1:]] == ends[:-1]  # contiguous
    assert parsed.records[0].offset == 8544 and ends[-1] == len(data) == 18648
    paths = record_paths(parsed)
    for row, rec in zip(fixture_rows(), parsed.records, strict=True):
        index, offset, ino, parent, mode, nlink, size, blocks, cidx, ccnt = map(int, row[:10])
        i = rec.inode
        assert (rec.index, rec.offset, i.i_ino, i.i_parent) == (index, offset, ino, parent)
        assert (i.i_mode, i.i_nlink, i.i_size, i.i_blocks) == (
            int(str(mode), 8),
            nlink,
            size,
            blocks,
        )
        assert (i.i_child_index, i.i_child_count) == (cidx, ccnt)
        assert paths[index - 1] == row[10].encode()
        assert rec.target == (row[11].encode() if len(row) > 11 else b"")
        assert (i.i_uid, i.i_gid, i.i_rdev, i.i_flags & ~od.INODE_SYMLINK) == (0, 0, 0, 0)
        assert rec.xattrs is None
        assert i.i_mtime == (0 if index == 1 else 1668232305)
    chunks = [c for r in parsed.records for c in r.chunks]
    assert len(chunks) == 29
    assert len({(c.blob_index, c.index) for c in chunks}) == 23
    assert all(c.flags == 0 and c.crc32 == 0 for c in chunks)


def test_fixture_digests(repeatable):
    name, data = repeatable
    parsed = parse(io.BytesIO(data))
    check_digests(parsed)  # all 54 inode digests recompute
    root, foo = parsed.records[0], parsed.records[4]
    assert foo.name == b"foo"
    if REPEATABLE[name][1] == "sha256":
        assert root.inode.i_digest.hex() == (
            "14af3c0fe575eff6d0d8158e0990e41d4c37494e8005aada7885b36b37ad1886"
        )
        assert foo.chunks[0].block_id.hex() == (
            "fff49cf6925f933ae4e834b5d88d25ed06d40f3d70ff9b1916070596bf5649eb"
        )
        assert foo.inode.i_digest.hex() == (
            "02e9ee4e97078fc621d777b174e876a409bf56bd8579b4ad7bb46e56e07cd5d8"
        )
    else:
        assert root.inode.i_digest.hex() == (
            "0e83584cbea51800ef8eb88c0ed2d686385caff5581a00fb711ac5400563f60a"
        )
        assert foo.chunks[0].block_id.hex() == (
            "1d6c6721690cb5399df84c95901afda43192092f6ebecc8c6a10058b460dceeb"
        )


def test_fixture_tree_and_file_contents(repeatable, upstream):
    name, data = repeatable
    bs = read_bootstrap(io.BytesIO(data), verify_digests=True)
    assert (bs.version, bs.chunk_size, bs.compressor) == (5, 0x100000, "none")
    assert bs.digester == REPEATABLE[name][1] and bs.explicit_uid_gid is False
    assert bs.prefetch == []
    [blob] = bs.blobs
    assert (blob.blob_id, blob.chunk_count, blob.features) == (BLOB_ID, 23, 0)
    assert (blob.compressed_size, blob.uncompressed_size) == (3508766, 3508766)
    assert (blob.compressor, blob.digester, blob.chunk_size) == ("none", bs.digester, 0x100000)

    foo = lookup(bs.root, b"/hardlink-test/foo")
    assert foo is lookup(bs.root, b"/hardlink-test/test.sh")
    assert foo is lookup(bs.root, b"/normal-file-test/test.sh")
    assert lookup(bs.root, b"/symlink-test/root-2").target == b"/foobar"

    h = partial(codec.digest, bs.digester)
    lines = set()
    with open(upstream / "repeatable" / "blobs" / BLOB_ID, "rb") as blob_file:
        for path, node in walk(bs.root):
            if not node.is_reg:
                continue
            md5 = hashlib.md5()
            for chunk in node.chunks:
                assert chunk.blob is blob and not chunk.compressed
                assert chunk.compressed_offset == chunk.uncompressed_offset
                blob_file.seek(chunk.compressed_offset)
                raw = blob_file.read(chunk.compressed_size)
                assert h(raw) == chunk.digest
                md5.update(raw)
            lines.add(f"{md5.hexdigest()}  {path.decode()}")
    result = (upstream / "repeatable" / f"{name}.result").read_text()
    expected = {line for line in result.splitlines() if re.match(r"^[0-9a-f]{32}  /", line)}
    assert len(expected) == 23 and lines == expected


def test_fixture_reserialises_byte_identically(repeatable):
    _, data = repeatable
    bs = read_bootstrap(io.BytesIO(data))
    out = io.BytesIO()
    write_bootstrap(out, bs, record_order="index", inodes_count=51, hardlink_flag=False)
    assert out.getvalue() == data


def test_fixture_rewritten_in_head_layout(repeatable):
    _, data = repeatable
    bs = read_bootstrap(io.BytesIO(data))
    out = io.BytesIO()
    write_bootstrap(out, bs)
    parsed = parse(io.BytesIO(out.getvalue()))
    check_digests(parsed)
    assert parsed.superblock.s_inodes_count == 52  # HEAD counts the root
    assert parsed.record_order[:8] == [1, 2, 5, 6, 3, 7, 10, 14]  # DFS pre-order
    hl = [r for r in parsed.records if r.inode.i_ino == 5]
    assert [r.index for r in hl] == [5, 6, 9]
    assert all(r.inode.i_flags & od.INODE_HARDLINK for r in hl)
    assert parsed.records[0].inode.i_digest == parse(io.BytesIO(data)).records[0].inode.i_digest
    assert signature(read_bootstrap(io.BytesIO(out.getvalue())).root) == signature(bs.root)


def test_legacy_daemon_bootstrap(upstream):
    path = upstream / "bootstrap" / "nydusd_daemon_test_bootstrap"
    with open(path, "rb") as f:
        sb, size = read_superblock(f)
        assert size == 3527120
        assert (sb.s_flags, sb.s_inodes_count, sb.s_inode_table_entries) == (0x1, 16816, 16832)
        assert (sb.s_extended_blob_table_entries, sb.s_extended_blob_table_offset) == (0, 0)
        tables = read_tables(f, sb)
        assert [b.blob_id for b in tables.blobs] == [
            "66b413a71ac1dc91c0c331ea16867123924cf5a393b65bb025ec8255531463fe"
        ]
        assert tables.ext_blobs == [] and tables.inode_table[0] << 3 == 75592
        with pytest.raises(InvalidImage, match=r"offset 75592 \(index 1\): i_name_size 0"):
            parse(f)


# --- layout arithmetic -------------------------------------------------------------------


def test_section_offsets():
    assert section_offsets(54, 0, 72, 1) == Sections(8408, 8408, 8480, 8544)
    assert section_offsets(10, 1, 72, 1) == Sections(8232, 8240, 8312, 8376)
    assert section_offsets(1, 0, 0, 0) == Sections(8200, 8200, 8200, 8200)
    assert section_offsets(3, 3, 80, 2) == Sections(8208, 8224, 8304, 8432)


def test_record_sizes():
    assert record_size(1, 0, None, 0) == 136  # root, fixture 8680 - 8544
    assert record_size(13, 0, None, 0) == 144  # /hardlink-test
    assert record_size(3, 0, None, 1) == 216  # /hardlink-test/foo
    assert record_size(3, 19, None, 0) == 160  # /symlink-test/bar
    assert record_size(1, 0, 13, 2) == 128 + 8 + 8 + 16 + 160
    assert record_size(8, 0, 0, 0) == 128 + 8 + 8


def test_sizes_and_blocks():
    assert dir_size([]) == 4096
    assert dir_size([13, 16, 12]) == 4096
    assert dir_size([255] * 20) == 8192  # 20 * 263 = 5260
    assert inode_blocks(944, None, True) == 2
    assert inode_blocks(1415680, None, True) == 2765
    assert inode_blocks(4096, 24, False) == 9  # directories count padded xattrs
    assert inode_blocks(22, None, False) == 1
    assert inode_blocks(500, 100, True) == 1  # regular files do not (cached-mode rule)
    assert inode_blocks(0, None, True) == 0


# --- test trees ----------------------------------------------------------------------------

CS = 0x1000


class TinyBlob:
    """Test stand-in for the blob writer: raw chunks back to back, dedup by (digest, size)."""

    def __init__(self, blob_id: str, digester: str = "blake3", chunk_size: int = CS):
        self.info = BlobInfo(
            chunk_size=chunk_size, compressor="zstd", digester=digester, blob_id=blob_id
        )
        self.h = partial(codec.digest, digester)
        self.seen: dict[tuple[bytes, int], Chunk] = {}

    def chunk(self, data: bytes) -> Chunk:
        key = (self.h(data), len(data))
        if key not in self.seen:
            info = self.info
            self.seen[key] = Chunk(
                blob=info,
                index=info.chunk_count,
                digest=key[0],
                compressed_offset=info.compressed_size,
                compressed_size=len(data),
                uncompressed_offset=info.uncompressed_size,
                uncompressed_size=len(data),
                compressed=False,
                crc32=crc32c.crc32c(data),
            )
            info.chunk_count += 1
            info.compressed_size += len(data)
            info.uncompressed_size += len(data)
        return self.seen[key]

    def file(self, content: bytes, mode: int = 0o644, **meta) -> Node:
        cs = self.info.chunk_size
        chunks = [self.chunk(content[i : i + cs]) for i in range(0, len(content), cs)]
        return Node(mode=stat.S_IFREG | mode, size=len(content), chunks=chunks, **meta)


def every_type_tree():
    """A tree with every file type, xattrs, hard links, long names and shared chunks."""
    b1, b2, unused = TinyBlob("a" * 64), TinyBlob("b" * 64), TinyBlob("c" * 64)
    root = new_dir(0o755)
    a = new_dir(0o750, uid=1000, gid=1001, mtime=1_700_000_000, mtime_nsec=123)
    a.xattrs = {b"user.comment": b"hi\0there", b"trusted.overlay.opaque": b"y"}
    b = new_dir(0o1777, mtime=5)
    root.children = {b"a": a, b"b": b}
    big = bytes(range(256)) * 56  # 14336 bytes = 3.5 chunks of 4 KiB
    f1 = b1.file(big, mtime=7, xattrs={b"security.capability": b"\x01" * 20})
    linked = b1.file(b"shared by two names\n", 0o4755, uid=0, gid=42)
    dup = b2.file(big[:CS] + big[:CS] + b"tail")  # a chunk used twice, another from blob 1
    dup.chunks[0] = dup.chunks[1] = f1.chunks[0]
    sym = Node(mode=stat.S_IFLNK | 0o777, target=b"a/f1")
    a.children = {
        b"f1": f1,
        b"hl": linked,
        b"empty": Node(mode=stat.S_IFREG | 0o600),
        b"sub": new_dir(0o700),
        b"acl": b2.file(b"acl", xattrs={b"system.posix_acl_access": b"\x02\0\0\0"}),
    }
    b.children = {
        b"hl2": linked,
        b"dup": dup,
        b"long": Node(mode=stat.S_IFLNK | 0o777, target=b"t" * 65535),
        b"chr": Node(mode=stat.S_IFCHR | 0o666, rdev=os.makedev(4, 64)),
        b"blk": Node(mode=stat.S_IFBLK | 0o660, rdev=os.makedev(259, 70000)),
        b"fifo": Node(mode=stat.S_IFIFO | 0o644),
        b"sock": Node(mode=stat.S_IFSOCK | 0o755),
        b"x" * 255: b2.file(b"long name"),
    }
    root.children[b"ln"] = sym
    root.children[b"ln2"] = sym  # a shared symlink object gets one inode per name
    bs = Bootstrap(
        root=root,
        blobs=[unused.info, b2.info, b1.info],  # order given; the unused blob is dropped
        version=5,
        chunk_size=CS,
        compressor="zstd",
        digester="blake3",
        explicit_uid_gid=True,
        prefetch=[b"/b/hl2", b" /a \n", b"/a/f1", b"relative", b"/missing", b"/a/empty"],
    )
    return bs


def chunk_sig(c: Chunk) -> tuple:
    return (
        c.blob.blob_id,
        c.index,
        c.digest,
        c.compressed_offset,
        c.compressed_size,
        c.uncompressed_offset,
        c.uncompressed_size,
        c.compressed,
        c.crc32,
    )


def signature(root: Node) -> list[tuple]:
    """Everything a v5 round trip must keep, with hard-link groups numbered by first use."""
    groups: dict[int, int] = {}
    out = []
    for path, node in walk(root):
        group = groups.setdefault(id(node), len(groups)) if node.is_reg else None
        out.append(
            (
                path,
                group,
                node.mode,
                node.uid,
                node.gid,
                node.mtime,
                node.mtime_nsec,
                sorted(node.xattrs.items()),
                node.size,
                [chunk_sig(c) for c in node.chunks],
                node.target,
                node.rdev,
                node.children is None,
            )
        )
    return out


def write(bs: Bootstrap, **options) -> bytes:
    out = io.BytesIO()
    write_bootstrap(out, bs, **options)
    return out.getvalue()


# --- round trips ---------------------------------------------------------------------------


def test_round_trip_every_type():
    bs = every_type_tree()
    data = write(bs)
    back = read_bootstrap(io.BytesIO(data), verify_digests=True)
    assert signature(back.root) == signature(bs.root)
    assert [b.blob_id for b in back.blobs] == ["b" * 64, "a" * 64]
    for got, want in zip(back.blobs, bs.blobs[1:], strict=True):
        assert (got.chunk_count, got.compressed_size, got.uncompressed_size, got.features) == (
            want.chunk_count,
            want.compressed_size,
            want.uncompressed_size,
            0,
        )
        assert (got.compressor, got.digester, got.chunk_size) == ("zstd", "blake3", CS)
    assert (back.chunk_size, back.compressor, back.digester) == (CS, "zstd", "blake3")
    assert back.explicit_uid_gid is True
    # covered, relative, missing and empty-file patterns are dropped; the table holds inode
    # numbers, so the hard link comes back under the first name of its inode
    assert back.prefetch == [b"/a/hl", b"/a"]
    assert lookup(back.root, b"/a/hl") is lookup(back.root, b"/b/hl2")
    assert lookup(back.root, b"/ln") is not lookup(back.root, b"/ln2")
    assert write(back) == data  # canonical: rewriting the parsed tree changes nothing


def test_round_trip_records_every_type():
    bs = every_type_tree()
    data = write(bs)
    parsed = parse(io.BytesIO(data))
    sb = parsed.superblock
    assert sb.s_flags == od.COMPRESSION_ZSTD | od.HASH_BLAKE3 | od.EXPLICIT_UID_GID | od.HAS_XATTR
    assert sb.s_inode_table_entries == 18
    assert sb.s_inodes_count == 17  # the two names of /a/hl share one inode
    assert sb.s_extended_blob_table_entries == 2
    by_path = dict(zip(record_paths(parsed), parsed.records, strict=True))
    hl, hl2 = by_path[b"/a/hl"], by_path[b"/b/hl2"]
    assert hl.inode.i_ino == hl.index and hl2.inode.i_ino == hl.index != hl2.index
    assert hl.inode.i_nlink == hl2.inode.i_nlink == 2
    assert hl.inode.i_flags == hl2.inode.i_flags == od.INODE_HARDLINK
    assert hl2.chunks == hl.chunks and hl2.inode.i_digest == hl.inode.i_digest
    ln, ln2 = by_path[b"/ln"], by_path[b"/ln2"]
    assert (ln.inode.i_nlink, ln2.inode.i_nlink) == (1, 1)
    assert ln.inode.i_ino != ln2.inode.i_ino
    assert ln.inode.i_flags == od.INODE_SYMLINK and ln.target == b"a/f1"
    long = by_path[b"/b/long"]
    assert long.inode.i_symlink_size == long.inode.i_size == 65535
    assert by_path[b"/b/" + b"x" * 255].inode.i_name_size == 255
    a = by_path[b"/a"]
    assert a.xattrs == [(b"trusted.overlay.opaque", b"y"), (b"user.comment", b"hi\0there")]
    assert a.inode.i_flags == od.INODE_XATTR and a.inode.i_nlink == 3
    assert a.inode.i_blocks == -(-(4096 + 40) // 512)  # 2 pairs: 4+22+1+1 + 4+12+1+8 = 53 -> 56
    assert (a.inode.i_uid, a.inode.i_gid, a.inode.i_mtime, a.inode.i_mtime_nsec) == (
        1000,
        1001,
        1_700_000_000,
        123,
    )
    f1 = by_path[b"/a/f1"]
    assert f1.inode.i_child_count == 4 and f1.inode.i_size == 14336
    assert f1.inode.i_blocks == 28
    assert [c.file_offset for c in f1.chunks] == [0, CS, 2 * CS, 3 * CS]
    assert [c.uncompressed_size for c in f1.chunks] == [CS, CS, CS, 2048]
    assert all(c.flags == od.CHUNK_HAS_CRC32 and c.blob_index == 1 for c in f1.chunks)
    dup = by_path[b"/b/dup"]
    assert [(c.blob_index, c.index) for c in dup.chunks] == [(1, 0), (1, 0), (0, 1)]
    assert dup.chunks[1].file_offset == CS
    empty = by_path[b"/a/empty"]
    assert (empty.inode.i_child_count, empty.inode.i_blocks, empty.chunks) == (0, 0, [])
    assert empty.inode.i_digest == blake3.blake3(b"").digest()
    assert by_path[b"/b/chr"].inode.i_rdev == (4 << 8) | 64
    assert by_path[b"/b/blk"].inode.i_rdev == ((259 & 0xFFF) << 8) | (70000 & 0xFF) | (
        (70000 & 0xFFF00) << 12
    )
    sub = by_path[b"/a/sub"]
    assert sub.inode.i_child_count == 0 and sub.inode.i_child_index > sub.index
    assert parsed.tables.prefetch == [hl.index, a.index]


def test_uid_gid_dropped_without_explicit_flag():
    bs = every_type_tree()
    bs.explicit_uid_gid = False
    parsed = parse(io.BytesIO(write(bs)))
    assert not parsed.superblock.s_flags & od.EXPLICIT_UID_GID
    assert all(r.inode.i_uid == r.inode.i_gid == 0 for r in parsed.records)


def test_sha256_and_no_compression_flags():
    blob = TinyBlob("d" * 64, digester="sha256")
    blob.info.compressor = "none"
    root = new_dir()
    root.children = {b"f": blob.file(b"data")}
    bs = Bootstrap(root, [blob.info], version=5, chunk_size=CS, compressor="none",
                   digester="sha256")  # fmt: skip
    parsed = parse(io.BytesIO(write(bs)))
    assert parsed.superblock.s_flags == od.COMPRESSION_NONE | od.HASH_SHA256 | od.EXPLICIT_UID_GID
    check_digests(parsed)
    assert (
        parsed.records[1].inode.i_digest
        == hashlib.sha256(hashlib.sha256(b"data").digest()).digest()
    )


def test_empty_root():
    bs = Bootstrap(new_dir(), [], version=5)
    data = write(bs)
    parsed = parse(io.BytesIO(data))
    sb = parsed.superblock
    assert (sb.s_inode_table_entries, sb.s_inodes_count, sb.s_blob_table_size) == (1, 1, 0)
    assert len(data) == 8200 + 136
    root = parsed.records[0].inode
    assert (root.i_nlink, root.i_size, root.i_child_index, root.i_child_count) == (2, 4096, 2, 0)
    back = read_bootstrap(io.BytesIO(data), verify_digests=True)
    assert back.root.children == {} and back.blobs == []


def test_prefetch_root_pattern():
    bs = every_type_tree()
    bs.prefetch = [b"/", b"/a", b"/b/hl2"]  # everything below / is covered by it
    parsed = parse(io.BytesIO(write(bs)))
    assert parsed.superblock.s_prefetch_table_entries == 1
    sb = parsed.superblock
    assert sb.s_blob_table_offset - sb.s_prefetch_table_offset == 8
    assert read_bootstrap(io.BytesIO(write(bs))).prefetch == [b"/"]


def test_prefetch_rules_as_numbers():
    bs = every_type_tree()
    slots = number_tree(bs.root)
    ino = {s.name: s.ino for s in slots}
    pats = [b"/a/f1", b"/a", b"/a//f1", b"/b/./hl2", b"/b/hl2/", b"b", b"/nope", b"/a/empty"]
    # /a is not below /a/f1, so it is kept; "/a//f1" equals the first pattern after
    # normalisation; "/b/hl2/" equals "/b/./hl2"; empty files never match.
    assert prefetch_inos(pats, slots[0]) == [ino[b"f1"], ino[b"a"], ino[b"hl"]]


def test_determinism_independent_of_insertion_order():
    first = write(every_type_tree())
    bs = every_type_tree()
    for _, node in walk(bs.root):
        if node.children:
            node.children = dict(reversed(list(node.children.items())))
        node.xattrs = dict(reversed(list(node.xattrs.items())))
    assert write(bs) == first
    assert write(every_type_tree()) == first


def test_index_order_option():
    bs = every_type_tree()
    dfs = parse(io.BytesIO(write(bs)))
    idx = parse(io.BytesIO(write(bs, record_order="index", inodes_count=7)))
    assert idx.record_order == list(range(1, 19)) and idx.superblock.s_inodes_count == 7
    assert dfs.record_order != idx.record_order
    assert [r.inode for r in dfs.records] == [r.inode for r in idx.records]


# --- rafs-v5.md §17 worked example ------------------------------------------------------

# index ino parent name mode nlink size blocks flags child_index child_count
WORKED = """
1 1 0 / 040755 3 4096 8 0 2 1
2 2 1 tar 040755 4 4096 8 0 3 2
3 3 2 dir1 040755 3 4096 8 0 5 2
4 4 2 dir2 040755 2 4096 8 0 9 2
5 5 3 dir3 040755 2 4096 8 0 7 2
6 6 3 hardlink2.txt 0100644 4 15 1 2 0 1
7 6 5 hardlink1.txt 0100644 4 15 1 2 0 1
8 6 5 xfile.txt 0100644 4 15 1 2 0 1
9 6 4 hardlink3.txt 0100644 4 15 1 2 0 1
10 10 4 symlink1.txt 0120755 1 22 1 1 0 0
"""


def all_entry_type_tree() -> Bootstrap:
    """tar/all-entry-type.tar as the tar-rafs builder sees it, built by hand (§17)."""
    blob = TinyBlob("e" * 64, chunk_size=0x100000)
    rdev = 0xFFFFFFFF  # tar builds store this for every entry
    text = blob.file(b"This is a test\n", mtime=1, rdev=rdev)
    dir3 = new_dir(0o755, mtime=2, rdev=rdev)
    dir3.children = {b"xfile.txt": text, b"hardlink1.txt": text}
    dir1 = new_dir(0o755, mtime=3, rdev=rdev)
    dir1.children = {b"dir3": dir3, b"hardlink2.txt": text}
    link = Node(mode=stat.S_IFLNK | 0o755, target=b"../dir1/dir3/file1.txt", rdev=rdev)
    dir2 = new_dir(0o755, mtime=4, rdev=rdev)
    dir2.children = {b"symlink1.txt": link, b"hardlink3.txt": text}
    tar = new_dir(0o755, mtime=5, rdev=rdev)
    tar.children = {b"dir2": dir2, b"dir1": dir1}
    root = new_dir(0o755, rdev=rdev)
    root.children = {b"tar": tar}
    return Bootstrap(root, [blob.info], version=5, chunk_size=0x100000)


def test_worked_example_numbering():
    bs = all_entry_type_tree()
    slots = number_tree(bs.root)
    assert [s.index for s in dfs_order(slots)] == [1, 2, 3, 5, 7, 8, 6, 4, 9, 10]
    data = write(bs)
    parsed = parse(io.BytesIO(data))
    check_digests(parsed)
    assert parsed.superblock.s_inode_table_entries == 10
    assert parsed.superblock.s_inodes_count == 7
    assert parsed.record_order == [1, 2, 3, 5, 7, 8, 6, 4, 9, 10]
    rows = [line.split() for line in WORKED.strip().splitlines()]
    for row, rec in zip(rows, parsed.records, strict=True):
        index, ino, parent = map(int, row[:3])
        mode = int(row[4], 8)
        nlink, size, blocks, flags, cidx, ccnt = map(int, row[5:])
        i = rec.inode
        assert (rec.index, i.i_ino, i.i_parent, rec.name) == (index, ino, parent, row[3].encode())
        assert (i.i_mode, i.i_nlink, i.i_size, i.i_blocks) == (mode, nlink, size, blocks)
        assert (i.i_flags, i.i_child_index, i.i_child_count) == (flags, cidx, ccnt)
        assert i.i_rdev == 0xFFFFFFFF
    for rec in parsed.records[5:9]:
        [c] = rec.chunks
        assert (c.blob_index, c.index, c.compressed_offset, c.uncompressed_offset) == (0, 0, 0, 0)
        assert (c.compressed_size, c.uncompressed_size, c.flags) == (15, 15, 0x10)
        assert c.crc32 == 0x866F9A2E
        assert c.block_id.hex().startswith("b463ffb044674ea1") and c.block_id.hex()[-4:] == "e054"
    assert parsed.records[9].target == b"../dir1/dir3/file1.txt"
    assert parsed.records[0].inode.i_mtime == 0


def test_worked_example_plan_numbers():
    p = plan(all_entry_type_tree())
    assert p.sections == section_offsets(10, 0, 72, 1) == Sections(8232, 8232, 8304, 8368)
    assert [s.index for s in p.order] == [1, 2, 3, 5, 7, 8, 6, 4, 9, 10]
    sizes = {s.index: s.record_size for s in p.slots}
    assert sizes == {
        1: 136,
        2: 136,
        3: 136,
        4: 136,
        5: 136,
        6: 224,
        7: 224,
        8: 224,
        9: 224,
        10: 168,
    }
    offsets = [s.offset for s in p.order]
    assert offsets[0] == 8368
    ends = [o + sizes[s.index] for o, s in zip(offsets, p.order, strict=True)]
    assert offsets[1:] == ends[:-1]  # records back to back
    assert p.file_size == 8368 + sum(sizes.values())
    assert (p.inodes_count, p.prefetch, [b.blob_id for b in p.blobs]) == (7, [], ["e" * 64])
    assert p.flags == od.COMPRESSION_ZSTD | od.HASH_BLAKE3 | od.EXPLICIT_UID_GID


# --- writer refusals -----------------------------------------------------------------------


def refusal_cases():
    def bad_name(bs):
        bs.root.children[b"a/b"] = new_dir()

    def long_name(bs):
        bs.root.children[b"y" * 256] = new_dir()

    def dir_twice(bs):
        bs.root.children[b"again"] = bs.root.children[b"tar"]

    def wrong_chunk_count(bs):
        node = lookup(bs.root, b"/tar/dir1/hardlink2.txt")
        node.size = 0x100001

    def foreign_blob(bs):
        bs.blobs = []

    def gzip(bs):
        bs.compressor = "gzip"

    def bad_xattr(bs):
        bs.root.xattrs = {b"os2.name": b"x"}

    def empty_symlink(bs):
        bs.root.children[b"s"] = Node(mode=stat.S_IFLNK | 0o777)

    def chunk_size(bs):
        bs.chunk_size = 0x3000

    def chunks_on_dir(bs):
        bs.root.chunks = list(lookup(bs.root, b"/tar/dir1/hardlink2.txt").chunks)

    def blob_mismatch(bs):
        bs.blobs[0].digester = "sha256"

    def no_blob_id(bs):
        bs.blobs[0].blob_id = ""

    return [
        bad_name,
        long_name,
        dir_twice,
        wrong_chunk_count,
        foreign_blob,
        gzip,
        bad_xattr,
        empty_symlink,
        chunk_size,
        chunks_on_dir,
        blob_mismatch,
        no_blob_id,
    ]


@pytest.mark.parametrize("mutate", refusal_cases(), ids=lambda f: f.__name__)
def test_writer_refuses(mutate):
    bs = all_entry_type_tree()
    mutate(bs)
    with pytest.raises(InvalidInput):
        write(bs)


# --- corrupt inputs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample() -> bytes:
    return write(every_type_tree())


@pytest.fixture(scope="module")
def small() -> bytes:
    return write(all_entry_type_tree())


def patched(data: bytes, offset: int, fmt: str, value: int) -> io.BytesIO:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, value)
    return io.BytesIO(bytes(buf))


def record_at(data: bytes, path: bytes):
    parsed = parse(io.BytesIO(data))
    return dict(zip(record_paths(parsed), parsed.records, strict=True))[path]


@pytest.mark.parametrize(
    "offset, fmt, value, message",
    [
        (0, "<I", 0x52414654, "bad magic"),
        (4, "<I", 0x400, "s_fs_version"),
        (8, "<I", 4096, "s_sb_size"),
        (12, "<I", 0x800, "s_block_size"),
        (12, "<I", 0x3000, "s_block_size"),
        (12, "<I", 0x2000000, "s_block_size"),
        (16, "<Q", 0x1_0000_0094, "s_flags"),
        (16, "<Q", 0x494, "s_flags"),
        (24, "<Q", 20, "s_inodes_count"),
        (32, "<Q", 8196, "not 8-aligned"),
        (32, "<Q", 1 << 40, "inode table"),
        (56, "<I", 1 << 30, "inode table"),
        (48, "<Q", 8192, "blob table"),
        (48, "<Q", 1 << 33, "blob table"),
        (64, "<I", 1 << 31, "blob table"),
        (72, "<Q", 8192, "extended blob table"),
        (68, "<I", 1, "extended blob table has 1 entries for 2 blobs"),
        (60, "<I", 40, "prefetch table"),
        (40, "<Q", 8208, "prefetch table"),
        (40, "<Q", 8204, "not 8-aligned"),
        (8192, "<I", 0, "inode table entry 0"),
        (8192, "<I", 1 << 29, "inode table entry 0"),
        (8196, "<I", 1024, "inode table entry 1"),
    ],
)
def test_corrupt_superblock_and_tables(sample, offset, fmt, value, message):
    with pytest.raises(InvalidImage, match=message):
        parse(patched(sample, offset, fmt, value))


def test_table_entries_must_match_records(sample):
    first = struct.unpack_from("<I", sample, 8192)[0]
    with pytest.raises(InvalidImage, match="both point at"):
        parse(patched(sample, 8196, "<I", first))
    second = struct.unpack_from("<I", sample, 8196)[0]
    with pytest.raises(InvalidImage, match="not in the inode table"):
        parse(patched(sample, 8196, "<I", second + 1))


# field offsets inside the 128-byte inode
I_PARENT, I_INO, I_MODE, I_SIZE, I_BLOCKS, I_FLAGS, I_NLINK = 32, 40, 60, 64, 72, 80, 88
I_CHILD_INDEX, I_CHILD_COUNT, I_NAME_SIZE, I_SYMLINK_SIZE = 92, 96, 100, 102


@pytest.mark.parametrize(
    "path, field, fmt, value, message",
    [
        (b"/a", I_INO, "<Q", 0, "i_ino 0 outside"),
        (b"/a", I_INO, "<Q", 99, "i_ino 99 outside"),
        (b"/a", I_PARENT, "<Q", 0, "i_parent is 0"),
        (b"/a", I_PARENT, "<Q", 50, "i_parent 50 >= i_ino"),
        (b"/a", I_NLINK, "<I", 0, "i_nlink is 0"),
        (b"/a", I_NAME_SIZE, "<H", 0, "i_name_size 0"),
        (b"/a", I_NAME_SIZE, "<H", 256, "i_name_size 256"),
        (b"/a", I_CHILD_INDEX, "<I", 2, "directory children"),
        (b"/a", I_CHILD_COUNT, "<I", 30, "directory children"),
        (b"/a", I_MODE, "<I", 0o755, "no valid file type"),
        (b"/ln", I_SYMLINK_SIZE, "<H", 0, "symlink with i_symlink_size 0"),
        (b"/a/f1", I_SYMLINK_SIZE, "<H", 8, "on a non-symlink"),
        (b"/a/f1", I_SIZE, "<Q", 100, "i_child_count 4 but 100 bytes"),
        (b"/a/f1", I_BLOCKS, "<Q", 5, "i_blocks 5"),
        (b"/b/dup", I_FLAGS, "<Q", od.INODE_XATTR, "xattr"),
        (b"/ln", I_MODE, "<I", stat.S_IFDIR | 0o755, "i_symlink_size 4 on a non-symlink"),
        (b"/a/sub", I_PARENT, "<Q", 3, "listed by directory inode"),
    ],
)
def test_corrupt_inode(sample, path, field, fmt, value, message):
    rec = record_at(sample, path)
    with pytest.raises(InvalidImage, match=message):
        parse(patched(sample, rec.offset + field, fmt, value))


def test_corrupt_chunk_info(sample):
    rec = record_at(sample, b"/a/f1")
    base = rec.offset + rec.size - 4 * od.CHUNK_INFO_SIZE  # first chunk info
    with pytest.raises(InvalidImage, match="blob_index 7 >= 2 blobs"):
        parse(patched(sample, base + 32, "<I", 7))
    with pytest.raises(InvalidImage, match="file_offset"):
        parse(patched(sample, base + od.CHUNK_INFO_SIZE + 64, "<Q", 0))
    with pytest.raises(InvalidImage, match="uncompressed_size"):
        parse(patched(sample, base + 44, "<I", 10))
    with pytest.raises(InvalidImage, match="outside its blob"):
        parse(patched(sample, base + 72, "<I", 1000))
    with pytest.raises(Unsupported):
        parse(patched(sample, base + 36, "<I", od.CHUNK_BATCH))


def test_unsupported_hole_flag(sample):
    rec = record_at(sample, b"/a/f1")
    with pytest.raises(Unsupported, match="HAS_HOLE"):
        parse(patched(sample, rec.offset + I_FLAGS, "<Q", od.INODE_HAS_HOLE))


def test_digest_mismatch_only_with_verification(sample):
    rec = record_at(sample, b"/b/chr")
    bad = patched(sample, rec.offset, "<B", sample[rec.offset] ^ 1).getvalue()
    read_bootstrap(io.BytesIO(bad))  # nydusd does not check digests by default either
    with pytest.raises(InvalidImage, match=r"i_digest .* != computed"):
        read_bootstrap(io.BytesIO(bad), verify_digests=True)


def test_truncated_files(small, sample):
    lengths = [0, 3, 7, 8, 100, 8191, 8192, 8193] + list(range(8200, len(small), 8))
    for n in lengths:
        with pytest.raises(InvalidImage):
            read_bootstrap(io.BytesIO(small[:n]))
    for n in range(8200, len(sample), 504):
        with pytest.raises(InvalidImage):
            read_bootstrap(io.BytesIO(sample[:n]))


def test_missing_extended_table_is_legal(sample):
    buf = bytearray(sample)
    struct.pack_into("<I", buf, 68, 0)  # K = 0, the old format
    struct.pack_into("<Q", buf, 72, 0)
    bs = read_bootstrap(io.BytesIO(bytes(buf)))
    assert [(b.chunk_count, b.compressed_size, b.features) for b in bs.blobs] == [(0, 0, 0)] * 2


def test_unknown_blob_features_are_dropped(sample):
    parsed = parse(io.BytesIO(sample))
    ext = parsed.superblock.s_extended_blob_table_offset
    bs = read_bootstrap(patched(sample, ext + 4, "<I", 0x4000_0000 | 0x8000 | 0x1))
    assert bs.blobs[0].features == 0x4000_0001


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_random_corruption_fails_cleanly(small, data):
    buf = bytearray(small)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        if pos >= 80 and pos < 8192:
            pos = data.draw(st.integers(8192, len(buf) - 1))  # reserved bytes are ignored
        buf[pos] = data.draw(st.integers(0, 255))
    try:
        read_bootstrap(io.BytesIO(bytes(buf)), verify_digests=data.draw(st.booleans()))
    except RafsError:
        pass


def test_superblock_flag_decoding_rules():
    # rafs-v5.md §4: first match wins; no compression bit means lz4, no hash bit blake3.
    assert od.decode_compressor(0x94) == "zstd"
    assert od.decode_compressor(0x9) == "none"
    assert od.decode_compressor(0x81) == "none"
    assert od.decode_compressor(0x10) == "lz4_block"
    assert od.decode_digester(0x9) == "sha256"
    assert od.decode_digester(0xC) == "blake3"
    assert od.decode_digester(0x1) == "blake3"
