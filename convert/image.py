"""The OCI side of a Nydus image: bootstrap layer, config and manifest rewrite, indexes.

Spec: ../shared/spec/image.md §1 (layer order), §2 (media types), §3 (annotations),
§5 (bootstrap layer), §7 (config), §8 (manifest), §9 (indexes), §18 (checklist).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import queue
import shutil
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from isal.igzip import IGzipFile

from convert.errors import ImageError
from convert.nydus import (
    A_BLOB,
    A_BOOTSTRAP,
    A_BUILDER,
    A_EMPTY_LAYER,
    A_FS_VERSION,
    A_SOURCE_DIGEST,
    A_SOURCE_REF,
    BOOTSTRAP_NAME,
    LEGACY_BOOTSTRAP_NAME,
    MANIFEST_ARTIFACT,
)
from registry import mediatype as mt
from registry.build import Blob, build_image, build_index, dumps
from registry.model import Descriptor, Image, Index, Platform, StaticImage, StaticIndex
from registry.tarwriter import open_tar_writer

# diff_id of the merge-platform empty layer: sha256 of an empty tar (1024 zero bytes, §9.3).
EMPTY_LAYER_DIFF_ID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
# The bootstrap layer is compressed by ISA-L at its level 1: 20x faster than zlib's level 6
# on bootstrap bytes for 9 % more (docs/decisions.md). Its bytes are those of the installed
# isal release, as they were those of the system zlib before; the diff_id never changes.
BOOTSTRAP_LEVEL = 1
EMPTY_HISTORY = {"created_by": "Nydus Converter", "comment": "Nydus Empty Layer"}
BOOTSTRAP_HISTORY = {"created_by": "Nydus Converter", "comment": "Nydus Bootstrap Layer"}
DICT_HISTORY = {"created_by": "Nydus Converter", "comment": "Nydus Chunk Dict Blob"}


def is_nydus(image: Image) -> bool:
    """A manifest whose last layer is a Nydus bootstrap is already converted (§8)."""
    layers = image.layer_descriptors
    return bool(layers) and layers[-1].annotations.get(A_BOOTSTRAP) == "true"


def write_bootstrap_layer(
    size: int, parts: Iterator[bytes | bytearray], out: Path
) -> tuple[str, str, int]:
    """Gzip tar holding image/ and image/image.boot, deterministic (§5.1), from the
    bootstrap's ``size`` and its bytes in ``parts`` (``rafs.bootstrap.bootstrap_parts``).

    The next part is made on another thread while this one is compressed (ISA-L lets go
    of the GIL): on a 250k-entry image the chunk table is packed while the 26 MB before it are
    compressed. Returns (layer digest, diff_id, size).
    """
    raw_hash = hashlib.sha256()

    class _Hashing:
        def __init__(self, inner) -> None:
            self.inner = inner

        def write(self, data: bytes) -> int:
            raw_hash.update(data)
            return self.inner.write(data)

        def flush(self) -> None:
            self.inner.flush()

    with open(out, "wb") as f, _PartsReader(parts) as src:
        with IGzipFile(
            filename="", fileobj=f, mode="wb", compresslevel=BOOTSTRAP_LEVEL, mtime=0
        ) as gz:
            tar = open_tar_writer(_Hashing(gz), format=tarfile.USTAR_FORMAT)
            directory = tarfile.TarInfo("image")
            directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(directory)
            entry = tarfile.TarInfo(BOOTSTRAP_NAME)
            entry.mode, entry.mtime = 0o444, 0
            entry.size = size
            try:
                tar.addfile(entry, src)
            except BaseException:
                # The layer is abandoned: keep tarfile's stream from flushing its buffer into
                # the closed gzip when it is collected.
                tar.fileobj.closed = True  # type: ignore[attr-defined]  # tarfile._Stream
                raise
            tar.close()
    digest, layer_size = _file_digest(out)
    return digest, "sha256:" + raw_hash.hexdigest(), layer_size


class _PartsReader:
    """A reader over consecutive parts, each made by a thread of its own one step ahead."""

    def __init__(self, parts: Iterator[bytes | bytearray]) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._current = memoryview(b"")
        self._done = False
        self._thread = threading.Thread(
            target=self._make, args=(parts,), name="rconv-bootstrap", daemon=True
        )
        self._thread.start()

    def _make(self, parts: Iterator[bytes | bytearray]) -> None:
        try:
            for part in parts:
                self._queue.put(part)
        except BaseException as exc:  # handed to the reader, which raises it
            self._queue.put(exc)
            return
        self._queue.put(None)

    def read(self, n: int = -1, /) -> bytes:
        """``n`` bytes (all with -1), fewer only at the end: tarfile's copy insists on full
        reads."""
        if n < 0:
            n = sys.maxsize
        pieces = []
        while n > 0:
            if not self._current:
                if self._done:
                    break
                part = self._queue.get()
                if isinstance(part, BaseException):
                    self._done = True
                    raise part
                if part is None:
                    self._done = True
                    break
                self._current = memoryview(part)
            piece, self._current = self._current[:n], self._current[n:]
            pieces.append(piece)
            n -= len(piece)
        return b"".join(pieces)

    def __enter__(self) -> _PartsReader:
        return self

    def __exit__(self, *exc) -> None:
        while not self._done:  # let the maker finish (or fail) before its parts go away
            try:
                self.read(1 << 30)
            except BaseException:  # noqa: B036 - an error is already on its way up
                break
        self._thread.join()


def extract_bootstrap(image: Image, out: Path) -> None:
    """Stream ``image/image.boot`` (or a legacy root ``image.boot``) of a Nydus image's
    bootstrap layer into ``out``."""
    layer = image.layers()[-1]
    with layer.open_uncompressed() as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            if member.name in (BOOTSTRAP_NAME, LEGACY_BOOTSTRAP_NAME) and member.isfile():
                src = tar.extractfile(member)
                assert src is not None
                with open(out, "wb") as f:
                    shutil.copyfileobj(src, f, 1 << 20)
                return
    raise ImageError(f"{image.name}: the bootstrap layer has no {BOOTSTRAP_NAME}")


def _file_digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            size += len(block)
    return "sha256:" + h.hexdigest(), size


def rewrite_config(raw_config: bytes, diff_ids: Sequence[str], dict_blobs: int) -> bytes:
    """Source config with rootfs and history rewritten; everything else untouched (§7)."""
    config: dict[str, Any] = json.loads(raw_config)
    config["rootfs"] = {"type": "layers", "diff_ids": list(diff_ids)}
    history = list(config.get("history") or [])
    history += [dict(DICT_HISTORY) for _ in range(dict_blobs)]
    history.append(dict(BOOTSTRAP_HISTORY))
    config["history"] = history
    return dumps(config)


def nydus_image(
    source: Image,
    blob_layers: Sequence[Blob],
    bootstrap: Blob,
    bootstrap_diff_id: str,
    dict_layers: Sequence[Blob],
    fs_version: int,
    source_ref: str,
    builder: str,
    config_media_type: str | None = None,
) -> Image:
    """The converted image: blob layers, dict blobs, bootstrap last (§1, §7, §8)."""
    layers = list(blob_layers) + list(dict_layers) + [bootstrap]
    diff_ids = [b.digest for b in blob_layers] + [b.digest for b in dict_layers]
    diff_ids.append(bootstrap_diff_id)
    config = rewrite_config(source.raw_config, diff_ids, len(dict_layers))
    annotations = dict(source.annotations)
    annotations.update(
        {
            A_SOURCE_DIGEST: source.digest,
            A_SOURCE_REF: source_ref,
            A_FS_VERSION: str(fs_version),
            A_BUILDER: builder,
        }
    )
    return build_image(
        config,
        layers,
        config_media_type=config_media_type,
        annotations=annotations,
        name=source_ref,
    )


def blob_layer(opener: Callable[[], BinaryIO], digest: str, size: int) -> Blob:
    return Blob(mt.NYDUS_BLOB, digest, size, opener, annotations={A_BLOB: "true"})


def bootstrap_layer(
    opener: Callable[[], BinaryIO], digest: str, size: int, fs_version: int, own_file: bool
) -> Blob:
    """``own_file``: the bytes are a file this process wrote and hashed, not read again."""
    annotations = {A_BOOTSTRAP: "true", A_FS_VERSION: str(fs_version)}
    return Blob(mt.OCI_LAYER_GZIP, digest, size, opener, annotations, digest_known_good=own_file)


def platform_of(image: Image, fallback: Platform | None = None) -> Platform | None:
    cfg = image.config
    if cfg.get("os") and cfg.get("architecture"):
        return Platform(cfg["os"], cfg["architecture"], cfg.get("variant"))
    return fallback


def nydus_index(images: Sequence[Image], platforms: Sequence[Platform | None], annotations):
    """Plain multi-platform output: an OCI index of the Nydus manifests (§9.2)."""
    return build_index(images, platforms=list(platforms), annotations=annotations)


def index_annotations(fs_version: int, source: Index | Image, source_ref: str, builder: str):
    return {
        A_SOURCE_DIGEST: source.digest,
        A_SOURCE_REF: source_ref,
        A_FS_VERSION: str(fs_version),
        A_BUILDER: builder,
    }


def with_empty_layer(source: Image) -> Image:
    """The OCI manifest of a merge-platform index: one empty layer prepended (§9.3 item 2).

    The empty layer shifts every chain ID so that the snapshotter's placeholder snapshots for
    this OCI image are never shared with a plain image using the same layers.
    """
    manifest: dict[str, Any] = json.loads(source.raw_manifest())
    config: dict[str, Any] = json.loads(source.raw_config)
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["diff_ids"] = [EMPTY_LAYER_DIFF_ID, *rootfs.get("diff_ids", [])]
    config["history"] = [dict(EMPTY_HISTORY), *(config.get("history") or [])]
    config_bytes = dumps(config)
    empty = gzip.compress(bytes(1024), compresslevel=6, mtime=0)
    oci = manifest.get("mediaType", mt.OCI_MANIFEST) == mt.OCI_MANIFEST
    empty_desc = Blob.from_bytes(
        empty,
        mt.OCI_LAYER_GZIP if oci else mt.DOCKER_LAYER_GZIP,
        annotations={A_EMPTY_LAYER: "true"},
    )
    config_desc = Blob.from_bytes(config_bytes, manifest["config"]["mediaType"])
    manifest["layers"] = [empty_desc.descriptor().to_json(), *manifest["layers"]]
    manifest["config"] = {
        **manifest["config"],
        "digest": config_desc.digest,
        "size": len(config_bytes),
    }
    manifest.setdefault("annotations", {})[A_SOURCE_DIGEST] = source.digest
    own = {empty_desc.digest: empty_desc, config_desc.digest: config_desc}

    def open_blob(desc: Descriptor):
        blob = own.get(desc.digest)
        return blob.open() if blob is not None else source.open_blob(desc)

    return StaticImage(dumps(manifest), open_blob, name=source.name)


def merged_platform_index(
    pairs: Sequence[tuple[Image, Image, Image, Platform]], annotations: dict[str, str]
) -> StaticIndex:
    """OCI manifests first, then the Nydus ones marked by artifactType (§9.3).

    ``pairs`` holds (original OCI image, rewritten OCI image, Nydus image, platform).
    """
    oci_entries, nydus_entries, children = [], [], {}
    for original, rewritten, nydus, plat in pairs:
        desc = rewritten.descriptor.to_json()
        desc["platform"] = plat.to_json()
        desc["annotations"] = {A_SOURCE_DIGEST: original.digest}
        oci_entries.append(desc)
        ndesc = nydus.descriptor.to_json()
        ndesc["platform"] = plat.to_json()
        ndesc["artifactType"] = MANIFEST_ARTIFACT
        nydus_entries.append(ndesc)
        children[rewritten.digest] = rewritten
        children[nydus.digest] = nydus
    index = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": oci_entries + nydus_entries,
        "annotations": annotations,
    }
    return StaticIndex(dumps(index), children, name="merged-platform index")
