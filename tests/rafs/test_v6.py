"""RAFS v6: the upstream fixture, layout arithmetic, round trips, erofs-utils and the kernel."""

from __future__ import annotations

import dataclasses
import io
import os
import random
import stat
import struct
from pathlib import Path

import pytest

from rafs.blob.reader import iter_file, write_blob_view
from rafs.check import assert_sound
from rafs.errors import InvalidImage, InvalidInput, RafsError
from rafs.model import BlobInfo, Bootstrap, Chunk, Node, new_dir, new_root, walk
from rafs.v6 import ondisk
from rafs.v6.layout import chunk_format
from rafs.v6.reader import parse
from rafs.v6.writer import bootstrap_parts, build_bootstrap
from tests.erofs import dump_super, fsck_extract, kernel_mount
from tests.rafs.chunking import serial_chunker
from tests.treeutil import diff_signatures, fs_signature, tree_signature

MiB = 1 << 20
# A valid POSIX ACL xattr value (version 2): user::rw-, user:1000:r--, group::r--,
# mask::r--, other::r-- (the kernel validates ACL values on getxattr).
ACL = struct.pack("<I", 2) + b"".join(
    struct.pack("<HHI", tag, perm, ident)
    for tag, perm, ident in (
        (0x01, 6, 0xFFFFFFFF),
        (0x02, 4, 1000),
        (0x04, 4, 0xFFFFFFFF),
        (0x10, 4, 0xFFFFFFFF),
        (0x20, 4, 0xFFFFFFFF),
    )
)
FIXTURE_BOOT = "bootstrap/rafs-v6-2.2.boot"
FIXTURE_BLOB = "blobs/be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"


# -- the upstream fixture -------------------------------------------------------------------


def test_fixture_superblock_and_tree(upstream: Path) -> None:
    image = parse((upstream / FIXTURE_BOOT).read_bytes())
    sb = image.superblock
    assert (sb.inos, sb.blocks, sb.meta_blkaddr, sb.extra_devices) == (3, 9, 2, 1)
    assert sb.flags == 0x194
    assert (sb.blob_table_offset, sb.chunk_table_offset, sb.chunk_table_size) == (4096, 16384, 160)
    assert image.devices[0].blob_id.startswith("be7d77ee") and image.devices[0].blocks == 9
    assert image.devices[0].mapped_blkaddr == 512
    blob = image.bootstrap.blobs[0]
    assert (blob.chunk_count, blob.compressor, blob.digester) == (2, "zstd", "blake3")
    assert (blob.features, blob.compressed_size, blob.uncompressed_size) == (
        0x70000021,
        14554,
        36864,
    )
    assert (blob.toc_size, blob.ci_offset, blob.ci_compressed_size) == (1024, 8314, 32)
    assert blob.toc_digest.hex().startswith("cfc89ed0")
    files = {p: n for p, n in walk(image.bootstrap.root) if n.is_reg}
    assert {p: n.size for p, n in files.items()} == {b"/lib.rs": 16931, b"/sync_io.rs": 13400}
    sync = files[b"/sync_io.rs"].chunks[0]
    assert (sync.index, sync.uncompressed_offset, sync.compressed_offset) == (1, 20480, 4828)
    assert image.nids[id(image.bootstrap.root)] == 128


def test_fixture_relayout_reproduces_upstream_bytes(upstream: Path) -> None:
    """Our layout algorithm regenerates the fixture; only three documented fields differ."""
    original = (upstream / FIXTURE_BOOT).read_bytes()
    ours = build_bootstrap(parse(original).bootstrap)
    assert len(ours) == len(original)
    diffs = [i for i in range(len(ours)) if ours[i] != original[i]]
    flags, mapped, root_ino = 0x480, 0x580 + 68, 0x3000 + 20
    assert set(diffs) <= {flags, flags + 1, flags + 3, mapped, mapped + 1, root_ino}
    assert struct.unpack_from("<Q", ours, flags)[0] == 0x194 | 0x20 | 0x0100_0000
    assert struct.unpack_from("<I", ours, mapped)[0] == 0x80000 // 4096
    assert struct.unpack_from("<I", ours, root_ino)[0] == 1


def test_fixture_files_read_through_the_blob(upstream: Path) -> None:
    bs = parse((upstream / FIXTURE_BOOT).read_bytes()).bootstrap
    with open(upstream / FIXTURE_BLOB, "rb") as blob:
        for path, node in walk(bs.root):
            if node.is_reg:
                data = b"".join(iter_file(node, lambda _b: blob, bs.digester))
                assert len(data) == node.size, path
        view = io.BytesIO()
        write_blob_view(blob, bs.blobs[0], None, view)
    assert len(view.getvalue()) == 36864


def test_fixture_extracts_with_erofs_utils(upstream: Path, tmp_path: Path) -> None:
    bs = parse((upstream / FIXTURE_BOOT).read_bytes()).bootstrap
    view = tmp_path / "view"
    with open(upstream / FIXTURE_BLOB, "rb") as blob, open(view, "wb") as out:
        write_blob_view(blob, bs.blobs[0], None, out)
    fsck_extract(upstream / FIXTURE_BOOT, [view], tmp_path / "out")
    assert (tmp_path / "out/lib.rs").stat().st_size == 16931
    assert (tmp_path / "out/sync_io.rs").read_bytes().count(b"\n") > 100


# -- layout arithmetic ------------------------------------------------------------------------


def test_dirent_size_packs_greedily_into_blocks() -> None:
    assert ondisk.dirent_size([b".", b".."]) == 27
    names = [b"%0255d" % i for i in range(16)]  # 267 bytes each: 15 fit in one block
    assert ondisk.dirent_size(names) == 4096 + 267
    assert ondisk.dirent_size([b"x" * 4084]) == 4096


def test_xattr_size_matches_upstream_example() -> None:
    assert ondisk.xattr_body_size({b"user.a": b"\x01", b"trusted.b": b"\x02"}) == 28


def test_rdev_and_chunk_index_encodings() -> None:
    assert ondisk.encode_rdev(259, 300) == (300 & 0xFF) | (259 << 8) | ((300 & ~0xFF) << 12)
    assert ondisk.decode_rdev(ondisk.encode_rdev(259, 300)) == (259, 300)
    raw = ondisk.encode_chunk_index(3, 0x123456, 0xA5A53412)
    assert ondisk.decode_chunk_index(raw) == (3, 0x123456, 0xA5A53412)


def test_small_tree_nids_and_inline_layouts() -> None:
    root = new_root()
    root.children[b"b"] = Node(mode=stat.S_IFLNK | 0o777, target=b"a")
    root.children[b"d"] = new_dir()
    root.children[b"a"] = Node(mode=stat.S_IFIFO | 0o644)
    image = build_bootstrap(Bootstrap(root, []))  # no blobs: no META shift
    # root: 64-byte inode + 66 dirent bytes inline (5 x 12 + 6 name bytes) -> 4096..4226;
    # then 32-aligned: fifo (64) at 4256, symlink (64 + 1 inline) at 4320, dir at 4416.
    fmt, _, _, _, size, _, ino, *_ = ondisk.INODE_EXTENDED_S.unpack_from(image, 4096)
    assert fmt == ondisk.INODE_EXTENDED | ondisk.LAYOUT_FLAT_INLINE << 1 and size == 66
    dirents = [ondisk.DIRENT.unpack_from(image, 4096 + 64 + 12 * i) for i in range(5)]
    names = image[4096 + 64 + 60 : 4096 + 64 + 66]
    assert names == b"...abd"
    assert [nid * 32 for nid, *_ in dirents] == [4096, 4096, 4256, 4320, 4416]
    assert [ftype for _, _, ftype, _ in dirents] == [2, 2, 5, 7, 2]
    assert image[4320 + 64 : 4320 + 65] == b"a"  # the symlink target, inline
    assert ondisk.SUPERBLOCK.unpack_from(image, ondisk.SB_OFFSET)[6] == 4  # s_inos


@pytest.mark.parametrize("xattrs", [{}, {b"user.k": b"v"}])
def test_a_file_whose_chunks_do_not_cover_its_size_is_refused(xattrs: dict) -> None:
    writer = serial_chunker(io.BytesIO(), compressor="none")
    node = Node(mode=stat.S_IFREG | 0o644, size=MiB + 1, xattrs=xattrs)
    node.chunks = writer.add_file(io.BytesIO(bytes(MiB)), MiB)  # one chunk: two needed
    root = new_root()
    root.children[b"f"] = node
    with pytest.raises(RafsError, match=f"file of {MiB + 1} bytes has 1 chunks"):
        build_bootstrap(Bootstrap(root, [writer.writer.info], chunk_size=MiB))


def test_page_cache_trick_declares_one_big_chunk(tmp_path: Path) -> None:
    writer = serial_chunker(io.BytesIO(), compressor="none")
    data = random.Random(5).randbytes(3 * MiB + MiB // 2)
    node = Node(mode=stat.S_IFREG | 0o644, size=len(data))
    node.chunks = writer.add_file(io.BytesIO(data), len(data))
    assert chunk_format(node, MiB) == 0x20 | (22 - 12)  # 4 MiB declared chunk
    node.chunks = [node.chunks[1], *node.chunks[1:]]
    assert chunk_format(node, MiB) == 0x28


# -- generated trees --------------------------------------------------------------------------


def sample_tree(add) -> Node:
    """Every entry type, xattr namespaces, hard links, long names, big dirs, chunk sizes."""
    rng = random.Random(42)

    def file(data: bytes, mode: int = 0o644, **meta) -> Node:
        node = Node(mode=stat.S_IFREG | mode, size=len(data), **meta)
        node.chunks = add(io.BytesIO(data), len(data))
        return node

    meta = {"mtime": 1_700_000_000, "mtime_nsec": 123_456_789}
    root = new_root()
    one_mib = rng.randbytes(MiB)
    root.children[b"empty"] = file(b"", **meta)
    root.children[b"page"] = file(rng.randbytes(4096), **meta)
    root.children[b"one-mib"] = file(one_mib, **meta)
    root.children[b"multi"] = file(rng.randbytes(2 * MiB + 777), 0o4755, uid=70000, gid=70001)
    root.children[b"repeated"] = file(one_mib * 3 + b"tail", **meta)  # dedups onto one-mib
    root.children[b"text"] = file(b"compressible line\n" * 5000, **meta)
    root.children[b"x" * 255] = file(b"long name\n")
    xattrs = {
        b"user.comment": b"hello",
        b"trusted.overlay.origin": b"",
        b"security.capability": b"\x01\x00\x00\x02" + bytes(16),
        b"system.posix_acl_access": ACL,
    }
    root.children[b"xattrs"] = file(b"x", xattrs=xattrs, **meta)
    shared = file(b"linked\n", 0o600, uid=5, gid=6)
    root.children[b"link-a"] = shared
    sub = new_dir(0o1777, uid=7, gid=8, mtime=1234, xattrs={b"user.dir": b"1"})
    root.children[b"sub"] = sub
    sub.children[b"link-b"] = shared
    sub.children[b"link-c"] = shared
    sub.children[b"sym"] = Node(mode=stat.S_IFLNK | 0o777, target=b"../text", **meta)
    sub.children[b"long-sym"] = Node(mode=stat.S_IFLNK | 0o777, target=b"t/" * 2047 + b"t")
    sub.children[b"chr"] = Node(mode=stat.S_IFCHR | 0o620, rdev=os.makedev(4, 1))
    sub.children[b"blk"] = Node(mode=stat.S_IFBLK | 0o660, rdev=os.makedev(259, 300))
    sub.children[b"whiteout"] = Node(mode=stat.S_IFCHR | 0o000, rdev=0)
    # user.* xattrs are only readable on files and dirs (VFS rule), so trusted.* here
    sub.children[b"fifo"] = Node(mode=stat.S_IFIFO | 0o644, xattrs={b"trusted.f": b"v"})
    sub.children[b"sock"] = Node(mode=stat.S_IFSOCK | 0o755)
    big = new_dir(0o755)
    root.children[b"big"] = big
    for i in range(700):  # dirents span several blocks
        big.children[b"entry-%04d-%s" % (i, b"n" * (i % 50))] = file(b"%d" % (i % 9))
    big.children[b"!before-dot"] = file(b"")
    big.children[b".-between-dots"] = file(b"")
    deep = root
    for depth in range(20):
        deep.children[b"d%d" % depth] = new_dir()
        deep = deep.children[b"d%d" % depth]
    deep.children[b"leaf"] = file(b"deep\n")
    return root


def build_image(tmp: Path, compressor: str = "zstd", digester: str = "blake3"):
    """Write a sample image (bootstrap + blob file named by id); returns paths and bootstrap."""
    blob_tmp = tmp / "blob.tmp"
    with open(blob_tmp, "wb") as out:
        chunker = serial_chunker(out, compressor=compressor, digester=digester)
        root = sample_tree(chunker.add_file)
        info = chunker.writer.finish()
    blob_path = tmp / info.blob_id
    blob_tmp.rename(blob_path)
    bs = Bootstrap(root=root, blobs=[info], compressor=compressor, digester=digester)
    boot = tmp / "image.boot"
    boot.write_bytes(build_bootstrap(bs))
    return boot, blob_path, bs


def make_view(tmp: Path, bs: Bootstrap, blob_path: Path) -> Path:
    view = tmp / "view"
    with open(blob_path, "rb") as blob, open(view, "wb") as out:
        write_blob_view(blob, bs.blobs[0], None, out)
    return view


def read_content(bs: Bootstrap, blob_path: Path):
    def content(node: Node) -> bytes:
        with open(blob_path, "rb") as blob:
            return b"".join(iter_file(node, lambda _b: blob, bs.digester))

    return content


def test_prefetch_table_names_the_matched_inodes_in_pattern_order(tmp_path: Path) -> None:
    with open(tmp_path / "blob", "wb") as out:
        chunker = serial_chunker(out)
        root = new_root()
        for name in (b"a", b"b"):
            node = Node(mode=stat.S_IFREG | 0o644, size=5)
            node.chunks = chunker.add_file(io.BytesIO(name * 5), 5)
            root.children[name] = node
        sub = root.children[b"d"] = new_dir()
        sub.children[b"x"] = Node(mode=stat.S_IFLNK | 0o777, target=b"../a")
        info = chunker.writer.finish()
    patterns = [b"/b", b"/d", b"/d/x", b"/missing", b"/a"]  # /d/x is inside /d: dropped
    data = build_bootstrap(Bootstrap(root, [info], prefetch=patterns))
    assert parse(data).bootstrap.prefetch == [b"/b", b"/d", b"/a"]


def test_remembering_every_node_writes_the_same_bootstrap(tmp_path: Path, monkeypatch) -> None:
    """Where references cannot be counted as on CPython 3.11-3.13 (hard links found by
    refcount), every node is remembered: the same bytes, hard links included."""
    boot, _, bs = build_image(tmp_path)
    monkeypatch.setattr("rafs.v6.writer._ONE_NAME_REFS", -1)
    assert build_bootstrap(bs) == boot.read_bytes()
    monkeypatch.setattr("rafs.v6.writer._ONE_NAME_REFS", 1 << 30)  # as if none could repeat
    assert build_bootstrap(bs) != boot.read_bytes()  # the sample's hard links are then lost


def test_releasing_the_tree_writes_the_same_bootstrap(tmp_path: Path) -> None:
    """``release_tree`` empties each directory once written: the same bytes, hard links
    included, also one whose other name is in a directory visited after the first one was
    released (its reference count then no longer shows that name); prefetch too."""
    _, _, bs = build_image(tmp_path)
    text = bs.root.children[b"text"]
    twice = Node(mode=stat.S_IFREG | 0o640, size=text.size, chunks=text.chunks)
    for name in (b"aa", b"zz"):
        bs.root.children[name] = new_dir()
        bs.root.children[name].children[b"f"] = twice
    bs.prefetch = [b"/sub/link-b", b"/text"]  # (a prefetched node has a reference more)
    whole = build_bootstrap(bs)
    assert len(parse(whole).bootstrap.prefetch) == 2
    del text, twice
    size, parts = bootstrap_parts(bs, release_tree=True)
    assert b"".join(parts) == whole and size == len(whole)
    assert bs.root.children == {}


def test_the_chunk_table_in_slices_is_the_table(tmp_path: Path, monkeypatch) -> None:
    """The chunk table is packed in slices; cut small, they give the same bootstrap, and
    the parts are the meta area then the slices."""
    boot, _, bs = build_image(tmp_path)
    whole = boot.read_bytes()
    monkeypatch.setattr("rafs.v6.writer._TABLE_SLICE", 2)
    size, parts = bootstrap_parts(bs)
    sizes = [len(part) for part in parts]
    records = ondisk.EXT_SUPERBLOCK.unpack_from(whole, ondisk.EXT_SB_OFFSET)[5] // 80
    assert len(sizes) == 1 + -(-records // 2) and records > 4
    assert build_bootstrap(bs) == whole and sum(sizes) == size == len(whole)


@pytest.mark.parametrize("compressor", ["zstd", "lz4_block", "none"])
def test_roundtrip_reads_back_equal(tmp_path: Path, compressor: str) -> None:
    boot, blob_path, built = build_image(tmp_path, compressor)
    data = boot.read_bytes()
    with open(blob_path, "rb") as blob:
        assert_sound(data, lambda _b: blob)
    read = parse(data).bootstrap
    expected = tree_signature(built.root, read_content(built, blob_path))
    got = tree_signature(read.root, read_content(read, blob_path))
    assert diff_signatures(expected, got) == []
    links = got["/link-a"]["links"]
    assert links == ("/link-a", "/sub/link-b", "/sub/link-c")


def test_same_input_gives_identical_bytes(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    boot_a, blob_a, _ = build_image(tmp_path / "a")
    boot_b, blob_b, _ = build_image(tmp_path / "b")
    assert boot_a.read_bytes() == boot_b.read_bytes()
    assert blob_a.read_bytes() == blob_b.read_bytes()


def test_blobs_may_be_finished_while_the_tree_is_laid_out(tmp_path: Path) -> None:
    """``await_blobs`` runs before any blob field is read: a blob whose id and sizes are
    still unset when writing starts gives the same bytes once the hook sets them."""
    boot, _, bs = build_image(tmp_path)
    done = dataclasses.replace(bs.blobs[0])
    blank = bs.blobs[0]
    for name in ("blob_id", "compressed_size", "uncompressed_size", "chunk_count", "features"):
        setattr(blank, name, type(getattr(blank, name))())
    calls = []

    def finish_blobs() -> None:
        calls.append(1)
        for name in ("blob_id", "compressed_size", "uncompressed_size", "chunk_count"):
            setattr(blank, name, getattr(done, name))
        blank.features = done.features

    assert build_bootstrap(bs, finish_blobs) == boot.read_bytes()
    assert calls == [1]
    with pytest.raises(RafsError, match="not a 64-character id"):
        blank.blob_id = ""
        build_bootstrap(bs, lambda: None)


def test_erofs_utils_extracts_the_source(tmp_path: Path) -> None:
    boot, blob_path, built = build_image(tmp_path)
    view = make_view(tmp_path, built, blob_path)
    assert "chunked_file device_table" in dump_super(boot, [view])
    fsck_extract(boot, [view], tmp_path / "out")
    expected = tree_signature(built.root, read_content(built, blob_path))
    got = fs_signature(tmp_path / "out", xattrs=False)
    # erofs-utils 1.5 restores no xattrs, no hard links, no setuid, and writes its own
    # directory times; everything else must match (rafs-v6.md §20.2).
    ignore = ("xattrs", "links", "mode", "mtime", "uid", "gid")
    assert diff_signatures(expected, got, ignore) == []
    for path, entry in expected.items():
        if entry["type"] != stat.S_IFDIR:
            assert got[path]["mode"] == entry["mode"] & 0o777, path


def test_kernel_mount_matches_every_attribute(tmp_path: Path) -> None:
    boot, blob_path, built = build_image(tmp_path)
    view = make_view(tmp_path, built, blob_path)
    expected = tree_signature(built.root, read_content(built, blob_path))
    with kernel_mount(boot, [view], tmp_path / "mnt") as mnt:
        got = fs_signature(mnt)
        assert os.stat(mnt).st_ino == 128
    assert diff_signatures(expected, got) == []


# -- bad input --------------------------------------------------------------------------------


def _corrupt(data: bytes, offset: int, raw: bytes) -> bytes:
    return data[:offset] + raw + data[offset + len(raw) :]


@pytest.fixture(scope="module")
def good_image(tmp_path_factory) -> bytes:
    tmp = tmp_path_factory.mktemp("good")
    boot, _, _ = build_image(tmp)
    return boot.read_bytes()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: _corrupt(d, 1024, b"\0\0\0\0"), "bad EROFS magic"),
        (lambda d: d[:1100], "too short"),
        (lambda d: d[:6000], "not a multiple of 4096"),
        (lambda d: d[: len(d) - 4096], "out of range"),
        (lambda d: _corrupt(d, 1152 + 8, struct.pack("<Q", 1 << 40)), "blob table"),
        (lambda d: _corrupt(d, 1152, struct.pack("<Q", 1 << 40)), "unknown superblock flags"),
        (lambda d: _corrupt(d, 1064, struct.pack("<I", 1 << 30)), "meta block"),
        (lambda d: _corrupt(d, 1408 + 64, b"\0\0\0\0"), "0 blocks"),
    ],
)
def test_corrupt_bootstrap_is_a_clean_error(good_image: bytes, mutate, message: str) -> None:
    with pytest.raises(InvalidImage, match=message):
        parse(mutate(good_image))


def test_corrupt_inode_area_never_escapes_as_another_exception(good_image: bytes) -> None:
    rng = random.Random(7)
    meta = struct.unpack_from("<I", good_image, 1064)[0] * 4096
    failures = 0
    for _ in range(300):
        data = bytearray(good_image)
        for _ in range(8):
            data[rng.randrange(meta, len(data))] = rng.randrange(256)
        try:
            parse(bytes(data))
        except RafsError:  # InvalidImage, or Unsupported for a valid-looking unknown format
            failures += 1
    assert failures > 0  # mutations are detected, and only as the package's own errors


def test_chunk_table_records_one_digest_stored_in_two_blobs() -> None:
    """The chunk table is keyed by (digest, blob, ci index): a digest stored by two blobs (a
    dictionary blob and a layer's, say) gives two records, blob order; a record's file offset
    is the chunk's offset in the last file visited."""
    blobs = [
        BlobInfo(chunk_size=4096, blob_id=c * 64, chunk_count=2, uncompressed_size=8192)
        for c in "ab"
    ]
    digest, other = bytes([7]) * 32, bytes([1]) * 32

    def chunk(blob: BlobInfo, index: int, digest: bytes) -> Chunk:
        return Chunk(blob, index, digest, 10 * index, 10, 4096 * index, 4096, True, 5)

    first, second = chunk(blobs[1], 0, digest), chunk(blobs[0], 1, digest)
    lone = chunk(blobs[0], 0, other)
    root = new_root()
    root.children[b"a"] = Node(stat.S_IFREG | 0o644, size=8192, chunks=(lone, first))
    root.children[b"b"] = Node(stat.S_IFREG | 0o644, size=4096, chunks=(second,))
    image = build_bootstrap(Bootstrap(root, blobs, chunk_size=4096))
    ext = ondisk.EXT_SUPERBLOCK.unpack_from(image, ondisk.EXT_SB_OFFSET)
    offset, size = ext[4], ext[5]
    records = [
        (r[0], r[1], r[7], r[8])
        for r in ondisk.CHUNK_RECORD.iter_unpack(image[offset : offset + size])
    ]
    # (digest, blob index, file offset, ci index)
    assert records == [(other, 0, 0, 0), (digest, 0, 0, 1), (digest, 1, 4096, 0)]


def test_a_ci_index_named_with_two_digests_is_refused() -> None:
    """Only a hostile parent bootstrap can give one stored chunk two digests; the chunk table
    cannot say which is right."""
    blob = BlobInfo(chunk_size=4096, blob_id="c" * 64, chunk_count=1, uncompressed_size=4096)
    root = new_root()
    for name, digest in ((b"a", bytes([9]) * 32), (b"b", bytes([3]) * 32)):
        chunk = Chunk(blob, 0, digest, 0, 10, 0, 4096, True, 5)
        root.children[name] = Node(stat.S_IFREG | 0o644, size=4096, chunks=(chunk,))
    with pytest.raises(InvalidInput, match=r"chunk 0 of blob cccccccccccc has two digests, 0909"):
        build_bootstrap(Bootstrap(root, [blob], chunk_size=4096))


@pytest.mark.parametrize("xattrs", [{}, {b"user.a": b"1"}])
def test_a_chunk_of_a_blob_missing_from_the_list_is_refused(xattrs: dict) -> None:
    """Found where the layout meets it, also once the blob table's walk stopped early (every
    listed blob seen)."""
    listed, other = (
        BlobInfo(chunk_size=4096, blob_id=c * 64, chunk_count=1, uncompressed_size=4096)
        for c in "ab"
    )
    root = new_root()
    for name, blob in ((b"a", other), (b"z", listed)):  # z is walked first
        chunk = Chunk(blob, 0, name * 32, 0, 10, 0, 4096, True, 5)
        sub = root.children[name] = new_dir()
        sub.children[b"f"] = Node(stat.S_IFREG | 0o644, size=4096, chunks=(chunk,), xattrs=xattrs)
    with pytest.raises(InvalidInput, match="references blobs missing from the blob list"):
        build_bootstrap(Bootstrap(root, [listed], chunk_size=4096))
