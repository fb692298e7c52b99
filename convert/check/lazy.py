"""Lazy content check: every stored chunk read once, as nydusd would fetch it, and every
regular file's SHA-256 computed from its chunks in file order.

Reading (blob.md §3-§5): the distinct chunks the tree references are sorted by blob and stored
offset and coalesced into ranges (adjacent or overlapping chunks only, so no byte between
chunks is fetched; at most ``max_range`` stored and ``max_range`` decoded bytes per range
unless one chunk is larger, so well-compressed chunks cannot balloon a range).
Ranges are fetched on a bounded thread pool (``jobs`` workers, at most ``2 * jobs`` ranges in
flight) and decoded there: decompressed with the blob's compressor, checked against the
recorded CRC-32C and against the chunk id with the blob's digester.

Hashing: results are consumed in plan order, so the outcome never depends on timing. Each
file is a running SHA-256 that waits for its next chunk. When a chunk arrives it is fed to the
files waiting for it, each of which then takes as many following chunks as are already at
hand. A chunk that some file will still need later (dedup across files, or a file whose chunks
are not stored in file order) is kept in an LRU cache bounded by ``cache_bytes``; one needed
after it was evicted is fetched again in a later pass (reported as ``refetched``), so memory
stays bounded whatever the layout. With a rconv or nydus-image blob (files stored in order)
the cache holds only the chunks shared between files.
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from rafs import codec
from rafs.blob.ondisk import BlobFeature
from rafs.errors import InvalidImage, RafsError
from rafs.model import BlobInfo, Chunk, Node
from rafs.zran.index import Context
from rafs.zran.reader import ZranMeta, inflate_context
from registry.errors import RegistryError

Fetch = Callable[[BlobInfo, int, int], bytes]  # (blob, offset, length) -> exactly length bytes
Progress = Callable[[int, int], None]  # (bytes done, bytes planned)

EMPTY_SHA256 = "sha256:" + hashlib.sha256(b"").hexdigest()
UNREADABLE = "unreadable: "


@dataclass
class ContentResult:
    digests: dict[int, str] = field(default_factory=dict)  # id(node) -> sha256:… | unreadable…
    bad_chunks: list[str] = field(default_factory=list)
    chunks: int = 0  # distinct stored chunks
    chunk_bytes: int = 0  # their stored sizes, each counted once
    fetched: int = 0  # bytes fetched for chunk data, refetches included
    requests: int = 0
    refetched: int = 0


@dataclass(frozen=True)
class _Range:
    blob: BlobInfo
    start: int
    end: int
    chunks: tuple[Chunk, ...]
    # zran: the context the range is (its whole compressed span), and each chunk's offset in
    # the context's output; None for stored chunks.
    context: Context | None = None
    offsets: tuple[int, ...] = ()


def _location(c: Chunk) -> tuple[int, int]:
    return c.compressed_offset, c.compressed_size


def plan_ranges(chunks: Iterable[Chunk], max_range: int) -> list[_Range]:
    """Coalesce chunks into ranges: per blob (first-seen order), by stored offset."""
    by_blob: dict[int, list[Chunk]] = {}
    blobs: dict[int, BlobInfo] = {}
    for c in chunks:
        by_blob.setdefault(id(c.blob), []).append(c)
        blobs.setdefault(id(c.blob), c.blob)
    out: list[_Range] = []
    for key, members in by_blob.items():
        members.sort(key=lambda c: (c.compressed_offset, c.compressed_size, c.index))
        group: list[Chunk] = []
        start = end = decoded = 0
        for c in members:
            c_end = c.compressed_offset + c.compressed_size
            if group and (
                c.compressed_offset > end
                or (c_end - start > max_range and c_end > end)
                or decoded + c.uncompressed_size > max_range
            ):
                out.append(_Range(blobs[key], start, end, tuple(group)))
                group = []
            if not group:
                start, end, decoded = c.compressed_offset, c_end, 0
            group.append(c)
            end = max(end, c_end)
            decoded += c.uncompressed_size
        if group:
            out.append(_Range(blobs[key], start, end, tuple(group)))
    return out


def plan_zran_ranges(chunks: Iterable[Chunk], metas: dict[str, ZranMeta]) -> list[_Range]:
    """One range per decompression context of zran chunks: nydusd fetches and inflates a
    context's whole compressed span to serve any chunk in it (blob.md §12)."""
    groups: dict[tuple[str, int], list[Chunk]] = {}
    blobs: dict[str, BlobInfo] = {}
    for c in chunks:
        meta = metas.get(c.blob.blob_id)
        k = meta.entries[c.index].data >> 32 if meta and c.index < len(meta.entries) else -1
        groups.setdefault((c.blob.blob_id, k), []).append(c)
        blobs.setdefault(c.blob.blob_id, c.blob)
    out = []
    for (blob_id, k), members in sorted(groups.items()):
        members.sort(key=lambda c: c.index)
        if k < 0:  # no usable ref blob: reported by the blob-meta rule, unreadable here
            out.append(_Range(blobs[blob_id], 0, 0, tuple(members)))
            continue
        meta = metas[blob_id]
        ctx = meta.contexts[k]
        offsets = tuple(meta.entries[c.index].data & 0xFFFF_FFFF for c in members)
        out.append(_Range(blobs[blob_id], ctx.in_offset, ctx.in_offset + ctx.in_len,
                          tuple(members), ctx, offsets))  # fmt: skip
    return out


def _who(c: Chunk) -> str:
    if c.blob.features & BlobFeature.ZRAN:  # the data blob is the source layer: name it whole
        return f"layer sha256:{c.blob.blob_id} (zran) chunk {c.index}"
    blob_id = c.blob.blob_id[:12] or "<unnamed>"
    return f"blob {blob_id} chunk {c.index} (stored at {c.compressed_offset}+{c.compressed_size})"


def decode_chunk(c: Chunk, raw: bytes) -> bytes:
    """The chunk's uncompressed bytes, checked against its CRC-32C and chunk id."""
    blob = c.blob
    if c.compressed:
        data = codec.decompress(blob.compressor, raw, c.uncompressed_size)
    elif len(raw) != c.uncompressed_size:
        raise InvalidImage(f"stored raw with {len(raw)} bytes for {c.uncompressed_size}")
    else:
        data = raw
    return verify_chunk(c, data)


def verify_chunk(c: Chunk, data: bytes) -> bytes:
    """``data`` checked against the chunk's size, CRC-32C and chunk id."""
    blob = c.blob
    if len(data) != c.uncompressed_size:
        raise InvalidImage(f"{len(data)} bytes where the bootstrap says {c.uncompressed_size}")
    if c.crc32 is not None and codec.crc32c(data) != c.crc32:
        raise InvalidImage(f"CRC-32C {codec.crc32c(data):#010x} != recorded {c.crc32:#010x}")
    actual = codec.digest(blob.digester, data)
    if actual != c.digest:
        raise InvalidImage(f"{blob.digester} digest {actual.hex()[:16]}… != chunk id")
    return data


def _work(r: _Range, fetch: Fetch) -> tuple[list[tuple[Chunk, bytes | None, str]], int]:
    if r.blob.features & BlobFeature.ZRAN and r.context is None:
        return [(c, None, f"{_who(c)}: no readable ref blob") for c in r.chunks], 0
    try:
        buf = fetch(r.blob, r.start, r.end - r.start)
    except (RegistryError, RafsError, OSError) as exc:
        return [(c, None, f"{_who(c)}: fetch failed: {exc}") for c in r.chunks], 0
    out: list[tuple[Chunk, bytes | None, str]] = []
    if r.context is not None:
        try:
            whole = inflate_context(r.context, buf, "gzip checkpoint")
        except RafsError as exc:
            return [(c, None, f"{_who(c)}: {exc}") for c in r.chunks], len(buf)
        for c, at in zip(r.chunks, r.offsets, strict=True):
            try:
                out.append((c, verify_chunk(c, whole[at : at + c.uncompressed_size]), ""))
            except RafsError as exc:
                out.append((c, None, f"{_who(c)}: {exc}"))
        return out, len(buf)
    for c in r.chunks:
        at = c.compressed_offset - r.start
        try:
            out.append((c, decode_chunk(c, buf[at : at + c.compressed_size]), ""))
        except RafsError as exc:
            out.append((c, None, f"{_who(c)}: {exc}"))
    return out, len(buf)


class _Cache:
    """LRU of chunk data bounded by bytes; the entry just added is never the one evicted."""

    def __init__(self, budget: int) -> None:
        self.budget, self.size = budget, 0
        self.items: OrderedDict[Chunk, bytes] = OrderedDict()

    def get(self, key: Chunk) -> bytes | None:
        data = self.items.get(key)
        if data is not None:
            self.items.move_to_end(key)
        return data

    def put(self, key: Chunk, data: bytes) -> None:
        if key in self.items:
            return
        self.items[key] = data
        self.size += len(data)
        while self.size > self.budget and len(self.items) > 1:
            _, old = self.items.popitem(last=False)
            self.size -= len(old)

    def drop(self, key: Chunk) -> None:
        data = self.items.pop(key, None)
        if data is not None:
            self.size -= len(data)


class _File:
    __slots__ = ("node", "pos", "hash", "error")

    def __init__(self, node: Node) -> None:
        self.node, self.pos, self.hash, self.error = node, 0, hashlib.sha256(), ""


class _Hasher:
    """Feeds arriving chunks to the files waiting for them (see the module docstring)."""

    def __init__(self, files: list[_File], cache_bytes: int, result: ContentResult) -> None:
        self.uses = Counter(c for f in files for c in f.node.chunks)
        self.waiting: dict[Chunk, list[_File]] = {}
        self.cache = _Cache(cache_bytes)
        self.bad: dict[Chunk, str] = {}
        self.result = result
        for f in files:
            self.waiting.setdefault(f.node.chunks[0], []).append(f)

    def deliver(self, chunk: Chunk, data: bytes | None, error: str) -> None:
        if error:
            if chunk not in self.bad:
                self.result.bad_chunks.append(error)
            self.bad[chunk] = error
        waiters = self.waiting.pop(chunk, [])
        if data is not None and self.uses[chunk] > len(waiters):
            self.cache.put(chunk, data)
        for f in waiters:
            self._advance(f, chunk, data, error)
        if self.uses[chunk] == 0:
            self.cache.drop(chunk)

    def _advance(self, f: _File, chunk: Chunk, data: bytes | None, error: str) -> None:
        chunks = f.node.chunks
        while True:
            if data is None:
                f.error = f.error or error
            elif not f.error:
                f.hash.update(data)
            self.uses[chunk] -= 1
            f.pos += 1
            if f.pos == len(chunks):
                digest = "sha256:" + f.hash.hexdigest()
                self.result.digests[id(f.node)] = UNREADABLE + f.error if f.error else digest
                return
            chunk = chunks[f.pos]
            if chunk in self.bad:
                data, error = None, self.bad[chunk]
                continue
            data = self.cache.get(chunk)
            if data is None:
                self.waiting.setdefault(chunk, []).append(f)
                return


def read_contents(
    files: Iterable[Node],
    fetch: Fetch,
    *,
    jobs: int = 8,
    max_range: int = 4 << 20,
    cache_bytes: int = 256 << 20,
    progress: Progress | None = None,
    zran: dict[str, ZranMeta] | None = None,
) -> ContentResult:
    """SHA-256 of every regular file in ``files`` (each node once), reading chunks lazily;
    ``zran`` holds the ref-blob metadata of zran blobs by blob id."""
    result = ContentResult()
    todo: list[_File] = []
    seen: set[int] = set()
    for node in files:
        if id(node) in seen or not node.is_reg:
            continue
        seen.add(id(node))
        if node.chunks:
            todo.append(_File(node))
        else:
            result.digests[id(node)] = EMPTY_SHA256
    hasher = _Hasher(todo, cache_bytes, result)
    distinct = list(dict.fromkeys(c for f in todo for c in f.node.chunks))
    result.chunks = len(distinct)
    locations = {(id(c.blob), *_location(c)) for c in distinct}
    result.chunk_bytes = sum(size for _, _, size in locations)
    first = True
    while hasher.waiting:
        wanted = list(hasher.waiting) if not first else distinct
        zchunks = [c for c in wanted if c.blob.features & BlobFeature.ZRAN]
        ranges = plan_ranges([c for c in wanted if not c.blob.features & BlobFeature.ZRAN],
                             max_range) + plan_zran_ranges(zchunks, zran or {})  # fmt: skip
        total = sum(r.end - r.start for r in ranges)
        done = _run(ranges, fetch, hasher, jobs, progress, total, result)
        if not first:
            result.refetched += done
        first = False
    return result


def _run(ranges, fetch, hasher: _Hasher, jobs: int, progress, total: int, result) -> int:
    done = 0
    window: deque[Future] = deque()
    with ThreadPoolExecutor(max(1, jobs), thread_name_prefix="rconv-check") as pool:
        try:
            for r in ranges:
                window.append(pool.submit(_work, r, fetch))
                if len(window) >= 2 * max(1, jobs):
                    done += _consume(window.popleft(), hasher, result)
                    if progress:
                        progress(done, total)
            while window:
                done += _consume(window.popleft(), hasher, result)
                if progress:
                    progress(done, total)
        except BaseException:
            for future in window:
                future.cancel()
            raise
    return done


def _consume(future: Future, hasher: _Hasher, result: ContentResult) -> int:
    decoded, fetched = future.result()
    result.requests += 1
    result.fetched += fetched
    for chunk, data, error in decoded:
        hasher.deliver(chunk, data, error)
    return fetched
