"""rafs.flattree: a layer tree crosses a process boundary as flat data and comes back equal."""

from __future__ import annotations

import pickle
import stat

from rafs.flattree import flatten, unflatten
from rafs.model import BlobInfo, Chunk, LayerTree, Node, new_dir, new_root, walk
from tests.treeutil import tree_signature


def _chunk(blob: BlobInfo, index: int) -> Chunk:
    return Chunk(blob, index, bytes([index]) * 32, 100 * index, 50, 4096 * index, 60, True, 7)


def test_round_trip_keeps_links_order_markers_and_chunks() -> None:
    own, dictionary = BlobInfo(blob_id="a" * 64), BlobInfo(blob_id="d" * 64)
    stored = [_chunk(own, i) for i in range(3)]
    foreign = _chunk(dictionary, 9)
    root = new_root()
    sub = root.children[b"zdir"] = new_dir(0o700, uid=5, implicit=True)
    linked = Node(stat.S_IFREG | 0o644, size=120, chunks=(stored[1], foreign))
    root.children[b"b"] = linked
    sub.children[b"hard"] = linked  # a hard link: one node, two names
    sub.children[b".wh.gone"] = Node(stat.S_IFREG | 0o600)
    root.children[b"a"] = Node(stat.S_IFLNK | 0o777, target=b"/b", xattrs={b"user.x": b"1"})
    root.children[b"dev"] = Node(stat.S_IFCHR | 0o600, rdev=0x0103)
    tree = LayerTree(root, [(b"/l", b"/lower/t")])
    before = tree_signature(root)

    flat = pickle.loads(pickle.dumps(flatten(tree, own, stored)))
    looked_up = []

    def lookup(blob_id: str, index: int) -> Chunk:
        looked_up.append((blob_id, index))
        return foreign

    back, chunks = unflatten(flat, own, lookup)
    assert tree_signature(back.root) == before
    assert list(back.root.children) == [b"zdir", b"b", b"a", b"dev"]  # insertion order kept
    got = dict(walk(back.root))
    assert got[b"/b"] is got[b"/zdir/hard"]
    assert got[b"/b"].chunks == (chunks[1], foreign) and chunks[1].blob is own
    assert chunks == stored and looked_up == [("d" * 64, 9)]
    assert got[b"/zdir"].implicit and back.lower_links == [(b"/l", b"/lower/t")]
