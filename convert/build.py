"""`rconv build` and `rconv merge`: one layer (tar or directory) into a bootstrap and a blob.

A build reads the source once: file data streams into the blob writer as the tar (or the
directory walk) yields it, the resulting layer tree is applied onto the parent tree (or an
empty root) with the chosen whiteout spec (image.md §15.4), and the merged tree is written
as the bootstrap. Chunks already present in the parent or the chunk dictionary are
referenced, not stored (image.md §15.7, §14).
"""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from convert.dirsource import read_directory
from rafs.blob.writer import BlobWriter
from rafs.bootstrap import read_bootstrap, write_bootstrap
from rafs.chunkdict import MemoryChunkDict, chunk_dict_from_bootstrap
from rafs.chunker import Chunker, resolve
from rafs.errors import InvalidInput, RafsError
from rafs.layerstream import open_layer
from rafs.model import BlobInfo, Bootstrap, LayerTree, new_root, walk
from rafs.options import RafsOptions
from rafs.overlay import apply_layer
from rafs.tarstream import read_layer


@dataclass(frozen=True)
class BuildOptions:
    rafs: RafsOptions = field(default_factory=RafsOptions)
    whiteout_spec: str = "oci"
    prefetch: tuple[bytes, ...] = ()
    max_layer_size: int | None = None  # refuse layers that decompress beyond this


@dataclass
class BuildResult:
    bootstrap: Bootstrap
    blob: BlobInfo | None  # None when the layer stored no chunk
    blob_path: Path | None
    warnings: list[str] = field(default_factory=list)


def load_bootstrap(path: Path) -> Bootstrap:
    with open(path, "rb") as f:
        try:
            return read_bootstrap(f)
        except RafsError as exc:  # the readers raise InvalidImage, Unsupported
            raise type(exc)(f"{path}: {exc}") from exc


class _ChainedDict:
    """Looks a chunk up in several dictionaries in turn (parent first, then the dict)."""

    def __init__(self, parts: list[MemoryChunkDict]) -> None:
        self.parts = parts

    def get(self, digest: bytes, size: int):
        for part in self.parts:
            chunk = part.get(digest, size)
            if chunk is not None:
                return chunk
        return None

    def add(self, chunk) -> None:
        raise TypeError("the build's dictionaries are read-only")


def unify_blobs(trees: list[Bootstrap]) -> list[BlobInfo]:
    """One BlobInfo object per blob id across bootstraps, chunks rewritten to share it.

    Two bootstraps read separately describe a shared blob with two objects; the writers
    number blobs by object, so without this the same id would appear twice.
    """
    by_id: dict[str, BlobInfo] = {}
    for bs in trees:
        for blob in bs.blobs:
            by_id.setdefault(blob.blob_id, blob)
        for _, node in walk(bs.root):
            if any(by_id[c.blob.blob_id] is not c.blob for c in node.chunks):
                node.chunks = [replace(c, blob=by_id[c.blob.blob_id]) for c in node.chunks]
    return list(by_id.values())


def _known_chunks(opts: RafsOptions, sources: list[Bootstrap]) -> tuple[_ChainedDict, list]:
    blobs = unify_blobs(sources)
    parts = [
        chunk_dict_from_bootstrap(
            bs,
            version=opts.fs_version,
            chunk_size=opts.chunk_size,
            digester=opts.digester,
            explicit_uid_gid=True,
        )
        for bs in sources
    ]
    return _ChainedDict(parts), blobs


def build(
    source: Path,
    bootstrap_out: Path,
    blob_dir: Path,
    opts: BuildOptions,
    parent: Path | None = None,
    chunk_dict: Path | None = None,
) -> BuildResult:
    """Build SOURCE (dir, .tar, .tar.gz, .tar.zst) onto PARENT; write bootstrap and blob."""
    parent_bs = load_bootstrap(parent) if parent else None
    dict_bs = load_bootstrap(chunk_dict) if chunk_dict else None
    sources = [bs for bs in (parent_bs, dict_bs) if bs is not None]
    rafs = opts.rafs
    known, known_blobs = _known_chunks(rafs, sources)
    if rafs.fs_version == 5:
        for blob in known_blobs:
            if blob.compressor != rafs.compressor:
                raise InvalidInput(
                    f"RAFS v5 needs one compressor: blob {blob.blob_id[:12]} uses "
                    f"{blob.compressor}, the build {rafs.compressor}"
                )
    blob_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".blob-", dir=blob_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, ThreadPoolExecutor(1) as compress:
            writer = BlobWriter(out, rafs)
            chunker = Chunker(writer, known, compress)
            try:
                layer, warnings = _read_source(source, chunker.add_file, opts.max_layer_size)
                stored = chunker.close()
            except BaseException:
                chunker.cancel()
                raise
            writer.close_data()
            info = writer.finish()
        for _, node in walk(layer.root):
            if node.chunks:
                node.chunks = resolve(node.chunks, info, stored)
        lower = parent_bs.root if parent_bs else new_root()
        root = apply_layer(lower, layer, opts.whiteout_spec)
        blob_path: Path | None = None
        if info.chunk_count:
            blob_path = blob_dir / info.blob_id
            os.replace(tmp, blob_path)
        else:
            tmp.unlink()
        blobs = list(known_blobs) + ([info] if info.chunk_count else [])
        bs = rafs.bootstrap(root, blobs, opts.prefetch)
        _write_atomically(bootstrap_out, bs)
        return BuildResult(bs, info if info.chunk_count else None, blob_path, warnings)
    finally:
        if tmp.exists():
            tmp.unlink()


def _read_source(source: Path, add_file, max_bytes: int | None) -> tuple[LayerTree, list[str]]:
    warnings: list[str] = []
    if source.is_dir():
        return read_directory(source, add_file, warnings), warnings
    try:
        raw = open(source, "rb")
    except OSError as exc:
        raise InvalidInput(f"{source}: {exc.strerror}") from exc
    with raw:
        try:
            layer = read_layer(open_layer(raw, max_bytes), add_file, warnings, max_bytes)
            return layer, warnings
        except InvalidInput as exc:
            raise InvalidInput(f"{source}: {exc}") from exc


def merge(bootstraps: list[Path], out: Path, opts: BuildOptions) -> Bootstrap:
    """Overlay per-layer bootstraps, lowest first, with OCI whiteout rules (rafs-v6.md §17)."""
    if not bootstraps:
        raise InvalidInput("merge needs at least one bootstrap")
    layers = [load_bootstrap(path) for path in bootstraps]
    first = layers[0]
    for path, bs in zip(bootstraps, layers, strict=True):
        for what in ("version", "chunk_size", "explicit_uid_gid"):
            if getattr(bs, what) != getattr(first, what):
                raise InvalidInput(f"{path}: {what} differs from {bootstraps[0]}")
    blobs = unify_blobs(layers)
    root = new_root()
    for bs in layers:
        root = apply_layer(root, LayerTree(bs.root), opts.whiteout_spec)
    merged = Bootstrap(
        root=root,
        blobs=blobs,
        version=first.version,
        chunk_size=first.chunk_size,
        compressor=first.compressor,
        digester=first.digester,
        explicit_uid_gid=first.explicit_uid_gid,
        prefetch=list(opts.prefetch),
    )
    _write_atomically(out, merged)
    return merged


def _write_atomically(path: Path, bs: Bootstrap) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        write_bootstrap(f, bs)
    os.replace(tmp, path)
