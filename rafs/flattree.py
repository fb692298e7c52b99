"""A layer's diff tree and the chunks of its blob as flat data, and back.

Stage 1 of a conversion runs in worker processes (``convert.layerproc``); what it built
crosses back to the main process in this form. The numbers travel as columns (``array``),
which pickle copies whole: pickling the ``Node`` and ``Chunk`` objects themselves goes through
``copyreg`` once per object, and a tuple per node and per chunk made the receiving process
allocate (and free again) several small objects per entry, which left its memory
fragmented. Names, digests, targets and xattrs travel as the bytes objects the tree keeps.

Nodes are numbered by identity, so a hard-link group stays one node; children keep their
order. A file's chunks are numbers: ``i >= 0`` is chunk ``i`` of the layer's own blob, ``~k``
(negative) is ``foreign[k]``, a chunk of another blob (a chunk dictionary's) named by blob id
and chunk index, which the receiving side resolves against its own objects. Provisional
chunks of an overlapped chunker are fine: only their index is read.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rafs.model import NO_XATTRS, BlobInfo, Chunk, LayerTree, Node

_NO_CRC = -1
_BOOLS = (False, True)


def int_column(values: list[int]) -> Sequence[int]:
    """``values`` as a signed 32-bit array where they fit (most columns: half the bytes to
    pickle, send and hold while the receiver builds the tree, and up to three layers arrive
    at once), else 64-bit, else the list (a hostile tar may carry any number; the writers
    refuse it later, with a message)."""
    for code in ("i", "q"):
        try:
            return array(code, values)
        except OverflowError:
            pass
    return values


@dataclass
class FlatLayer:
    # stored chunks, index order: digests (32 bytes each, concatenated) and one column per
    # field; compressed is 0/1, crc32 is -1 when not recorded
    digests: bytes
    compressed_offsets: Sequence[int]
    compressed_sizes: Sequence[int]
    uncompressed_offsets: Sequence[int]
    uncompressed_sizes: Sequence[int]
    compressed: bytes
    crc32s: Sequence[int]
    # per node object, numbering order
    modes: Sequence[int]
    uids: Sequence[int]
    gids: Sequence[int]
    mtimes: Sequence[int]
    mtime_nsecs: Sequence[int]
    sizes: Sequence[int]
    rdevs: Sequence[int]
    implicit: bytes  # 0/1
    ref_counts: Sequence[int]  # chunks of the node; its numbers follow in ``refs``
    refs: Sequence[int]
    child_counts: Sequence[int]  # -1: not a directory; the children follow in ``child_*``
    child_names: list[bytes]
    child_ids: Sequence[int]
    xattrs: list[tuple[int, dict[bytes, bytes]]]  # (node, xattrs) of the nodes having any
    targets: list[tuple[int, bytes]]  # (node, target) of the nodes having one
    foreign: list[tuple[str, int]]  # (blob id, chunk index)
    root: int
    lower_links: list[tuple[bytes, bytes]]


def _blob_id(blob: BlobInfo) -> str:
    return blob.blob_id


def flatten(
    tree: LayerTree,
    own: BlobInfo,
    stored: Sequence[Chunk],
    blob_name: Callable[[BlobInfo], str] = _blob_id,
) -> FlatLayer:
    """``tree`` (whose own chunks are in ``own``, stored as ``stored``) as flat data; a chunk
    of another blob is named ``(blob_name(its blob), its index)`` in ``foreign``."""
    foreign: list[tuple[str, int]] = []
    foreign_numbers: dict[tuple[BlobInfo, int], int] = {}
    numbers: dict[int, int] = {}
    order: list[Node] = []

    root = 0
    numbers[id(tree.root)] = root
    order.append(tree.root)
    children_of: dict[int, list[int]] = {}  # node number -> child numbers
    stack = [tree.root]
    while stack:  # iterative: hostile layers nest deeper than the recursion limit
        node = stack.pop()
        assert node.children is not None  # only directories are stacked
        ids = []
        for child in node.children.values():
            key = id(child)
            n = numbers.get(key)
            if n is None:  # first met (a hard link's later names are not)
                numbers[key] = n = len(order)
                order.append(child)
                if child.children is not None:
                    stack.append(child)
            ids.append(n)
        children_of[numbers[id(node)]] = ids

    ref_counts = [len(node.chunks) for node in order]
    refs = [
        c.index if c.blob is own else ~_foreign(c, foreign, foreign_numbers, blob_name)
        for node in order
        for c in node.chunks
    ]
    child_counts = [-1 if node.children is None else len(node.children) for node in order]
    child_names: list[bytes] = []
    child_ids: list[int] = []
    for n, node in enumerate(order):
        if node.children is not None:
            child_names.extend(node.children)
            child_ids.extend(children_of[n])
    xattrs = [(n, dict(node.xattrs)) for n, node in enumerate(order) if node.xattrs]
    targets = [(n, node.target) for n, node in enumerate(order) if node.target]
    return FlatLayer(
        **chunk_columns(stored),
        modes=int_column([node.mode for node in order]),
        uids=int_column([node.uid for node in order]),
        gids=int_column([node.gid for node in order]),
        mtimes=int_column([node.mtime for node in order]),
        mtime_nsecs=int_column([node.mtime_nsec for node in order]),
        sizes=int_column([node.size for node in order]),
        rdevs=int_column([node.rdev for node in order]),
        implicit=bytes([node.implicit for node in order]),
        ref_counts=int_column(ref_counts),
        refs=int_column(refs),
        child_counts=int_column(child_counts),
        child_names=child_names,
        child_ids=int_column(child_ids),
        xattrs=xattrs,
        targets=targets,
        foreign=foreign,
        root=root,
        lower_links=list(tree.lower_links),
    )


def chunk_columns(stored: Sequence[Chunk]) -> dict[str, Any]:
    """The chunk fields of a ``FlatLayer`` for ``stored``, by field name."""
    return {
        "digests": b"".join([c.digest for c in stored]),
        "compressed_offsets": int_column([c.compressed_offset for c in stored]),
        "compressed_sizes": int_column([c.compressed_size for c in stored]),
        "uncompressed_offsets": int_column([c.uncompressed_offset for c in stored]),
        "uncompressed_sizes": int_column([c.uncompressed_size for c in stored]),
        "compressed": bytes([c.compressed for c in stored]),
        "crc32s": int_column([_NO_CRC if c.crc32 is None else c.crc32 for c in stored]),
    }


def _foreign(
    chunk: Chunk,
    foreign: list[tuple[str, int]],
    known: dict[tuple[BlobInfo, int], int],
    blob_name: Callable[[BlobInfo], str],
) -> int:
    key = (chunk.blob, chunk.index)  # blobs compare by identity
    k = known.get(key)
    if k is None:
        k = known[key] = len(foreign)
        foreign.append((blob_name(chunk.blob), chunk.index))
    return k


def unflatten(
    flat: FlatLayer,
    own: BlobInfo,
    lookup: Callable[[str, int], Chunk],
    ints: dict[int, int] | None = None,
) -> tuple[LayerTree, list[Chunk]]:
    """The tree and the stored chunks of ``own`` that ``flatten`` gave; ``lookup`` answers
    the foreign chunks (KeyError for one it does not know).

    Reading a column makes a new int object per number; ``ints``, shared by the layers of a
    conversion, gives modes, mtimes and sizes one object per value instead: a few thousand
    values for a quarter of a million entries, 32 bytes saved five times per file.
    """
    share = (ints if ints is not None else {}).setdefault
    digests, bools = flat.digests, _BOOLS
    stored = [
        Chunk(own, i, digests[32 * i : 32 * i + 32], co, share(cs, cs), uo, share(us, us),
              bools[comp], None if crc == _NO_CRC else crc)
        for i, co, cs, uo, us, comp, crc in zip(
            range(len(flat.compressed)), flat.compressed_offsets, flat.compressed_sizes,
            flat.uncompressed_offsets, flat.uncompressed_sizes, flat.compressed, flat.crc32s,
            strict=True,
        )
    ]  # fmt: skip
    foreign = [lookup(blob_id, index) for blob_id, index in flat.foreign]
    built = [
        Node(share(mode, mode), uid, gid, share(mtime, mtime), nsec, NO_XATTRS,
             share(size, size), (), b"", rdev, None, bools[implicit])
        for mode, uid, gid, mtime, nsec, size, rdev, implicit in zip(
            flat.modes, flat.uids, flat.gids, flat.mtimes, flat.mtime_nsecs, flat.sizes,
            flat.rdevs, flat.implicit, strict=True,
        )
    ]  # fmt: skip
    refs, at = flat.refs, 0
    for node, count in zip(built, flat.ref_counts, strict=True):
        if count == 1:  # most files: no generator for one chunk
            r = refs[at]
            node.chunks = (stored[r] if r >= 0 else foreign[~r],)
            at += 1
        elif count:
            node.chunks = tuple(stored[r] if r >= 0 else foreign[~r] for r in refs[at : at + count])
            at += count
    names, ids, at = flat.child_names, flat.child_ids, 0
    for node, count in zip(built, flat.child_counts, strict=True):
        if count >= 0:
            node.children = dict(
                zip(names[at : at + count], [built[i] for i in ids[at : at + count]], strict=True)
            )
            at += count
    for n, xattrs in flat.xattrs:
        built[n].xattrs = xattrs
    for n, target in flat.targets:
        built[n].target = target
    return LayerTree(built[flat.root], list(flat.lower_links)), stored
