"""Reading Nydus blobs the way nydusd does, and checking their metadata against the bootstrap.

``BlobAccess`` reads a blob *by its blob id* from the target image's repository
(``/v2/<repo>/blobs/sha256:<blob-id>``, image.md §6.1, §16.5): with HTTP Range requests on a
registry, or, with ``--full`` and for media without range reads (an OCI layout), from a whole
copy downloaded once into the work dir, whose SHA-256 is checked against the blob id.

``check_blob_meta`` is the "blob meta" rule: for each blob of the bootstrap's table, its size,
its TOC (read from the tail: one range of at most 4096 bytes, blob.md §10), its blob meta
(the ci array and its header: one range ``[ci_offset, ci_offset + ci_compressed_size + 4096)``,
§8) and its chunk digest array (§9) against the bootstrap's blob table and chunks.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from rafs.blob.ondisk import BLOB_META_HEADER_SIZE, BlobFeature
from rafs.blob.reader import extract_toc_entry, read_blob_meta, read_toc
from rafs.errors import InvalidImage, RafsError
from rafs.model import BlobInfo, Bootstrap, Chunk, walk
from rafs.zran.reader import ZranMeta, read_ref_meta
from registry import mediatype as mt
from registry.errors import NotFound, RegistryError
from registry.model import Descriptor, Image

TAIL = 4096
_COPY = 1 << 20


class BlobAccess:
    """Reads blobs by id; counts what it fetches. Thread-safe; ``close()`` when done."""

    def __init__(self, image: Image, sizes: dict[str, int], work_dir: Path, full: bool) -> None:
        self.image = image
        self.sizes = dict(sizes)  # blob id -> size, from the manifest's layer descriptors
        self.work_dir = work_dir
        self.ranged = image.ranged and not full
        self.bytes_fetched = 0
        self.requests = 0
        self.digest_problems: dict[str, str] = {}  # blob id -> why its copy is not the blob
        self._lock = threading.Lock()
        self._copies: dict[str, int] = {}  # blob id -> open fd of the local copy
        self._copy_locks: dict[str, threading.Lock] = {}
        self.zran: dict[str, ZranMeta] = {}  # blob id -> what its ref blob says (zran blobs)

    def size(self, blob_id: str, guess: int) -> int | None:
        """The blob's size in the repository, None when the repository lacks it.

        Sizes come from the manifest's layer descriptors; a blob id that no layer names is
        asked for with a HEAD request (a registry), or taken as ``guess`` (the blob table's
        size) where only reading it could tell.
        """
        if blob_id in self.sizes:
            return self.sizes[blob_id]
        size: int | None = guess
        if self.image.ranged:
            size = self.image.stat_blob("sha256:" + blob_id)
            if size is not None and size < 0:
                size = guess
        if size is not None:
            self.sizes[blob_id] = size
        return size

    def read(self, blob_id: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        if self.ranged:
            desc = Descriptor(mt.NYDUS_BLOB, "sha256:" + blob_id, self.sizes.get(blob_id, 0))
            data = self.image.read_range(desc, offset, length)
            with self._lock:
                self.bytes_fetched += len(data)
                self.requests += 1
            return data
        data = os.pread(self._copy(blob_id), length, offset)
        if len(data) != length:
            raise InvalidImage(f"{offset}+{length} is beyond the end of the blob")
        return data

    def fetch(self, blob: BlobInfo, offset: int, length: int) -> bytes:
        return self.read(blob.blob_id, offset, length)

    def download(self, blob_id: str) -> None:
        """Make (and verify) the whole local copy of a blob; problems go to digest_problems."""
        self._copy(blob_id)

    def _copy(self, blob_id: str) -> int:
        with self._lock:
            if blob_id in self._copies:
                return self._copies[blob_id]
            lock = self._copy_locks.setdefault(blob_id, threading.Lock())
        with lock:
            with self._lock:
                if blob_id in self._copies:
                    return self._copies[blob_id]
            path = self.work_dir / f"blob-{blob_id}"
            digest, got = hashlib.sha256(), 0
            desc = Descriptor(mt.NYDUS_BLOB, "sha256:" + blob_id, self.sizes.get(blob_id, 0))
            with open(path, "wb") as out:
                try:
                    with self.image.open_blob(desc) as src:
                        while block := src.read(_COPY):
                            digest.update(block)
                            out.write(block)
                            got += len(block)
                except NotFound:
                    raise
                except RegistryError as exc:  # digest or size mismatch, seen at EOF
                    self.digest_problems[blob_id] = str(exc)
            if digest.hexdigest() != blob_id and blob_id not in self.digest_problems:
                self.digest_problems[blob_id] = f"content digest is sha256:{digest.hexdigest()}"
            fd = os.open(path, os.O_RDONLY)
            with self._lock:
                self._copies[blob_id] = fd
                self.bytes_fetched += got
                self.requests += 1
            return fd

    def close(self) -> None:
        with self._lock:
            for fd in self._copies.values():
                os.close(fd)
            self._copies.clear()


class _RangeFile:
    """A read-only file over one blob: reads are served from prefetched windows when they
    fall inside one, else fetched as one range each."""

    def __init__(self, access: BlobAccess, blob_id: str, size: int) -> None:
        self.access, self.blob_id, self.size = access, blob_id, size
        self.pos = 0
        self.windows: list[tuple[int, bytes]] = []

    def prefetch(self, offset: int, length: int) -> None:
        offset = max(0, offset)
        length = min(length, self.size - offset)
        if length > 0:
            self.windows.append((offset, self.access.read(self.blob_id, offset, length)))

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.size}[whence]
        self.pos = base + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        n = self.size - self.pos if n < 0 else min(n, self.size - self.pos)
        if n <= 0:
            return b""
        for start, data in self.windows:
            if start <= self.pos and self.pos + n <= start + len(data):
                out = data[self.pos - start : self.pos - start + n]
                break
        else:
            out = self.access.read(self.blob_id, self.pos, n)
        self.pos += n
        return out


def chunks_by_blob(bs: Bootstrap) -> dict[int, dict[int, Chunk]]:
    """id(blob) -> chunk index -> one chunk record the tree references."""
    out: dict[int, dict[int, Chunk]] = {}
    for _, node in walk(bs.root):
        for c in node.chunks:
            out.setdefault(id(c.blob), {}).setdefault(c.index, c)
    return out


def check_blob_meta(access: BlobAccess, bs: Bootstrap) -> list[str]:
    """Problems of every blob's size, TOC, ci array and digest array (module docstring)."""
    problems: list[str] = []
    used = chunks_by_blob(bs)
    for blob in bs.blobs:
        name = f"blob {blob.blob_id[:12]}"
        try:
            problems += [f"{name}: {p}" for p in _check_one(access, blob, used.get(id(blob), {}))]
        except (RafsError, RegistryError) as exc:
            problems.append(f"{name}: {exc}")
    return problems


def _check_one(access: BlobAccess, blob: BlobInfo, chunks: dict[int, Chunk]) -> list[str]:
    size = access.size(blob.blob_id, blob.compressed_size)
    if size is None:
        return ["not in the target repository"]
    problems = []
    if size != blob.compressed_size:
        problems.append(f"{size} bytes in the repository, blob table {blob.compressed_size}")
    if blob.features & BlobFeature.ZRAN:
        return problems + _check_zran(access, blob, size, chunks)
    for c in chunks.values():
        if c.compressed_offset + c.compressed_size > size:
            problems.append(f"chunk {c.index} ends beyond the blob")
            return problems
    if not blob.toc_size and not blob.ci_compressed_size:
        return problems  # RAFS v5 blobs carry neither (the bootstrap is the only index)
    f = _RangeFile(access, blob.blob_id, size)
    if blob.ci_compressed_size:
        f.prefetch(blob.ci_offset, blob.ci_compressed_size + BLOB_META_HEADER_SIZE)
        for e in read_blob_meta(f, blob):  # header checked against the blob table there
            mine = chunks.get(e.index)
            if mine is None:
                continue
            got = (e.compressed_offset, e.compressed_size, e.uncompressed_offset)
            want = (mine.compressed_offset, mine.compressed_size, mine.uncompressed_offset)
            if got != want or (e.uncompressed_size, e.compressed) != (
                mine.uncompressed_size,
                mine.compressed,
            ):
                problems.append(f"ci entry {e.index} {got} disagrees with the bootstrap {want}")
            elif e.crc32 is not None and mine.crc32 is not None and e.crc32 != mine.crc32:
                problems.append(f"ci entry {e.index}: CRC-32C differs from the bootstrap's")
    elif blob.chunk_count:
        problems.append("the blob table records no chunk info array")
    if blob.toc_size:
        tail = min(TAIL, size - size % 128)
        f.prefetch(size - tail, tail)
        problems += _check_toc(f, blob, size, chunks)
    return problems


def _check_zran(
    access: BlobAccess, blob: BlobInfo, size: int, chunks: dict[int, Chunk]
) -> list[str]:
    """A zran blob (blob.md §6.3, §12): its ref blob's ci entries against the bootstrap, its
    checkpoints inside the gzip layer (``size`` bytes)."""
    ref_id = blob.meta_digest.hex()
    ref_size = access.size(ref_id, blob.meta_size)
    if ref_size is None:
        return [f"ref blob sha256:{ref_id} is not in the target repository"]
    if ref_size != blob.meta_size:
        return [f"ref blob has {ref_size} bytes, the blob table says {blob.meta_size}"]
    f = _RangeFile(access, ref_id, ref_size)
    f.prefetch(blob.ci_offset, blob.ci_compressed_size + BLOB_META_HEADER_SIZE)
    meta = read_ref_meta(f, blob)
    problems = []
    for k, ctx in enumerate(meta.contexts):
        if ctx.in_offset + ctx.in_len > size:
            problems.append(f"zran context {k} ends beyond the gzip layer")
    for e in meta.entries:
        mine = chunks.get(e.index)
        if mine is None:
            continue
        got = (e.compressed_offset, e.compressed_size, e.uncompressed_offset, e.uncompressed_size)
        want = (mine.compressed_offset, mine.compressed_size, mine.uncompressed_offset,
                mine.uncompressed_size)  # fmt: skip
        if got != want:
            problems.append(f"ci entry {e.index} {got} disagrees with the bootstrap {want}")
    if not problems:
        access.zran[blob.blob_id] = meta
    return problems


def _check_toc(f: _RangeFile, blob: BlobInfo, size: int, chunks: dict[int, Chunk]) -> list[str]:
    entries = {e.name: e for e in read_toc(f, size, blob.toc_digest)}  # digest checked there
    problems = []
    for entry in entries.values():
        if entry.compressed_offset + entry.compressed_size > size:
            problems.append(f"TOC entry {entry.name} lies beyond the blob")
    if not chunks and not blob.chunk_count:
        return problems
    expect = {
        "blob.meta": (blob.ci_offset, blob.ci_compressed_size, blob.ci_uncompressed_size),
        "blob.meta.header": (
            blob.ci_offset + blob.ci_compressed_size,
            BLOB_META_HEADER_SIZE,
            BLOB_META_HEADER_SIZE,
        ),
    }
    for name, want in expect.items():
        e = entries.get(name)
        if e is None:
            problems.append(f"TOC has no {name} entry")
            continue
        got = (e.compressed_offset, e.compressed_size, e.uncompressed_size)
        if got != want:
            problems.append(f"TOC entry {name} {got} != blob table {want}")
        else:
            extract_toc_entry(f, e)  # SHA-256 of the entry's content
    data = entries.get("image.blob")
    if data is None:
        problems.append("TOC has no image.blob entry")
    else:
        end = max((c.compressed_offset + c.compressed_size for c in chunks.values()), default=0)
        if data.compressed_offset != 0 or data.compressed_size < end:
            problems.append("TOC entry image.blob does not cover the chunk data")
        if data.uncompressed_size != blob.uncompressed_size:
            problems.append(
                f"TOC entry image.blob: {data.uncompressed_size} uncompressed bytes, "
                f"the blob table says {blob.uncompressed_size}"
            )
    digests = entries.get("blob.digest")
    if digests is not None:
        if digests.uncompressed_size != 32 * blob.chunk_count:
            problems.append(f"blob.digest holds {digests.uncompressed_size // 32} digests")
        else:
            array = extract_toc_entry(f, digests)
            for index, c in sorted(chunks.items()):
                if array[32 * index : 32 * index + 32] != c.digest:
                    problems.append(f"blob.digest entry {index} differs from the chunk id")
    return problems


def verify_whole(access: BlobAccess, blob_ids: Iterable[str]) -> list[str]:
    """--full: download every blob whole and check its SHA-256 against its id."""
    problems = []
    for blob_id in dict.fromkeys(blob_ids):
        try:
            access.download(blob_id)
        except RegistryError as exc:
            problems.append(f"blob {blob_id[:12]}: {exc}")
            continue
        if blob_id in access.digest_problems:
            problems.append(f"blob {blob_id[:12]}: {access.digest_problems[blob_id]}")
    return problems
