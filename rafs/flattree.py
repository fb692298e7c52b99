"""A layer's diff tree and the chunks of its blob as flat data, and back.

Stage 1 of a conversion runs in worker processes (``convert.layerproc``); what it built
crosses back to the main process in this form. Tuples of ints and bytes are what the C pickler
handles natively: pickling the ``Node`` and ``Chunk`` objects themselves goes through
``copyreg`` once per object, several times slower than the whole rest of the transfer.

Nodes are numbered by identity, so a hard-link group stays one node; children keep their
order. A file's chunks are numbers: ``i >= 0`` is chunk ``i`` of the layer's own blob, ``~k``
(negative) is ``foreign[k]``, a chunk of another blob (a chunk dictionary's) named by blob id
and chunk index, which the receiving side resolves against its own objects. Provisional
chunks of an overlapped chunker are fine: only their index is read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rafs.model import NO_XATTRS, BlobInfo, Chunk, LayerTree, Node

# (digest, compressed offset, compressed size, uncompressed offset, uncompressed size,
#  compressed, crc32) of each stored chunk, index order
FlatChunk = tuple[bytes, int, int, int, int, bool, int | None]


@dataclass
class FlatLayer:
    chunks: list[FlatChunk]
    # per node object: mode, uid, gid, mtime, mtime_nsec, xattrs (dict or None), size,
    # chunk numbers, target, rdev, children ((names, node numbers) or None), implicit
    nodes: list[tuple[Any, ...]]
    foreign: list[tuple[str, int]]  # (blob id, chunk index)
    root: int
    lower_links: list[tuple[bytes, bytes]]


def flatten(tree: LayerTree, own: BlobInfo, stored: Sequence[Chunk]) -> FlatLayer:
    """``tree`` (whose own chunks are in ``own``, stored as ``stored``) as flat data."""
    chunks: list[FlatChunk] = [
        (c.digest, c.compressed_offset, c.compressed_size, c.uncompressed_offset,
         c.uncompressed_size, c.compressed, c.crc32)
        for c in stored
    ]  # fmt: skip
    foreign: list[tuple[str, int]] = []
    foreign_numbers: dict[tuple[str, int], int] = {}
    numbers: dict[int, int] = {}
    flat: list[list[Any]] = []

    def number(node: Node) -> tuple[int, bool]:
        known = numbers.get(id(node))
        if known is not None:
            return known, False
        refs: tuple[int, ...] = ()
        if node.chunks:
            refs = tuple(
                c.index if c.blob is own else ~_foreign(c, foreign, foreign_numbers)
                for c in node.chunks
            )
        numbers[id(node)] = n = len(flat)
        flat.append(
            [node.mode, node.uid, node.gid, node.mtime, node.mtime_nsec,
             dict(node.xattrs) if node.xattrs else None, node.size, refs, node.target,
             node.rdev, None, node.implicit]
        )  # fmt: skip
        return n, True

    root, _ = number(tree.root)
    stack = [tree.root]
    while stack:  # iterative: hostile layers nest deeper than the recursion limit
        node = stack.pop()
        assert node.children is not None  # only directories are stacked
        ids = []
        for child in node.children.values():
            n, new = number(child)
            ids.append(n)
            if new and child.children is not None:
                stack.append(child)
        flat[numbers[id(node)]][10] = (tuple(node.children), tuple(ids))
    return FlatLayer(chunks, [tuple(entry) for entry in flat], foreign, root, tree.lower_links)


def _foreign(
    chunk: Chunk, foreign: list[tuple[str, int]], known: dict[tuple[str, int], int]
) -> int:
    key = (chunk.blob.blob_id, chunk.index)
    k = known.get(key)
    if k is None:
        k = known[key] = len(foreign)
        foreign.append(key)
    return k


def unflatten(
    flat: FlatLayer,
    own: BlobInfo,
    lookup: Callable[[str, int], Chunk],
    ints: dict[int, int] | None = None,
) -> tuple[LayerTree, list[Chunk]]:
    """The tree and the stored chunks of ``own`` that ``flatten`` gave; ``lookup`` answers
    the foreign chunks (KeyError for one it does not know).

    Unpickling makes a new int object per number; ``ints``, shared by the layers of a
    conversion, gives modes, mtimes and sizes one object per value instead: a few thousand
    values for a quarter of a million entries, 32 bytes saved five times per file.
    """
    share = (ints if ints is not None else {}).setdefault
    stored = [
        Chunk(own, i, d, co, share(cs, cs), uo, share(us, us), compressed, crc)
        for i, (d, co, cs, uo, us, compressed, crc) in enumerate(flat.chunks)
    ]
    foreign = [lookup(blob_id, index) for blob_id, index in flat.foreign]
    built = [
        Node(share(mode, mode), uid, gid, share(mtime, mtime), nsec, xattrs or NO_XATTRS,
             share(size, size),
             tuple(stored[r] if r >= 0 else foreign[~r] for r in refs) if refs else (),
             target, rdev, None, implicit)
        for mode, uid, gid, mtime, nsec, xattrs, size, refs, target, rdev, _, implicit
        in flat.nodes
    ]  # fmt: skip
    for node, entry in zip(built, flat.nodes, strict=True):
        children = entry[10]
        if children is not None:
            names, ids = children
            node.children = dict(zip(names, [built[i] for i in ids], strict=True))
    return LayerTree(built[flat.root], list(flat.lower_links)), stored
