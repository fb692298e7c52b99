"""rafs.layerstate: records round-trip; records that do not describe a tree are refused."""

from __future__ import annotations

import stat
from collections.abc import Callable
from typing import Any

import pytest

from rafs import layerstate
from rafs.errors import InvalidImage
from rafs.model import BlobInfo, Chunk, LayerTree, Node, new_dir, new_root, walk
from tests.treeutil import tree_signature

Columns = dict[str, Any]  # the columns of ``layerstate._unpack``: arrays and bytes


def _tree() -> tuple[BlobInfo, list[Chunk], LayerTree, Chunk]:
    """root/d/f (one chunk of the layer's blob), root/l (a symlink with an xattr), root/h (a
    hard link to f that also holds a chunk of a lower blob), a lower hard link."""
    blob = BlobInfo(blob_id="a" * 64)
    lower = BlobInfo(blob_id="b" * 64)
    chunk = Chunk(blob, 0, bytes(32), 0, 10, 0, 4096, True, 5)
    below = Chunk(lower, 7, b"\x07" * 32, 70, 8, 0, 100, False, None)
    root = new_root()
    sub = root.children[b"d"] = new_dir(0o700, uid=3, implicit=True)
    f = sub.children[b"f"] = Node(stat.S_IFREG | 0o644, size=4196, chunks=(chunk, below))
    root.children[b"l"] = Node(stat.S_IFLNK | 0o777, target=b"d/f", xattrs={b"user.k": b"v"})
    root.children[b"h"] = f
    return blob, [chunk], LayerTree(root, [(b"/x", b"/lower/y")]), below


def _encoded() -> tuple[bytes, BlobInfo]:
    blob, chunks, tree, _ = _tree()
    return layerstate.encode(blob, chunks, layerstate.snapshot(tree, blob), deduped=2), blob


def _record(damage: Callable[[dict, Columns], None]) -> bytes:
    """The record of ``_tree``, its head and columns changed by ``damage``."""
    raw, _ = _encoded()
    head, columns = layerstate._unpack(raw)
    damage(head, columns)
    return layerstate._pack(head, columns)


def _lookup(blob_id: str, index: int) -> Chunk:
    _, _, _, below = _tree()
    assert (blob_id, index) == ("b" * 64, 7)
    return below


def _dirs(c: Columns) -> list[int]:
    return [i for i, n in enumerate(c["child_counts"]) if n >= 0]


def _node(c: Columns, name: bytes) -> int:
    """The number of the node listed under ``name``."""
    names = layerstate._split(c["child_names"], c["child_name_lengths"], "name")
    return c["child_ids"][names.index(name)]


def _list(c: Columns, parent: int, child: int, name: bytes = b"x") -> None:
    """Append ``child`` to ``parent``'s listing."""
    counts = c["child_counts"]
    at = sum(n for n in counts[: parent + 1] if n > 0)
    counts[parent] += 1
    c["child_ids"].insert(at, child)
    names = layerstate._split(c["child_names"], c["child_name_lengths"], "name")
    names.insert(at, name)
    c["child_names"] = b"".join(names)
    c["child_name_lengths"].insert(at, len(name))


def test_a_record_round_trips() -> None:
    blob, chunks, tree, below = _tree()
    before = tree_signature(tree.root)
    raw = layerstate.encode(blob, chunks, layerstate.snapshot(tree, blob), deduped=2)
    state = layerstate.decode(raw, lambda blob_id, index: {("b" * 64, 7): below}[blob_id, index])
    assert tree_signature(state.tree.root) == before
    assert list(state.tree.root.children) == [b"d", b"l", b"h"]
    got = dict(walk(state.tree.root))
    assert got[b"/h"] is got[b"/d/f"] and got[b"/h"].chunks == (state.chunks[0], below)
    assert state.chunks == [Chunk(state.blob, 0, bytes(32), 0, 10, 0, 4096, True, 5)]
    assert got[b"/d"].implicit and got[b"/l"].xattrs == {b"user.k": b"v"}
    assert state.tree.lower_links == [(b"/x", b"/lower/y")] and state.deduped == 2
    assert state.blob.blob_id == blob.blob_id and state.blob is not blob


def test_the_same_state_gives_the_same_bytes() -> None:
    assert _encoded()[0] == _encoded()[0]


def test_an_unfinished_lower_blob_cannot_be_encoded() -> None:
    blob, chunks, tree, below = _tree()
    snap = layerstate.snapshot(tree, blob)
    below.blob.blob_id = ""  # still being copied when it is read: refused, never misnamed
    with pytest.raises(ValueError, match="not finished"):
        layerstate.encode(blob, chunks, snap)


def _set(column: str, index: int, value: int) -> Callable[[dict, Columns], None]:
    return lambda h, c: c[column].__setitem__(index, value)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda h, c: _list(c, _node(c, b"d"), _node(c, b"d")),
                     id="a directory listing itself"),
        pytest.param(lambda h, c: _list(c, _node(c, b"d"), h["root"]),
                     id="the root listed below itself"),
        pytest.param(lambda h, c: _list(c, h["root"], _node(c, b"d")),
                     id="a directory listed twice"),
        pytest.param(lambda h, c: _list(c, _node(c, b"d"), -1), id="a negative child index"),
        pytest.param(lambda h, c: _list(c, _node(c, b"d"), len(c["modes"])),
                     id="a child index past the end"),
        pytest.param(lambda h, c: h.update(root=-1), id="a negative root"),
        pytest.param(lambda h, c: h.update(root=_node(c, b"l")), id="a file as the root"),
        pytest.param(lambda h, c: h["foreign"][0].__setitem__(1, -1),
                     id="a negative chunk index"),
        pytest.param(lambda h, c: c["refs"].__setitem__(0, 5), id="a chunk past the end"),
        pytest.param(lambda h, c: c["refs"].__setitem__(0, -9), id="an unknown foreign chunk"),
        pytest.param(lambda h, c: c["ref_counts"].__setitem__(_node(c, b"f"), 3),
                     id="chunk lists that do not add up"),
        pytest.param(lambda h, c: c["child_counts"].__setitem__(h["root"], -2),
                     id="a negative listing"),
        pytest.param(lambda h, c: c["child_name_lengths"].__setitem__(0, 9),
                     id="names that do not add up"),
        pytest.param(lambda h, c: h["xattrs"][0].__setitem__(0, -1),
                     id="xattrs of a node from the end"),
        pytest.param(lambda h, c: c["target_nodes"].__setitem__(0, 99),
                     id="a target of no node"),
        pytest.param(lambda h, c: c.update(implicit=c["implicit"] + b"\0"),
                     id="a node column longer than the others"),
        pytest.param(lambda h, c: c.update(compressed=b"\2"), id="a compressed flag of 2"),
        pytest.param(lambda h, c: c.update(digests=c["digests"] + bytes(32)),
                     id="chunk columns that differ in length"),
        pytest.param(lambda h, c: h.update(format="rconv-layer-state/1"), id="another format"),
        pytest.param(lambda h, c: h.pop("deduped"), id="a missing field"),
    ],
)  # fmt: skip
def test_a_record_that_is_not_a_tree_is_refused(damage: Callable[[dict, Columns], None]) -> None:
    with pytest.raises(InvalidImage):
        layerstate.decode(_record(damage), _lookup)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda raw: raw.replace(b"rconv-layer-state/2\n", b"rconv-layer-state/3\n"),
                     id="another magic"),
        pytest.param(lambda raw: raw[:-3], id="a cut column"),
        pytest.param(lambda raw: raw + b"\0", id="bytes after the last column"),
        pytest.param(lambda raw: raw.replace(b'"modes","i"', b'"modes","d"'),
                     id="a float column"),
        pytest.param(lambda raw: raw.replace(b'"child_names","B"', b'"child_names","i"'),
                     id="a bytes column typed as numbers"),
        pytest.param(lambda raw: raw[:20] + b"\xff\xff\xff\x7f" + raw[24:], id="a huge head"),
    ],
)  # fmt: skip
def test_a_malformed_container_is_refused(mangle: Callable[[bytes], bytes]) -> None:
    from isal import igzip

    raw = igzip.decompress(_encoded()[0])
    with pytest.raises(InvalidImage):
        layerstate.decode(igzip.compress(mangle(raw), mtime=0), _lookup)


def test_gzip_damage_and_bombs_are_refused(monkeypatch) -> None:
    import gzip

    raw, _ = _encoded()
    for bad in (raw[:-9], raw + b"x", b"not gzip", gzip.compress(bytes(1 << 20))):
        with pytest.raises(InvalidImage):
            layerstate.decode(bad, _lookup)
    monkeypatch.setattr(layerstate, "RAW_LIMIT", 100)
    with pytest.raises(InvalidImage, match="too large"):
        layerstate.decode(raw, _lookup)
