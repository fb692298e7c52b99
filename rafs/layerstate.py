"""What one converted layer leaves to the layers above it, as bytes: a build cache record.

Spec: ../shared/spec/image.md §13.3 (rconv's cache rule), §15.7 (layered build). After
stage 2 a layer is its final blob (``BlobInfo``; a layer that stores nothing still has one,
holding only its TOC), the chunks stored in that blob in index order, and its diff tree
(``LayerTree``: markers, implicit directories and lower hard links still unapplied) whose
chunks point into that blob, into blobs of the layers below, or into dictionary blobs.

``snapshot`` takes the tree as flat columns (``rafs.flattree``) before it is applied
(applying consumes it) and while the blobs may still be completing: a chunk of another blob
keeps its blob object, whose id ``encode`` reads once every blob is complete. ``encode``
writes the record: a small JSON head (the blob, the column list, the chunks of other blobs
by blob id and index, lower links, xattrs) followed by the columns as little-endian arrays,
gzip'ed. The same state gives the same bytes (with one ISA-L version), so a record is
digest-addressed. ``decode`` checks that the columns describe a tree (lengths, indexes in
range, no directory listed twice) and rebuilds it with ``flattree.unflatten``; chunks of other
blobs are resolved through ``lookup(blob id, chunk index)``, which the caller answers from
the blobs it already holds. Applying the decoded tree then gives exactly the tree the cold
conversion gave, node identity (hard links) and children order included.

Format 2 replaced format 1's JSON list per node: parsing it took most of a warm conversion's
decoding (a 24k-entry record: 0.19 s to decode, 0.09 s of it in ``json.loads``).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import sys
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from isal import igzip, isal_zlib

from rafs.errors import InvalidImage
from rafs.flattree import FlatLayer, chunk_columns, flatten, int_column, unflatten
from rafs.model import BlobInfo, Chunk, LayerTree

FORMAT = "rconv-layer-state/2"
MAGIC = b"rconv-layer-state/2\n"
RAW_LIMIT = 1 << 30  # a quarter-million-entry layer's record is ~40 MB unpacked
_HEAD = struct.Struct("<I")
_GZIP_WBITS = 16 + 15
_BIG_ENDIAN = sys.byteorder == "big"

# The columns, in record order: (name, kind). "int" columns are FlatLayer's number columns
# (typecode "i" or "q", as narrow as the numbers allow, named in the head); "bytes" columns
# are raw bytes (digests: 32 per chunk; compressed, implicit: one 0/1 byte each); "names"
# and "targets" are byte strings, stored as a length column and their concatenation.
_COLUMNS = (
    ("digests", "bytes"),
    ("compressed_offsets", "int"),
    ("compressed_sizes", "int"),
    ("uncompressed_offsets", "int"),
    ("uncompressed_sizes", "int"),
    ("compressed", "bytes"),
    ("crc32s", "int"),
    ("modes", "int"),
    ("uids", "int"),
    ("gids", "int"),
    ("mtimes", "int"),
    ("mtime_nsecs", "int"),
    ("sizes", "int"),
    ("rdevs", "int"),
    ("implicit", "bytes"),
    ("ref_counts", "int"),
    ("refs", "int"),
    ("child_counts", "int"),
    ("child_ids", "int"),
    ("child_name_lengths", "int"),
    ("child_names", "bytes"),
    ("target_nodes", "int"),
    ("target_lengths", "int"),
    ("targets", "bytes"),
)
_ITEM_SIZE = {"i": 4, "q": 8, "B": 1}
# What a malformed record raises on its way through (binascii and json raise ValueErrors).
# isal's stub declares ``error`` as an instance; it is the exception class.
_CORRUPT: tuple[type[Exception], ...] = (  # type: ignore[assignment]
    OSError, EOFError, ValueError, TypeError, KeyError, IndexError, struct.error,
    isal_zlib.error,
)  # fmt: skip


@dataclass
class LayerState:
    blob: BlobInfo
    chunks: list[Chunk]  # stored in ``blob``, index order
    tree: LayerTree
    deduped: int = 0  # chunks the layer had that layers below already stored


@dataclass(frozen=True)
class TreeSnapshot:
    """A layer tree as flat columns, taken before the tree is applied (which consumes it).
    ``flat.foreign`` names blobs by their position in ``blobs``: ids are only final once
    every blob is complete, and ``encode`` reads them then."""

    flat: FlatLayer
    blobs: list[BlobInfo]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return binascii.a2b_base64(text, strict_mode=True)


def snapshot(tree: LayerTree, own: BlobInfo) -> TreeSnapshot:
    blobs: list[BlobInfo] = []
    numbers: dict[BlobInfo, str] = {}

    def name(blob: BlobInfo) -> str:
        n = numbers.get(blob)
        if n is None:
            n = numbers[blob] = str(len(blobs))
            blobs.append(blob)
        return n

    return TreeSnapshot(flatten(tree, own, (), name), blobs)


def encode(blob: BlobInfo, chunks: list[Chunk], tree: TreeSnapshot, deduped: int = 0) -> bytes:
    """The record of a finished layer: ``blob`` and its ``chunks`` complete, ``tree`` taken
    by ``snapshot`` before the tree was applied."""
    info = {f.name: getattr(blob, f.name) for f in fields(BlobInfo)}
    info["toc_digest"] = blob.toc_digest.hex()
    info["meta_digest"] = blob.meta_digest.hex()
    flat = tree.flat
    names = flat.child_names
    values: dict[str, Sequence[int] | bytes] = {
        **chunk_columns(chunks),
        "modes": flat.modes,
        "uids": flat.uids,
        "gids": flat.gids,
        "mtimes": flat.mtimes,
        "mtime_nsecs": flat.mtime_nsecs,
        "sizes": flat.sizes,
        "rdevs": flat.rdevs,
        "implicit": flat.implicit,
        "ref_counts": flat.ref_counts,
        "refs": flat.refs,
        "child_counts": flat.child_counts,
        "child_ids": flat.child_ids,
        "child_name_lengths": [len(n) for n in names],
        "child_names": b"".join(names),
        "target_nodes": [n for n, _ in flat.targets],
        "target_lengths": [len(t) for _, t in flat.targets],
        "targets": b"".join(t for _, t in flat.targets),
    }
    head = {
        "format": FORMAT,
        "blob": info,
        "deduped": deduped,
        "root": flat.root,
        "foreign": [[_blob_id(tree.blobs[int(b)]), i] for b, i in flat.foreign],
        "lower_links": [[_b64(a), _b64(b)] for a, b in flat.lower_links],
        "xattrs": [[n, [[_b64(k), _b64(v)] for k, v in x.items()]] for n, x in flat.xattrs],
    }
    return _pack(head, values)


def _blob_id(blob: BlobInfo) -> str:
    if not blob.blob_id:
        raise ValueError(f"{blob!r} is not finished: its id is not known yet")
    return blob.blob_id


def _pack(head: dict[str, Any], values: dict[str, Sequence[int] | bytes]) -> bytes:
    """MAGIC, the head's length and JSON (with the column list), the columns; gzip'ed."""
    columns, parts = [], []
    for name, kind in _COLUMNS:
        value = values[name]
        if kind == "bytes":
            data, code, count = bytes(value), "B", len(value)
        else:
            col = value if isinstance(value, array) else int_column(list(value))
            if not isinstance(col, array):
                raise ValueError(f"a number of column {name} does not fit in 64 bits")
            if _BIG_ENDIAN:
                col = array(col.typecode, col)
                col.byteswap()
            data, code, count = col.tobytes(), col.typecode, len(col)
        columns.append([name, code, count])
        parts.append(data)
    text = json.dumps({**head, "columns": columns}, separators=(",", ":"), sort_keys=True)
    encoded = text.encode()
    raw = b"".join([MAGIC, _HEAD.pack(len(encoded)), encoded, *parts])
    # ISA-L level 1: about the size of zlib's level 6 on these records, many times faster,
    # on the way out of every cold conversion that records
    return igzip.compress(raw, compresslevel=1, mtime=0)


def _unpack(data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The head and the columns (arrays, bytes) of a record; InvalidImage if malformed."""
    inflate = isal_zlib.decompressobj(_GZIP_WBITS)
    raw = inflate.decompress(data, RAW_LIMIT)
    if not inflate.eof or inflate.unused_data or inflate.unconsumed_tail:
        raise InvalidImage("the record is truncated, too large, or followed by other data")
    if not raw.startswith(MAGIC):
        raise InvalidImage(f"not a {FORMAT} record")
    at = len(MAGIC)
    (size,) = _HEAD.unpack_from(raw, at)
    at += _HEAD.size
    head = json.loads(raw[at : at + size])
    at += size
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise InvalidImage(f"not a {FORMAT} record")
    listed = head.pop("columns")
    if [c[0] for c in listed] != [name for name, _ in _COLUMNS]:
        raise InvalidImage("the record's columns are not the expected ones")
    columns: dict[str, Any] = {}
    for (name, kind), (_, code, count) in zip(_COLUMNS, listed, strict=True):
        if code not in _ITEM_SIZE or (kind == "bytes") != (code == "B") or count < 0:
            raise InvalidImage(f"column {name} has type {code!r} and {count} items")
        end = at + count * _ITEM_SIZE[code]
        if end > len(raw):
            raise InvalidImage(f"column {name} is cut short")
        if kind == "bytes":
            columns[name] = raw[at:end]
        else:
            col = array(code)
            col.frombytes(raw[at:end])
            if _BIG_ENDIAN:
                col.byteswap()
            columns[name] = col
        at = end
    if at != len(raw):
        raise InvalidImage("the record has bytes after its last column")
    return head, columns


def decode(data: bytes, lookup: Callable[[str, int], Chunk]) -> LayerState:
    """The state ``encode`` wrote; ``lookup`` resolves chunks of the blobs below this layer.

    Raises InvalidImage for anything that is not a well-formed record of this format (a
    corrupt or foreign cache record is then a cache miss for the caller)."""
    try:
        head, col = _unpack(data)
        info = dict(head["blob"])
        info["toc_digest"] = bytes.fromhex(info["toc_digest"])
        info["meta_digest"] = bytes.fromhex(info["meta_digest"])
        blob = BlobInfo(**info)
        flat = _flat(head, col)
        _check(flat, len(col["digests"]))

        def foreign(blob_id: str, index: int) -> Chunk:
            if index < 0:  # would name a chunk from the end
                raise InvalidImage(f"negative chunk index {index}")
            return lookup(blob_id, index)

        tree, chunks = unflatten(flat, blob, foreign)
        return LayerState(blob, chunks, tree, int(head["deduped"]))
    except InvalidImage:
        raise
    except _CORRUPT as exc:
        raise InvalidImage(f"corrupt layer state record: {exc}") from None


def _flat(head: dict[str, Any], col: dict[str, Any]) -> FlatLayer:
    names = _split(col["child_names"], col["child_name_lengths"], "child name")
    targets = _split(col["targets"], col["target_lengths"], "symlink target")
    unb64 = _unb64
    return FlatLayer(
        digests=col["digests"],
        compressed_offsets=col["compressed_offsets"],
        compressed_sizes=col["compressed_sizes"],
        uncompressed_offsets=col["uncompressed_offsets"],
        uncompressed_sizes=col["uncompressed_sizes"],
        compressed=col["compressed"],
        crc32s=col["crc32s"],
        modes=col["modes"],
        uids=col["uids"],
        gids=col["gids"],
        mtimes=col["mtimes"],
        mtime_nsecs=col["mtime_nsecs"],
        sizes=col["sizes"],
        rdevs=col["rdevs"],
        implicit=col["implicit"],
        ref_counts=col["ref_counts"],
        refs=col["refs"],
        child_counts=col["child_counts"],
        child_names=names,
        child_ids=col["child_ids"],
        xattrs=[(int(n), {unb64(k): unb64(v) for k, v in x}) for n, x in head["xattrs"]],
        targets=list(zip(col["target_nodes"], targets, strict=True)),
        foreign=[(str(b), int(i)) for b, i in head["foreign"]],
        root=int(head["root"]),
        lower_links=[(unb64(a), unb64(b)) for a, b in head["lower_links"]],
    )


def _split(data: bytes, lengths: Sequence[int], what: str) -> list[bytes]:
    if lengths and min(lengths) < 0 or sum(lengths) != len(data):
        raise InvalidImage(f"{what} lengths do not add up")
    out, at = [], 0
    for n in lengths:
        out.append(data[at : at + n])
        at += n
    return out


def _check(flat: FlatLayer, chunks: int) -> None:
    """The columns must make a tree of directories: every index in range (a negative one
    would silently name a node from the end), the root a directory listed by none, and no
    directory listed twice (only files have several names). Otherwise a corrupt record could
    hold a directory cycle, which applying it would walk forever. Columns of one table must
    have one length (``unflatten`` checks the per-node ones as it zips them)."""
    if chunks % 32 or any(
        len(c) != chunks // 32
        for c in (flat.compressed_offsets, flat.compressed_sizes, flat.uncompressed_offsets,
                  flat.uncompressed_sizes, flat.compressed, flat.crc32s)
    ):  # fmt: skip
        raise InvalidImage("the chunk columns differ in length")
    count = len(flat.modes)
    if not 0 <= flat.root < count or flat.child_counts[flat.root] < 0:
        raise InvalidImage(f"root {flat.root} is not a directory of the record")
    counts, ids = flat.child_counts, flat.child_ids
    if min(counts) < -1 or sum(c for c in counts if c > 0) != len(ids):
        raise InvalidImage("the directory listings do not add up")
    if min(flat.ref_counts, default=0) < 0 or sum(flat.ref_counts) != len(flat.refs):
        raise InvalidImage("the chunk lists do not add up")
    if ids and not (0 <= min(ids) and max(ids) < count):
        raise InvalidImage("a directory lists a node the record does not have")
    dirs = [i for i in ids if counts[i] >= 0]
    if flat.root in dirs or len(set(dirs)) != len(dirs):
        raise InvalidImage("a directory is listed twice, or the root is listed")
    for n, _ in (*flat.xattrs, *flat.targets):
        if not 0 <= n < count:
            raise InvalidImage(f"node {n} of the record does not exist")
