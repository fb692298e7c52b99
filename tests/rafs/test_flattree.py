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


def test_numbers_are_shared_across_the_layers_of_one_conversion() -> None:
    own = BlobInfo(blob_id="a" * 64)
    stored = [Chunk(own, 0, b"\x01" * 32, 0, 5000, 0, 70000, True, None)]

    def layer() -> LayerTree:
        root = new_root()
        for name in (b"x", b"y"):
            root.children[name] = Node(
                stat.S_IFREG | 0o644, mtime=1_700_000_000, size=70000, chunks=(stored[0],)
            )
        return LayerTree(root)

    ints: dict[int, int] = {}
    backs = []
    for _ in range(2):
        flat = pickle.loads(pickle.dumps(flatten(layer(), own, stored)))
        backs.append(unflatten(flat, own, lambda *_: stored[0], ints)[0])
    files = [back.root.children[name] for back in backs for name in (b"x", b"y")]
    for field in ("mode", "mtime", "size"):
        assert len({id(getattr(node, field)) for node in files}) == 1, field
    chunks = [node.chunks[0] for node in files]
    assert chunks[0].uncompressed_size is files[0].size
    assert len({id(c.compressed_size) for c in chunks}) == 1
    assert tree_signature(backs[0].root) == tree_signature(layer().root)


def test_a_number_too_large_for_a_column_still_crosses() -> None:
    """A hostile tar may carry any uid; it crosses unchanged, for the writers to refuse."""
    own = BlobInfo(blob_id="a" * 64)
    root = new_root()
    root.children[b"f"] = Node(stat.S_IFREG | 0o644, uid=1 << 70)
    flat = pickle.loads(pickle.dumps(flatten(LayerTree(root), own, [])))
    back, _ = unflatten(flat, own, lambda *_: None)
    assert back.root.children[b"f"].uid == 1 << 70
    assert tree_signature(back.root) == tree_signature(root)


def test_columns_are_as_narrow_as_their_numbers() -> None:
    """32-bit columns where every number fits, 64-bit where one does not (a file past
    2 GiB, an mtime past 2038, a negative one): the numbers cross unchanged either way."""
    own = BlobInfo(blob_id="a" * 64)
    root = new_root()
    root.children[b"small"] = Node(stat.S_IFREG | 0o644, uid=1000, mtime=1_700_000_000)
    root.children[b"big"] = Node(stat.S_IFREG | 0o644, size=5 << 30, mtime=1 << 33)
    root.children[b"neg"] = Node(stat.S_IFREG | 0o644, gid=-(1 << 40))
    flat = flatten(LayerTree(root), own, [])
    assert (flat.uids.typecode, flat.sizes.typecode, flat.mtimes.typecode) == ("i", "q", "q")  # type: ignore[attr-defined]
    assert flat.gids.typecode == "q"  # type: ignore[attr-defined]
    back, _ = unflatten(pickle.loads(pickle.dumps(flat)), own, lambda *_: None)
    assert tree_signature(back.root) == tree_signature(root)
    assert back.root.children[b"neg"].gid == -(1 << 40)
