"""Build images and indexes in memory from blobs (for the converter and for tests).

Manifests are serialised compactly with a fixed key order, so the same inputs give the same
bytes and digests. Blob sources are openers (re-openable), never buffered beyond what the
caller hands in.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from . import mediatype as mt
from .digest import COPY_CHUNK, verifying
from .errors import InvalidManifest, NotFound
from .model import Descriptor, Image, Index, Opener, Platform, StaticImage, StaticIndex


def dumps(obj: Any) -> bytes:
    """The one JSON serialisation rconv writes manifests, indexes and configs with."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Blob:
    """A blob to put in an image: descriptor fields plus an opener for its bytes."""

    media_type: str
    digest: str
    size: int
    opener: Opener = field(compare=False, repr=False)
    annotations: Mapping[str, str] | None = None
    # The digest was computed from these very bytes as this process wrote them (a converter's
    # own output files): re-hashing them on every read would only cost time.
    digest_known_good: bool = field(default=False, compare=False)

    @classmethod
    def from_bytes(cls, data: bytes, media_type: str, **kw: Any) -> Blob:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        return cls(media_type, digest, len(data), lambda: io.BytesIO(data), **kw)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], media_type: str, **kw: Any) -> Blob:
        """Hash the file once (streaming); the opener re-reads it."""
        h, size = hashlib.sha256(), 0
        with open(path, "rb") as f:
            while chunk := f.read(COPY_CHUNK):
                h.update(chunk)
                size += len(chunk)
        return cls(media_type, f"sha256:{h.hexdigest()}", size, lambda: open(path, "rb"), **kw)

    def descriptor(self) -> Descriptor:
        raw: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            raw["annotations"] = dict(self.annotations)
        return Descriptor(self.media_type, self.digest, self.size, raw)

    def open(self) -> BinaryIO:
        if self.digest_known_good:
            return self.opener()
        return verifying(self.opener(), self.digest, self.size, f"blob {self.digest}")


def build_image(
    config: Mapping[str, Any] | bytes,
    layers: Sequence[Blob],
    *,
    oci: bool = True,
    config_media_type: str | None = None,
    annotations: Mapping[str, str] | None = None,
    name: str = "image",
) -> StaticImage:
    """An image whose manifest lists ``layers`` in order and references ``config``."""
    config_bytes = config if isinstance(config, bytes) else dumps(config)
    cfg = Blob.from_bytes(
        config_bytes, config_media_type or (mt.OCI_CONFIG if oci else mt.DOCKER_CONFIG)
    )
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST if oci else mt.DOCKER_MANIFEST,
        "config": cfg.descriptor().to_json(),
        "layers": [b.descriptor().to_json() for b in layers],
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    blobs = {b.digest: b for b in (*layers, cfg)}

    def open_blob(desc: Descriptor) -> BinaryIO:
        try:
            return blobs[desc.digest].open()
        except KeyError:
            raise NotFound(f"{name}: no blob {desc.digest}") from None

    return StaticImage(dumps(manifest), open_blob, name=name)


def build_index(
    images: Sequence[Image | Index],
    *,
    oci: bool = True,
    platforms: Sequence[Platform | None] | None = None,
    annotations: Mapping[str, str] | None = None,
    name: str = "index",
) -> StaticIndex:
    """An index over ``images``; each image's platform comes from ``platforms`` or its config."""
    entries, children = [], {}
    for i, obj in enumerate(images):
        desc = obj.descriptor.to_json()
        plat = platforms[i] if platforms else None
        if plat is None and isinstance(obj, Image):
            cfg = obj.config
            if cfg.get("os") and cfg.get("architecture"):
                plat = Platform(cfg["os"], cfg["architecture"], cfg.get("variant"))
        if plat is not None:
            desc["platform"] = plat.to_json()
        entries.append(desc)
        children[obj.digest] = obj
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX if oci else mt.DOCKER_MANIFEST_LIST,
        "manifests": entries,
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    if len(children) != len(entries):
        raise InvalidManifest(f"{name}: the same manifest is listed twice")
    return StaticIndex(dumps(manifest), children, name=name)
