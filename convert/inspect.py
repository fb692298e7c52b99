"""`rconv inspect`, `rconv unpack` and `rconv blob-view`: looking inside a built image.

unpack writes the tree back as an OCI layer tar (PAX for long names, xattrs and ns mtimes,
hard links as link entries); blob-view writes each blob's uncompressed address space, which
is what EROFS sees as extra device k (rafs-v6.md §12.3, §20).
"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

from rafs.blob.ondisk import BlobFeature
from rafs.blob.reader import iter_file, write_blob_view
from rafs.bootstrap import detect_version
from rafs.errors import InvalidImage
from rafs.model import BlobInfo, Bootstrap, Chunk, count_names, walk
from rafs.zran.reader import ZranBlob
from registry.tarwriter import open_tar_writer

TYPE_NAMES = {
    stat.S_IFDIR: "dir",
    stat.S_IFREG: "file",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def describe(data: bytes, bs: Bootstrap) -> dict:
    """A JSON-ready description of a bootstrap: superblock, blobs, every node."""
    version = detect_version(data[:1028])
    info: dict = {
        "version": version,
        "size": len(data),
        "chunk_size": bs.chunk_size,
        "compressor": bs.compressor,
        "digester": bs.digester,
        "explicit_uid_gid": bs.explicit_uid_gid,
        "prefetch": [_text(p) for p in bs.prefetch],
    }
    nids: dict[int, int] = {}
    if version == 6:
        from rafs.v6.reader import parse

        image = parse(data)
        sb = image.superblock
        info["superblock"] = {
            "inodes": sb.inos,
            "blocks": sb.blocks,
            "meta_blkaddr": sb.meta_blkaddr,
            "flags": f"{sb.flags:#x}",
            "chunk_table": [sb.chunk_table_offset, sb.chunk_table_size],
            "prefetch_table": [sb.prefetch_table_offset, sb.prefetch_table_size],
        }
        info["devices"] = [
            {"blob_id": dev.blob_id, "blocks": dev.blocks, "mapped_blkaddr": dev.mapped_blkaddr}
            for dev in image.devices
        ]
        nids = image.nids
    index = {id(b): k for k, b in enumerate(bs.blobs)}
    info["blobs"] = [
        {
            "index": k,
            "blob_id": b.blob_id,
            "compressor": b.compressor,
            "digester": b.digester,
            "chunk_count": b.chunk_count,
            "compressed_size": b.compressed_size,
            "uncompressed_size": b.uncompressed_size,
            "features": f"{b.features:#x}",
            "ci": [b.ci_compressor, b.ci_offset, b.ci_compressed_size, b.ci_uncompressed_size],
            "toc": [b.toc_size, b.toc_digest.hex()],
        }
        for k, b in enumerate(bs.blobs)
    ]
    names = count_names(bs.root)
    nodes = []
    for path, node in walk(bs.root):
        entry: dict = {
            "path": _text(path),
            "type": TYPE_NAMES.get(node.kind, "unknown"),
            "mode": f"{stat.S_IMODE(node.mode):04o}",
            "uid": node.uid,
            "gid": node.gid,
            "mtime": f"{node.mtime}.{node.mtime_nsec:09d}",
            "nlink": names[id(node)] if not node.is_dir else None,
        }
        if id(node) in nids:
            entry["nid"] = nids[id(node)]
        if node.is_reg:
            entry["size"] = node.size
            entry["chunks"] = [_chunk(c, index) for c in node.chunks]
        if node.is_symlink:
            entry["target"] = _text(node.target)
        if node.kind in (stat.S_IFCHR, stat.S_IFBLK):
            entry["rdev"] = [os.major(node.rdev), os.minor(node.rdev)]
        if node.xattrs:
            entry["xattrs"] = {_text(k): v.hex() for k, v in sorted(node.xattrs.items())}
        nodes.append(entry)
    info["nodes"] = nodes
    return info


def _chunk(c: Chunk, index: dict[int, int]) -> dict:
    return {
        "blob": index.get(id(c.blob)),
        "index": c.index,
        "digest": c.digest.hex(),
        "compressed": [c.compressed_offset, c.compressed_size, c.compressed],
        "uncompressed": [c.uncompressed_offset, c.uncompressed_size],
    }


def render_text(info: dict) -> Iterator[str]:
    yield f"RAFS v{info['version']}, {info['size']} bytes, chunk size {info['chunk_size']:#x}, "
    yield f"  compressor {info['compressor']}, digester {info['digester']}\n"
    if "superblock" in info:
        sb = info["superblock"]
        yield (
            f"inodes {sb['inodes']}, data blocks {sb['blocks']}, meta block {sb['meta_blkaddr']}, "
            f"flags {sb['flags']}\n"
        )
    for blob in info["blobs"]:
        yield (
            f"blob {blob['index']}: {blob['blob_id']} {blob['compressor']} "
            f"{blob['chunk_count']} chunks, {blob['compressed_size']} bytes stored, "
            f"{blob['uncompressed_size']} uncompressed\n"
        )
    for node in info["nodes"]:
        line = f"{node['type']:7} {node['mode']} {node['uid']}:{node['gid']} "
        line += f"{node.get('size', '-'):>10} {node['path']}"
        if "target" in node:
            line += f" -> {node['target']}"
        if "rdev" in node:
            line += f" [{node['rdev'][0]},{node['rdev'][1]}]"
        if node.get("nlink") and node["nlink"] > 1:
            line += f" (links {node['nlink']})"
        if "xattrs" in node:
            line += " xattrs=" + ",".join(node["xattrs"])
        if node.get("chunks"):
            line += " chunks=" + ",".join(f"{c['blob']}#{c['index']}" for c in node["chunks"])
        yield line + "\n"


def dump_json(info: dict, out) -> None:
    json.dump(info, out, indent=1)
    out.write("\n")


class BlobOpener:
    """Opens blobs from a directory by id, each once, closed together."""

    def __init__(self, blob_dir: Path, stack: ExitStack) -> None:
        self.blob_dir = blob_dir
        self.stack = stack
        self.files: dict[str, BinaryIO] = {}
        self.zran: dict[str, ZranBlob] = {}

    def __call__(self, blob: BlobInfo) -> BinaryIO:
        if blob.features & BlobFeature.ZRAN:  # the gzip layer read through its ref blob
            zran = self.zran.get(blob.blob_id)
            if zran is None:
                ref = BlobInfo(blob_id=blob.meta_digest.hex())
                zran = self.zran[blob.blob_id] = ZranBlob(self._open(blob), self._open(ref), blob)
            return zran  # type: ignore[return-value]
        return self._open(blob)

    def _open(self, blob: BlobInfo) -> BinaryIO:
        f = self.files.get(blob.blob_id)
        if f is None:
            path = self.blob_dir / blob.blob_id
            try:
                f = self.stack.enter_context(open(path, "rb"))
            except OSError as exc:
                raise InvalidImage(
                    f"blob {blob.blob_id}: cannot open {path}: {exc.strerror}"
                ) from exc
            size = path.stat().st_size
            if blob.compressed_size and size < blob.compressed_size:
                raise InvalidImage(
                    f"blob {blob.blob_id}: file has {size} bytes, the blob table says "
                    f"{blob.compressed_size}"
                )
            self.files[blob.blob_id] = f
        return f


class _ChunkReader(io.RawIOBase):
    """A file object over a regular file's decompressed chunks (for tarfile.addfile)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            nxt = next(self._chunks, None)
            if nxt is None:
                break
            self._buf += nxt
        if n < 0:
            n = len(self._buf)
        out, self._buf = self._buf[:n], self._buf[n:]
        return out


def unpack(bs: Bootstrap, open_blob, out: BinaryIO) -> int:
    """Write the tree as an uncompressed OCI layer tar; returns the number of entries."""
    first_name: dict[int, str] = {}
    count = 0
    with open_tar_writer(out) as tar:
        for path, node in walk(bs.root):
            name = path.decode("utf-8", "surrogateescape").lstrip("/") or "."
            ti = tarfile.TarInfo(name if not node.is_dir or name == "." else name + "/")
            ti.mode = stat.S_IMODE(node.mode)
            ti.uid, ti.gid = node.uid, node.gid
            ti.mtime = node.mtime
            pax = {}
            if node.mtime_nsec:
                pax["mtime"] = f"{node.mtime}.{node.mtime_nsec:09d}"
            for key, value in sorted(node.xattrs.items()):
                xname = key.decode("utf-8", "surrogateescape")
                pax["SCHILY.xattr." + xname] = value.decode("utf-8", "surrogateescape")
            ti.pax_headers = pax
            count += 1
            if not node.is_dir and id(node) in first_name:
                ti.type = tarfile.LNKTYPE
                ti.linkname = first_name[id(node)]
                tar.addfile(ti)
                continue
            if not node.is_dir:
                first_name[id(node)] = name
            if node.is_dir:
                ti.type = tarfile.DIRTYPE
                tar.addfile(ti)
            elif node.is_reg:
                ti.type = tarfile.REGTYPE
                ti.size = node.size
                reader = _ChunkReader(iter_file(node, open_blob, bs.digester))
                tar.addfile(ti, reader)
            elif node.is_symlink:
                ti.type = tarfile.SYMTYPE
                ti.linkname = node.target.decode("utf-8", "surrogateescape")
                tar.addfile(ti)
            else:
                ti.type = {
                    stat.S_IFCHR: tarfile.CHRTYPE,
                    stat.S_IFBLK: tarfile.BLKTYPE,
                    stat.S_IFIFO: tarfile.FIFOTYPE,
                }.get(node.kind, tarfile.FIFOTYPE)
                ti.devmajor, ti.devminor = os.major(node.rdev), os.minor(node.rdev)
                tar.addfile(ti)
    return count


def blob_views(bs: Bootstrap, open_blob, output_dir: Path) -> list[Path]:
    """One view file per blob in blob-table order (= EROFS device order)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    per_blob: dict[int, list[Chunk]] = {}
    for _, node in walk(bs.root):
        for chunk in node.chunks:
            per_blob.setdefault(id(chunk.blob), []).append(chunk)
    paths = []
    for blob in bs.blobs:
        path = output_dir / blob.blob_id
        with open(path, "wb") as out:
            write_blob_view(open_blob(blob), blob, per_blob.get(id(blob), []), out)
        paths.append(path)
    return paths
