"""`rconv check` without a registry: the independent source model (containerd's layer apply),
the tree comparison, the lazy chunk reader, the manifest/config rules, and whole checks of
conversions written to OCI layouts (blobs read from whole copies there)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import threading
from pathlib import Path

import pytest
import zstandard

from convert.check import CheckOptions, rules, run_check
from convert.check.bootlayer import read_bootstrap_layer
from convert.check.compare import compare_trees
from convert.check.errors import SourceError
from convert.check.lazy import EMPTY_SHA256, plan_ranges, read_contents
from convert.check.reference import Inode, SourceTree, build_tree, read_layer
from convert.check.report import Difference
from convert.check.run import progress_to
from rafs import codec
from rafs.model import BlobInfo, Chunk, Node
from registry import mediatype as mt
from registry.build import Blob, build_image, dumps
from registry.model import StaticImage
from registry.tarwriter import open_tar_writer
from tests.cli import rconv

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------ layer builders


def info(
    name: str, kind: bytes = tarfile.REGTYPE, mode: int | None = None, **kw
) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode if mode is not None else (0o755 if kind == tarfile.DIRTYPE else 0o644)
    ti.mtime = 1_700_000_000
    for key, value in kw.items():
        setattr(ti, key, value)
    return ti


def tar(*members: tuple[tarfile.TarInfo, bytes | None], end: bool = True, **kw) -> bytes:
    """An uncompressed PAX tar; ``end=False`` leaves out the end-of-archive blocks."""
    buf = io.BytesIO()
    tf = tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, **kw)
    for ti, data in members:
        if data is not None:
            ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    if not end:
        return buf.getvalue()[: tf.offset]
    tf.close()
    return buf.getvalue()


def d(name: str, mode: int = 0o755, **kw):
    return info(name, tarfile.DIRTYPE, mode, **kw), None


def f(name: str, data: bytes, mode: int = 0o644, **kw):
    return info(name, tarfile.REGTYPE, mode, **kw), data


def ln(name: str, target: str):
    return info(name, tarfile.LNKTYPE, linkname=target), None


def sym(name: str, target: str, mode: int = 0o777):
    return info(name, tarfile.SYMTYPE, mode, linkname=target), None


def merged(*layers: bytes) -> SourceTree:
    return build_tree(
        (f"layer{i}", lambda data=data: io.BytesIO(data)) for i, data in enumerate(layers)
    )


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------ source model


def test_whiteouts_and_opaque_dirs_hide_lower_entries_only() -> None:
    lower = tar(d("a"), f("a/f", b"f"), f("a/g", b"g"), d("o"), f("o/old", b"old"), d("o/sub"))
    upper = tar(
        f("a/.wh.f", b""),
        f("o/new", b"new"),  # before the opaque marker: still survives (same layer)
        f("o/.wh..wh..opq", b""),
        f(".wh.nowhere", b""),
    )
    tree = merged(lower, upper)
    assert sorted(tree.paths) == [b"/", b"/a", b"/a/g", b"/o", b"/o/new"]
    assert tree.paths[b"/o/new"].digest == sha(b"new")


@pytest.mark.parametrize("marker_first", [True, False])
def test_whiteout_never_removes_an_entry_of_its_own_layer(marker_first: bool) -> None:
    lower = tar(d("d"), f("d/x", b"lower"), f("d/y", b"y"))
    entries = [f("d/.wh.x", b""), f("d/x", b"upper")]
    tree = merged(lower, tar(*(entries if marker_first else entries[::-1])))
    assert tree.paths[b"/d/x"].digest == sha(b"upper")
    assert b"/d/y" in tree.paths


def test_whiteout_of_a_directory_removes_its_subtree_and_a_same_layer_dir_starts_empty() -> None:
    lower = tar(d("d", 0o700), f("d/x", b"x"), d("d/e"), f("d/e/z", b"z"))
    tree = merged(lower, tar(f(".wh.d", b""), f("d/new", b"n")))
    assert sorted(p for p in tree.paths if p.startswith(b"/d")) == [b"/d", b"/d/new"]
    assert tree.paths[b"/d"].mode == stat.S_IFDIR | 0o755  # implicit, nothing below any more


def test_implicit_parents_keep_the_lower_directory_metadata() -> None:
    lower = tar(d("p", 0o700, uid=5, gid=6, pax_headers={"SCHILY.xattr.user.k": "v"}))
    tree = merged(lower, tar(f("p/q/file", b"data")))
    p, q = tree.paths[b"/p"], tree.paths[b"/p/q"]
    assert (p.mode, p.uid, p.gid, p.xattrs) == (stat.S_IFDIR | 0o700, 5, 6, {b"user.k": b"v"})
    assert (q.mode, q.uid, q.gid, q.xattrs) == (stat.S_IFDIR | 0o755, 0, 0, {})
    assert tree.implicit_over_lower == {b"/p"}  # reported: nydusify expects 0755 root there


def test_explicit_directory_entries_replace_metadata_and_keep_children() -> None:
    lower = tar(d("p", 0o700, uid=5), f("p/keep", b"k"))
    tree = merged(lower, tar(d("p", 0o750, uid=7), f("p/new", b"n")))
    assert tree.paths[b"/p"].mode == stat.S_IFDIR | 0o750 and tree.paths[b"/p"].uid == 7
    assert {b"/p/keep", b"/p/new"} <= tree.paths.keys()
    assert tree.implicit_over_lower == set()


def test_non_directories_in_the_way_become_directories() -> None:
    lower = tar(f("file", b"x"), sym("link", "/elsewhere"), d("dir"), f("dir/child", b"c"))
    upper = tar(f("file/inside", b"i"), f("link/x", b"x"), f("dir", b"now a file"))
    tree = merged(lower, upper)
    assert tree.paths[b"/file"].is_dir and b"/file/inside" in tree.paths
    assert tree.paths[b"/link"].is_dir and b"/link/x" in tree.paths  # lower symlink not followed
    assert not tree.paths[b"/dir"].is_dir and b"/dir/child" not in tree.paths


def test_parent_symlinks_of_the_same_layer_are_followed_inside_the_root() -> None:
    lower = tar(sym("low", "/etc"))
    upper = tar(sym("evil", "../../.."), f("evil/etc/passwd", b"pw"), f("low/x", b"x"))
    t = merged(lower, upper)
    assert t.paths[b"/etc/passwd"].digest == sha(b"pw")  # resolved and clamped at the root
    assert stat.S_ISLNK(t.paths[b"/evil"].mode)
    assert stat.S_ISDIR(t.paths[b"/low"].mode) and b"/low/x" in t.paths  # lower: not followed


def test_root_entry_replaces_root_metadata_and_dot_slash_names_are_normalised() -> None:
    layer = tar(d("./", 0o700, uid=3), d("./a"), f("./a/x", b"1"), f("a/y", b"2"), f("/a/z", b"3"))
    tree = merged(layer)
    assert tree.paths[b"/"].mode == stat.S_IFDIR | 0o700 and tree.paths[b"/"].uid == 3
    assert sorted(tree.paths) == [b"/", b"/a", b"/a/x", b"/a/y", b"/a/z"]


def test_hard_links_within_a_layer_and_to_a_lower_target() -> None:
    lower = tar(f("lower", b"L", uid=9), f("group1", b"G"), ln("group2", "group1"))
    upper = tar(
        f("mine", b"M"),
        ln("mine-link", "mine"),
        ln("to-lower", "lower"),  # joins the lower inode (image.md §15.6)
        f("group1", b"replaced"),  # the remaining name keeps the old inode
        f(".wh.lower", b""),  # removes one name only; the link made above still counts
    )
    tree = merged(lower, upper)
    p = tree.paths
    assert p[b"/mine"] is p[b"/mine-link"]
    assert p[b"/to-lower"].digest == sha(b"L") and p[b"/to-lower"].uid == 9
    assert b"/lower" not in p
    assert p[b"/group2"].digest == sha(b"G") and p[b"/group1"].digest == sha(b"replaced")


def test_a_link_entry_applies_its_metadata_to_an_inode_of_its_own_layer() -> None:
    link = info("alias", tarfile.LNKTYPE, 0o4700, linkname="tool", uid=5, gid=6,
                pax_headers={"SCHILY.xattr.user.b": "2"})  # fmt: skip
    lower = tar(f("base", b"B", uid=9))
    upper = tar(
        f("tool", b"T", 0o755, pax_headers={"SCHILY.xattr.user.a": "1"}),
        (link, None),
        ln("base-alias", "base"),  # a lower target keeps its own metadata
        ln("again", "base-alias"),  # and so does a link to that link
    )
    p = merged(lower, upper).paths
    tool = p[b"/tool"]
    assert p[b"/alias"] is tool and (tool.mode, tool.uid, tool.gid) == (0o104700, 5, 6)
    assert tool.xattrs == {b"user.a": b"1", b"user.b": b"2"}
    assert p[b"/base-alias"] is p[b"/base"] is p[b"/again"] and p[b"/base"].uid == 9
    assert stat.S_IMODE(p[b"/base"].mode) == 0o644


def test_hard_link_to_nothing_names_both_paths() -> None:
    with pytest.raises(SourceError, match="'/a'.*'/missing'"):
        merged(tar(ln("a", "missing")))


def test_entry_types_modes_devices_and_xattrs() -> None:
    cap = "\x01\x00\x00\x02\xff\xfe"
    layer = tar(
        sym("s", "target", mode=0o644),
        (info("c", tarfile.CHRTYPE, 0o620, devmajor=4, devminor=64), None),
        (info("b", tarfile.BLKTYPE, 0o660, devmajor=8, devminor=1), None),
        (info("p", tarfile.FIFOTYPE, 0o600), None),
        f("x", b"", 0o4755, pax_headers={
            "SCHILY.xattr.security.capability": cap,
            "SCHILY.xattr.trusted.overlay.opaque": "y",
            "SCHILY.xattr.user.overlay.origin": "z",
            "SCHILY.xattr.user.bin": "\udcff\x00ok",
        }),
    )  # fmt: skip
    p = merged(layer).paths
    assert p[b"/s"].mode == stat.S_IFLNK | 0o777 and p[b"/s"].target == b"target"
    assert p[b"/c"].mode == stat.S_IFCHR | 0o620 and p[b"/c"].rdev == os.makedev(4, 64)
    assert p[b"/b"].mode == stat.S_IFBLK | 0o660 and p[b"/b"].rdev == os.makedev(8, 1)
    assert p[b"/p"].mode == stat.S_IFIFO | 0o600
    assert p[b"/x"].mode == stat.S_IFREG | 0o4755 and p[b"/x"].digest == EMPTY_SHA256
    assert p[b"/x"].xattrs == {
        b"security.capability": b"\x01\x00\x00\x02\xc3\xbf\xc3\xbe",
        b"user.bin": b"\xff\x00ok",
    }


def test_layers_without_end_blocks_empty_layers_and_every_compression() -> None:
    body = tar(d("a"), f("a/x", b"x" * 700), end=False)
    assert len(body) % 512 == 0 and not body.endswith(bytes(1024))
    layers = [
        body,  # no end-of-archive blocks (NOTES.md 9)
        b"",  # a 0-byte layer is empty
        gzip.compress(tar(f("g", b"gz")), mtime=0),
        zstandard.ZstdCompressor().compress(tar(f("z", b"zst"))),
        gzip.compress(b"", mtime=0),
    ]
    tree = merged(*layers)
    assert sorted(tree.paths) == [b"/", b"/a", b"/a/x", b"/g", b"/z"]


def test_a_stream_cut_inside_an_entry_is_an_error() -> None:
    body = tar(f("x", b"y" * 2000), f("z", b"z"))
    for cut in (1200, 512 + 2048 + 100):  # inside the data of x; inside the header of z
        with pytest.raises(SourceError, match="layer0"):
            merged(body[:cut])


def test_a_stream_ending_inside_the_last_padding_is_complete_as_for_go() -> None:
    """umoci 0.4's insert never closes its tar writer: the last file's data is whole, its
    padding and the end blocks are missing. Go's reader (containerd) takes that as the end."""
    body = tar(d("a"), f("a/x", b"x" * 700), end=False)[: 512 + 512 + 700]
    entries, diff_id = read_layer(io.BytesIO(body))
    assert [e.path for e in entries] == [b"/a", b"/a/x"]
    assert entries[1].inode is not None and entries[1].inode.digest == sha(b"x" * 700)
    assert diff_id == sha(body)  # the completed padding is not part of the layer


def test_pax_global_headers_are_ignored_and_diff_id_is_the_raw_tar_digest() -> None:
    body = tar(
        f("x", b"data", pax_headers={"SCHILY.xattr.user.a": "b"}),
        pax_headers={"uid": "77", "path": "elsewhere"},
    )
    entries, diff_id = read_layer(io.BytesIO(gzip.compress(body, mtime=0)))
    assert diff_id == sha(body)
    assert [(e.path, e.inode.uid) for e in entries] == [(b"/x", 0)]  # type: ignore[union-attr]


def test_a_set_stop_event_ends_the_source_read() -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(SourceError, match="cancelled"):
        build_tree([("l", lambda: io.BytesIO(tar(f("x", b"x"))))], stop=stop)


# ------------------------------------------------------------------------------ comparison


def test_compare_reports_every_field_once() -> None:
    def pair() -> tuple[Inode, Inode]:
        return Inode(stat.S_IFREG | 0o644), Inode(stat.S_IFREG | 0o644)

    src = {b"/": Inode(stat.S_IFDIR | 0o755), b"/only-src": Inode(stat.S_IFIFO | 0o644)}
    dst = {b"/": Inode(stat.S_IFDIR | 0o755), b"/only-dst": Inode(stat.S_IFIFO | 0o644)}
    a, b = pair()
    a.size, b.size, a.digest, b.digest = 1, 2, "sha256:aa", "sha256:bb"
    a.uid, b.gid, b.mode = 1, 2, stat.S_IFREG | 0o600
    a.xattrs, b.xattrs = {b"user.k": b"1", b"user.gone": b"x"}, {b"user.k": b"2"}
    src[b"/f"], dst[b"/f"] = a, b
    src[b"/t"], dst[b"/t"] = Inode(stat.S_IFLNK | 0o777, target=b"x"), Inode(stat.S_IFDIR)
    src[b"/l"] = Inode(stat.S_IFLNK | 0o777, target=b"one")
    dst[b"/l"] = Inode(stat.S_IFLNK | 0o777, target=b"two")
    src[b"/c"] = Inode(stat.S_IFCHR | 0o600, rdev=os.makedev(1, 3))
    dst[b"/c"] = Inode(stat.S_IFCHR | 0o600, rdev=os.makedev(1, 5))
    shared, x, y = Inode(stat.S_IFREG | 0o644), Inode(stat.S_IFREG | 0o644), Inode(stat.S_IFREG)
    y.mode = x.mode
    src[b"/h1"], src[b"/h2"], dst[b"/h1"], dst[b"/h2"] = shared, shared, x, y
    got = compare_trees(src, dst)
    assert got == [
        Difference("/c", "rdev", "1:3", "1:5"),
        Difference("/f", "mode", "0644", "0600"),
        Difference("/f", "uid", "1", "0"),
        Difference("/f", "gid", "0", "2"),
        Difference("/f", "size", "1", "2"),
        Difference("/f", "content", "sha256:aa", "sha256:bb"),
        Difference("/f", "xattr user.gone", "x", "(absent)"),
        Difference("/f", "xattr user.k", "1", "2"),
        Difference("/h1", "hardlinks", "[/h2]", "[]"),
        Difference("/h2", "hardlinks", "[/h1]", "[]"),
        Difference("/l", "target", "one", "two"),
        Difference("/only-dst", "exists", "no", "yes"),
        Difference("/only-src", "exists", "yes", "no"),
        Difference("/t", "type", "symlink", "directory"),
    ]
    assert compare_trees(src, src) == []


# ------------------------------------------------------------------------------ lazy reader


class FakeBlobs:
    """Chunks stored back to back in one blob; records every fetch."""

    def __init__(self, pieces: list[bytes], compressor: str = "zstd") -> None:
        self.info = BlobInfo(compressor=compressor, blob_id="ab" * 32, chunk_size=4096)
        self.data = bytearray()
        self.chunks: list[Chunk] = []
        for i, piece in enumerate(pieces):
            stored, compressed = codec.compress(compressor, piece)
            self.chunks.append(
                Chunk(self.info, i, codec.digest("blake3", piece), len(self.data), len(stored),
                      i * 4096, len(piece), compressed)
            )  # fmt: skip
            self.data += stored
        self.fetches: list[tuple[int, int]] = []

    def fetch(self, blob: BlobInfo, offset: int, length: int) -> bytes:
        assert blob is self.info
        self.fetches.append((offset, length))
        return bytes(self.data[offset : offset + length])

    def file(self, *indexes: int) -> Node:
        chunks = [self.chunks[i] for i in indexes]
        return Node(
            stat.S_IFREG | 0o644, size=sum(c.uncompressed_size for c in chunks), chunks=chunks
        )


PIECES = [bytes([i]) * 4096 for i in range(5)] + [os.urandom(1000)]


def expected(node: Node) -> str:
    return sha(b"".join(PIECES[c.index] for c in node.chunks))


@pytest.mark.parametrize("cache_bytes", [1 << 20, 1])
def test_every_chunk_read_once_and_files_hashed_in_order(cache_bytes: int) -> None:
    blobs = FakeBlobs(PIECES)
    files = [
        blobs.file(0, 1, 2),
        blobs.file(4, 0, 3),  # shares chunks, out of stored order
        blobs.file(5, 5, 5),  # one chunk three times
        blobs.file(2),
        Node(stat.S_IFREG | 0o644),  # empty
        Node(stat.S_IFDIR | 0o755, children={}),
    ]
    files.append(files[0])  # a hard link: hashed once
    result = read_contents(files, blobs.fetch, jobs=3, cache_bytes=cache_bytes)
    for node in files[:4]:
        assert result.digests[id(node)] == expected(node)
    assert result.digests[id(files[4])] == EMPTY_SHA256 and id(files[5]) not in result.digests
    assert result.chunks == 6 and result.chunk_bytes == len(blobs.data)
    first_pass = result.fetched - result.refetched
    assert first_pass == len(blobs.data) and result.bad_chunks == []
    assert blobs.fetches[0] == (0, len(blobs.data))  # adjacent chunks: one coalesced range
    if cache_bytes == 1:
        assert result.refetched > 0  # evicted chunks are fetched again, never guessed
    else:
        assert result.refetched == 0 and len(blobs.fetches) == 1


def test_ranges_are_bounded_and_skip_gaps() -> None:
    blobs = FakeBlobs(PIECES, compressor="none")
    wanted = [blobs.chunks[i] for i in (0, 1, 2, 4)]
    ranges = plan_ranges(wanted, max_range=8192)
    assert [(r.start, r.end) for r in ranges] == [(0, 8192), (8192, 12288), (16384, 20480)]
    packed = FakeBlobs([bytes(4096)] * 4)  # each compresses to a few bytes
    ranges = plan_ranges(packed.chunks, max_range=8192)
    assert [len(r.chunks) for r in ranges] == [2, 2]  # bounded by the decoded size too


def test_a_flipped_byte_is_found_and_named() -> None:
    blobs = FakeBlobs(PIECES)
    bad = blobs.chunks[1]
    assert bad.compressed
    blobs.data[bad.compressed_offset + bad.compressed_size // 2] ^= 0x40
    files = [blobs.file(0, 1, 2), blobs.file(3)]
    result = read_contents(files, blobs.fetch)
    assert len(result.bad_chunks) == 1 and "chunk 1 " in result.bad_chunks[0]
    assert result.digests[id(files[0])].startswith("unreadable: blob abababababab chunk 1")
    assert result.digests[id(files[1])] == expected(files[1])


def test_progress_is_one_bar_per_pass() -> None:
    calls: list[tuple] = []

    class Bar:
        def layer_start(self, key, label, total):
            calls.append(("start", total))

        def layer_advance(self, key, amount):
            calls.append(("advance", amount))

        def layer_done(self, key, message):
            calls.append(("done", message))

    blobs = FakeBlobs(PIECES)
    read_contents([blobs.file(0, 1), blobs.file(1, 0)], blobs.fetch, progress=progress_to(Bar()))
    size = blobs.chunks[1].compressed_offset + blobs.chunks[1].compressed_size
    assert calls == [("start", size), ("advance", size), ("done", f"read {size} bytes of chunks")]


# ------------------------------------------------------------------------------ rules


def nydus_image(layers: list[dict], config: dict | None = None, **manifest) -> StaticImage:
    rootfs = {"type": "layers", "diff_ids": [x["digest"] for x in layers]}
    cfg = config or {"os": "linux", "architecture": "amd64", "config": {}, "rootfs": rootfs}
    cfg_bytes = dumps(cfg)
    body = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": Blob.from_bytes(cfg_bytes, mt.OCI_CONFIG).descriptor().to_json(),
        "layers": layers,
        **manifest,
    }
    return StaticImage(dumps(body), lambda desc: io.BytesIO(cfg_bytes))


def layer(n: int, **annotations) -> dict:
    return {"mediaType": mt.NYDUS_BLOB, "digest": "sha256:" + f"{n:x}" * 64, "size": n,
            "annotations": annotations}  # fmt: skip


BLOB = {"containerd.io/snapshot/nydus-blob": "true"}
BOOT = {"containerd.io/snapshot/nydus-bootstrap": "true"}


def test_layer_rules_name_the_misplaced_bootstrap_and_missing_annotations() -> None:
    boot = dict(layer(3, **BOOT), mediaType=mt.OCI_LAYER_GZIP)
    good = nydus_image([layer(1, **BLOB), layer(2, **BLOB), boot])
    descs = good.layer_descriptors
    assert not rules.bootstrap_last(descs).problems and not rules.blob_layers(descs, 2).problems
    bad = nydus_image([boot, layer(1, **BLOB), layer(2)]).layer_descriptors
    assert rules.bootstrap_last(bad).problems == [
        "the last layer's containerd.io/snapshot/nydus-bootstrap annotation is None, not 'true'",
        "layer 0 (not the last) is annotated as the bootstrap",
    ]
    missing = nydus_image([layer(1), layer(2, **BLOB), boot]).layer_descriptors
    assert rules.blob_layers(missing, 2).problems == [
        "layer 0 lacks the annotation containerd.io/snapshot/nydus-blob: 'true'"
    ]


def test_config_rules_compare_with_the_source() -> None:
    src_cfg = {"os": "linux", "architecture": "amd64", "history": [{"created_by": "x"}]}
    src_cfg["config"] = {"Env": ["A=1"], "ArgsEscaped": True}
    source = build_image(src_cfg, [])
    mine = dict(src_cfg, config={"Env": ["A=2"]}, history=[{"created_by": "x"}])
    mine["rootfs"] = {"type": "layers", "diff_ids": []}
    image = nydus_image([], mine)
    assert rules.config_config(image, source).problems == [
        'config.Env is ["A=2"], the source\'s is ["A=1"]'
    ]
    assert rules.history(image, source, 0).problems[0].startswith("expected 0 chunk-dict")
    assert not rules.config_platform(image, source).problems
    no_type = nydus_image([], dict(mine, rootfs={"diff_ids": ["sha256:" + "0" * 64]}))
    assert rules.diff_ids(no_type, None).problems == [
        "rootfs.type is None, not 'layers'",
        "1 diff_ids for 0 layers",
    ]


@pytest.mark.parametrize("padded", [False, True])
def test_bytes_after_the_bootstrap_tar_end_marker_are_named(padded: bool) -> None:
    """Go readers stop at the marker: anything after it changes nydusify's diff_id."""
    buf = io.BytesIO()
    tar = tarfile.open(fileobj=buf, mode="w|") if padded else open_tar_writer(buf)
    entry = tarfile.TarInfo("image/image.boot")
    entry.size = 3
    tar.addfile(entry, io.BytesIO(b"abc"))
    tar.close()
    raw = buf.getvalue()
    blob = Blob.from_bytes(gzip.compress(raw, mtime=0), mt.OCI_LAYER_GZIP)
    desc = dict(blob.descriptor().to_json(), annotations=BOOT)
    image = StaticImage(nydus_image([desc]).raw_manifest(), lambda d: blob.opener())
    boot = read_bootstrap_layer(image, 0)
    assert boot.data == b"abc"
    assert boot.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    tail = len(raw) - 4 * tarfile.BLOCKSIZE  # header, data, the two marker blocks
    assert tail == (tarfile.RECORDSIZE - 4 * tarfile.BLOCKSIZE if padded else 0)
    expected = (
        f"the bootstrap layer's tar has {tail} bytes after its end-of-archive marker: Go "
        "readers (nydusify check) stop there and compute another diff_id"
    )
    assert boot.problems == ([expected] if padded else [])


def test_manifest_without_media_type_is_named() -> None:
    image = nydus_image([layer(1, **BLOB)])
    body = json.loads(image.raw_manifest())
    del body["mediaType"]
    bare = StaticImage(dumps(body), image.open_blob)
    assert rules.media_type(bare).problems == ["the manifest has no top-level mediaType"]
    assert not rules.media_type(image).problems


# ------------------------------------------------------------------------------ whole checks


@pytest.mark.integration  # the CLI in a subprocess
@pytest.mark.parametrize("fs_version", ["6", "5"])
def test_conversion_to_a_layout_checks_clean(
    sample_layout: Path, tmp_path: Path, fs_version
) -> None:
    target = f"oci:{tmp_path / 'nydus'}:n"
    rconv(
        "convert",
        "--source",
        f"oci:{sample_layout}:1",
        "--target",
        target,
        "--fs-version",
        fs_version,
    )
    report = run_check(target, f"oci:{sample_layout}:1", None, CheckOptions(work_dir=tmp_path))
    assert report.ok, "\n".join(report.render())
    p = report.platforms[0]
    assert p.stats["paths"] == 27 and not p.stats["range_reads"]
    assert p.stats["chunk_bytes_read"] == p.stats["chunk_bytes"]
    statuses = {r.name: r.status for r in p.rules}
    assert statuses["bootstrap-valid"] == statuses["filesystem"] == statuses["chunk-data"] == "ok"
    assert statuses["blob-meta"] == "ok" and statuses["blobs-present"] == "skipped"
    if fs_version == "6":  # the command line once: exit status, summary line, JSON report
        out = tmp_path / "report.json"
        cli = rconv(
            "check", "--target", target, "--source", f"oci:{sample_layout}:1", "--output-json", out
        )
        assert cli.stdout.splitlines()[-1].startswith("equivalent: ")
        assert json.loads(out.read_text())["ok"] is True
