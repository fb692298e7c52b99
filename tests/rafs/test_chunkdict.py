"""Chunk dictionaries: lookup rules, import from a tree, and dedup in the blob writer."""

from __future__ import annotations

import io
import stat

import pytest

from rafs.chunkdict import (
    IncompatibleChunkDict,
    MemoryChunkDict,
    NoChunkDict,
    chunk_dict_from_bootstrap,
    chunk_dict_from_tree,
)
from rafs.errors import InvalidInput
from rafs.model import ZERO_DIGEST, BlobInfo, Bootstrap, Chunk, Node, new_dir, new_root
from tests.rafs.chunking import chunk_files, serial_chunker


def chunk(blob: BlobInfo, index: int, digest: bytes, size: int = 100) -> Chunk:
    return Chunk(blob, index, digest, index * 50, 50, index * 4096, size, True)


def reg(*chunks: Chunk) -> Node:
    return Node(mode=stat.S_IFREG | 0o644, size=sum(c.uncompressed_size for c in chunks),
                chunks=list(chunks))  # fmt: skip


D1, D2, D3 = (bytes([n]) * 32 for n in (1, 2, 3))


def test_no_chunk_dict_finds_nothing():
    d = NoChunkDict()
    d.add(chunk(BlobInfo(), 0, D1))
    assert d.get(D1, 100) is None and len(d) == 0


def test_memory_dict_keys_on_digest_and_size_first_wins():
    blob = BlobInfo()
    first, second, other_size = chunk(blob, 0, D1), chunk(blob, 1, D1), chunk(blob, 2, D1, 7)
    d = MemoryChunkDict()
    for c in (first, second, other_size):
        d.add(c)
    assert d.get(D1, 100) is first
    assert d.get(D1, 7) is other_size
    assert d.get(D1, 8) is None and d.get(D2, 100) is None
    assert len(d) == 2 and (D1, 7) in d


def test_from_tree_walk_order_first_wins():
    a, b = BlobInfo(blob_id="a" * 64), BlobInfo(blob_id="b" * 64)
    root = new_root()
    # Walk order is by name: /a/x before /b, so /a/x's chunk wins for D1.
    root.children[b"b"] = reg(chunk(b, 0, D1), chunk(b, 1, D2))
    root.children[b"a"] = new_dir()
    root.children[b"a"].children[b"x"] = reg(chunk(a, 5, D1))
    d = chunk_dict_from_tree(root)
    assert d.get(D1, 100).blob is a
    assert d.get(D2, 100).blob is b
    assert len(d) == 2


def test_from_tree_refuses_other_digester_and_chunk_size():
    root = new_root()
    root.children[b"f"] = reg(chunk(BlobInfo(digester="sha256"), 0, D1))
    with pytest.raises(IncompatibleChunkDict, match="sha256"):
        chunk_dict_from_tree(root, digester="blake3")
    assert len(chunk_dict_from_tree(root, digester="sha256")) == 1
    root.children[b"f"] = reg(chunk(BlobInfo(chunk_size=0x10000), 0, D1))
    with pytest.raises(IncompatibleChunkDict, match="chunk size"):
        chunk_dict_from_tree(root, chunk_size=0x100000)
    assert issubclass(IncompatibleChunkDict, InvalidInput)


def test_from_tree_skips_unshareable_chunks():
    root = new_root()
    root.children[b"batch"] = reg(chunk(BlobInfo(features=0x80), 0, D1))
    root.children[b"zran"] = reg(chunk(BlobInfo(features=0x8 | 0x4), 0, D2))
    root.children[b"tarfs"] = reg(chunk(BlobInfo(), 0, ZERO_DIGEST))
    root.children[b"ok"] = reg(chunk(BlobInfo(features=0x7000_0021), 0, D3))
    d = chunk_dict_from_tree(root)
    assert len(d) == 1 and d.get(D3, 100) is not None


def test_from_bootstrap_checks_superblock():
    root = new_root()
    root.children[b"f"] = reg(chunk(BlobInfo(), 0, D1))
    boot = Bootstrap(root=root, blobs=[], version=6)
    ok = dict(version=6, chunk_size=0x100000, digester="blake3", explicit_uid_gid=True)
    assert len(chunk_dict_from_bootstrap(boot, **ok)) == 1
    for field, value in [
        ("version", 5),
        ("chunk_size", 0x400000),
        ("digester", "sha256"),
        ("explicit_uid_gid", False),
    ]:
        with pytest.raises(IncompatibleChunkDict):
            chunk_dict_from_bootstrap(boot, **{**ok, field: value})


CONTENT = [bytes([n]) * 5000 + bytes(range(256)) * 40 for n in range(4)]


def build(chunk_dict=None, files=CONTENT, **kw):
    out = io.BytesIO()
    w, lists = chunk_files(out, files, chunk_dict=chunk_dict, chunk_size=0x1000, **kw)
    return w, lists, w.finish(), out.getvalue()


def test_writer_with_dict_of_a_previous_blob_stores_nothing():
    first, first_lists, first_info, _ = build()
    assert first_info.chunk_count > 0
    d = MemoryChunkDict()
    for c in first.new_chunks:
        d.add(c)
    second, lists, info, data = build(d)
    assert info.chunk_count == 0 and second.new_chunks == []
    pairs = [
        (a, b) for x, y in zip(lists, first_lists, strict=True) for a, b in zip(x, y, strict=True)
    ]
    assert all(a is b for a, b in pairs)
    assert all(c.blob is first_info for chunks in lists for c in chunks)
    # The second blob is just its (empty) TOC.
    assert len(data) == 512 and info.uncompressed_size == 0
    # The writer never adds to the dictionary it was given.
    assert len(d) == len(first.new_chunks)


def test_writer_stores_only_chunks_missing_from_dict():
    first, _, _, _ = build(files=CONTENT[:2])
    d = chunk_dict_from_tree(tree_of(first.new_chunks))
    _, lists, info, _ = build(d)
    fresh = [c for chunks in lists for c in chunks if c.blob is info]
    reused = [c for chunks in lists for c in chunks if c.blob is not info]
    assert fresh and reused
    assert [c.index for c in dict.fromkeys(fresh)] == list(range(info.chunk_count))
    assert fresh[0].compressed_offset == 0 and fresh[0].uncompressed_offset == 0


def test_blob_own_chunks_win_over_dict():
    # A dictionary that learns a chunk after this blob stored it does not take it over.
    d = MemoryChunkDict()
    w = serial_chunker(io.BytesIO(), chunk_dict=d, chunk_size=0x1000)
    (mine,) = w.add_file(io.BytesIO(b"x" * 100), 100)
    elsewhere = chunk(BlobInfo(), 0, mine.digest)
    d.add(elsewhere)
    assert d.get(mine.digest, 100) is elsewhere
    assert w.add_file(io.BytesIO(b"x" * 100), 100) == [mine]
    assert w.add_file(io.BytesIO(b"x" * 100), 100)[0] is mine


def tree_of(chunks) -> Node:
    root = new_root()
    for i, c in enumerate(chunks):
        root.children[b"f%04d" % i] = reg(c)
    return root
