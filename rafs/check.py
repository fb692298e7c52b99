"""Invariant checker for bootstraps (and, when given, their blobs), run by every test that
writes one.

It re-reads the bytes with the validating reader, then checks what the readers leave to
the writer: tree shape, names, chunk geometry, the blob table against the chunks, the v6
tables rconv derives (s_blocks, mapped_blkaddr, chunk table), the canonical form (writing
the parsed bootstrap again gives the same bytes) and, with blobs, every blob's ci array and
TOC against the bootstrap. Specs: rafs-v6.md §20.3, §23; rafs-v5.md §18; blob.md §8, §10.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import BinaryIO

from rafs.blob.ondisk import BlobFeature
from rafs.blob.reader import read_blob_meta, read_toc
from rafs.bootstrap import detect_version, read_bootstrap, write_bootstrap
from rafs.errors import RafsError
from rafs.model import BlobInfo, Bootstrap, Chunk, Node, walk


def check_bootstrap(
    data: bytes,
    open_blob: Callable[[BlobInfo], BinaryIO] | None = None,
    canonical: bool = True,
) -> list[str]:
    """Every broken invariant, one line each; an empty list means the image is sound."""
    try:
        bs = read_bootstrap(io.BytesIO(data))
    except RafsError as exc:
        return [f"unreadable: {exc}"]
    problems = check_tree(bs)
    version = detect_version(data[:1028])
    if version == 6:
        problems += _check_v6_tables(data, bs)
    if canonical and not problems:
        again = io.BytesIO()
        write_bootstrap(again, bs)
        if again.getvalue() != data:
            problems.append("writing the parsed bootstrap again does not give the same bytes")
    if open_blob is not None:
        problems += check_blobs(bs, open_blob)
    return problems


def assert_sound(data: bytes, open_blob=None, canonical: bool = True) -> None:
    problems = check_bootstrap(data, open_blob, canonical)
    if problems:
        raise AssertionError("bootstrap invariants broken:\n  " + "\n  ".join(problems))


def check_tree(bs: Bootstrap) -> list[str]:
    problems: list[str] = []
    blob_ids = {id(b) for b in bs.blobs}
    ids = [b.blob_id for b in bs.blobs]
    if len(set(ids)) != len(ids):
        problems.append("duplicate blob ids in the blob table")
    used: set[int] = set()
    dirs_seen: set[int] = set()
    for path, node in walk(bs.root):
        where = path.decode(errors="backslashreplace")
        if node.is_dir:
            if id(node) in dirs_seen:
                problems.append(f"{where}: directory reachable twice")
            dirs_seen.add(id(node))
            for name in node.children or {}:
                if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
                    problems.append(f"{where}: invalid entry name {name!r}")
                if len(name) > 255:
                    problems.append(f"{where}: entry name longer than 255 bytes")
        elif node.children is not None:
            problems.append(f"{where}: non-directory with children")
        if node.is_symlink and not node.target:
            problems.append(f"{where}: empty symlink target")
        if node.is_reg:
            problems += _check_file(bs, node, where, blob_ids)
            used.update(id(c.blob) for c in node.chunks)
    unused = [b.blob_id[:12] for b in bs.blobs if id(b) not in used]
    if unused:
        problems.append(f"blob table lists unreferenced blobs {unused}")
    return problems


def _check_file(bs: Bootstrap, node: Node, where: str, blob_ids: set[int]) -> list[str]:
    problems = []
    cs = bs.chunk_size
    expected = -(-node.size // cs)
    if len(node.chunks) != expected:
        return [f"{where}: {len(node.chunks)} chunks for {node.size} bytes (need {expected})"]
    for i, chunk in enumerate(node.chunks):
        want = min(cs, node.size - i * cs)
        blob = chunk.blob
        if id(blob) not in blob_ids:
            problems.append(f"{where}: chunk {i} points at a blob outside the table")
            continue
        if chunk.uncompressed_size != want:
            problems.append(f"{where}: chunk {i} has {chunk.uncompressed_size} bytes, not {want}")
        if chunk.index >= blob.chunk_count:
            problems.append(f"{where}: chunk {i} index {chunk.index} >= {blob.chunk_count}")
        if chunk.uncompressed_offset + chunk.uncompressed_size > blob.uncompressed_size:
            problems.append(f"{where}: chunk {i} ends beyond the blob's uncompressed size")
        if bs.version == 6 and chunk.uncompressed_offset % 4096:
            problems.append(f"{where}: chunk {i} uncompressed offset not 4 KiB aligned")
        if chunk.compressed_offset + chunk.compressed_size > blob.compressed_size:
            problems.append(f"{where}: chunk {i} ends beyond the blob's stored size")
        if not chunk.compressed and chunk.compressed_size != chunk.uncompressed_size:
            problems.append(f"{where}: chunk {i} stored raw with a different size")
    return problems


def _check_v6_tables(data: bytes, bs: Bootstrap) -> list[str]:
    from rafs.v6.ondisk import BLOCK_SIZE, MAPPED_BLKADDR_ALIGN, round_up
    from rafs.v6.reader import parse

    image = parse(data)
    problems = []
    total = sum(dev.blocks for dev in image.devices)
    if image.superblock.blocks != total:
        problems.append(f"s_blocks {image.superblock.blocks} != device blocks {total}")
    pos = len(data)
    for k, dev in enumerate(image.devices):
        mapped = round_up(pos, MAPPED_BLKADDR_ALIGN) // BLOCK_SIZE
        if dev.mapped_blkaddr != mapped:
            problems.append(f"device {k + 1}: mapped_blkaddr {dev.mapped_blkaddr} != {mapped}")
        pos = (mapped + dev.blocks) * BLOCK_SIZE
    referenced = {(id(c.blob), c.index) for _, n in walk(bs.root) for c in n.chunks}
    records = image.superblock.chunk_table_size // 80
    if records < len(referenced):
        problems.append(f"chunk table has {records} records for {len(referenced)} chunks")
    for nid in image.prefetch_nids:
        if nid not in image.nids.values():
            problems.append(f"prefetch table names nid {nid}, which is not in the tree")
    return problems


def check_blobs(bs: Bootstrap, open_blob: Callable[[BlobInfo], BinaryIO]) -> list[str]:
    """Each blob's size, TOC digest and ci array against the bootstrap's chunks."""
    problems: list[str] = []
    chunks_by_blob: dict[int, dict[int, Chunk]] = {}
    for _, node in walk(bs.root):
        for chunk in node.chunks:
            chunks_by_blob.setdefault(id(chunk.blob), {})[chunk.index] = chunk
    for blob in bs.blobs:
        name = blob.blob_id[:12]
        try:
            f = open_blob(blob)
            f.seek(0, io.SEEK_END)
            size = f.tell()
            if size != blob.compressed_size:
                problems.append(f"blob {name}: {size} bytes, table says {blob.compressed_size}")
            if blob.toc_size:
                read_toc(f, size, blob.toc_digest)
            entries = None
            if blob.features & BlobFeature.ZRAN:  # a ZranBlob: ci read from the ref blob
                entries = f.meta.entries  # type: ignore[attr-defined]
            elif blob.ci_compressed_size:
                entries = read_blob_meta(f, blob)
            if entries is not None:
                for index, chunk in chunks_by_blob.get(id(blob), {}).items():
                    e = entries[index]
                    got = (e.compressed_offset, e.compressed_size, e.uncompressed_offset)
                    want = (
                        chunk.compressed_offset,
                        chunk.compressed_size,
                        chunk.uncompressed_offset,
                    )
                    if got != want or e.uncompressed_size != chunk.uncompressed_size:
                        problems.append(f"blob {name}: ci entry {index} disagrees with the table")
            f.seek(0)
            digest = hashlib.sha256()
            while block := f.read(1 << 20):
                digest.update(block)
            if digest.hexdigest() != blob.blob_id:
                problems.append(f"blob {name}: content digest is {digest.hexdigest()[:12]}")
        except RafsError as exc:
            problems.append(f"blob {name}: {exc}")
    return problems
