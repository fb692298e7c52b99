"""The one image model every medium produces and consumes: Descriptor, Layer, Image, Index.

Modelled on go-containerregistry (see ``../shared/STYLE.md``). A medium implements two methods
per class (``raw_manifest`` and ``open_blob`` for an Image, ``raw_manifest`` and ``child`` for
an Index); everything else (parsing, validation, config, layers, decompression) is derived here.
Manifests are kept as the exact bytes read, so copying between media keeps every digest.
Blob streams are verified (size and digest at EOF) by whoever opens them; nothing is buffered
except manifests and configs, which are size-limited.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, BinaryIO

from . import mediatype as mt
from .digest import check_digest, digest_of
from .errors import InvalidManifest, NotFound, Unsupported

Opener = Callable[[], BinaryIO]
MANIFEST_LIMIT = 4 << 20  # what distribution accepts by default; refuse more, never buffer more
CONFIG_LIMIT = 16 << 20


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]``, e.g. ``linux/arm64/v8``."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidManifest(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Platform:
        fields = (obj.get("os", ""), obj.get("architecture", ""))
        optional = (obj.get("variant"), obj.get("os.version"))
        if not all(isinstance(v, str) for v in fields) or not all(
            v is None or isinstance(v, str) for v in optional
        ):
            raise InvalidManifest(f"platform {obj!r:.200}: fields must be strings")
        return cls(*fields, *optional)

    def to_json(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.variant:
            out["variant"] = self.variant
        return out

    def matches(self, other: Platform) -> bool:
        """Same os and architecture; variants compared with containerd's defaults (arm64=v8)."""
        return (
            self.os == other.os
            and self.architecture == other.architecture
            and _variant(self) == _variant(other)
        )

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def _variant(p: Platform) -> str | None:
    if p.variant:
        return p.variant
    return {"arm64": "v8", "arm": "v7"}.get(p.architecture)


@dataclass(frozen=True)
class Descriptor:
    """An OCI descriptor. ``raw`` is the JSON object as found, so unknown fields survive."""

    media_type: str
    digest: str
    size: int
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, obj: Any, what: str) -> Descriptor:
        if not isinstance(obj, dict):
            raise InvalidManifest(f"{what}: descriptor is not a JSON object")
        media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
        if not isinstance(media_type, str) or not media_type:
            raise InvalidManifest(f"{what}: descriptor without mediaType")
        if not isinstance(digest, str):
            raise InvalidManifest(f"{what}: descriptor without digest")
        try:
            check_digest(digest)
        except Exception as e:
            raise InvalidManifest(f"{what}: {e}") from None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidManifest(f"{what}: descriptor size {size!r} is not a non-negative int")
        return cls(media_type, digest, size, obj)

    @classmethod
    def of(cls, media_type: str, data: bytes, **extra: Any) -> Descriptor:
        """Descriptor of in-memory bytes (a manifest or config being written)."""
        raw = {"mediaType": media_type, "digest": digest_of(data), "size": len(data), **extra}
        return cls(media_type, raw["digest"], len(data), raw)

    @property
    def annotations(self) -> dict[str, str]:
        return _annotations(self.raw.get("annotations"), f"descriptor {self.digest}")

    @property
    def platform(self) -> Platform | None:
        p = self.raw.get("platform")
        return Platform.from_json(p) if isinstance(p, dict) else None

    @property
    def urls(self) -> list[str]:
        urls = self.raw.get("urls") or []
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise InvalidManifest(f"descriptor {self.digest}: urls is not a list of strings")
        return list(urls)

    def to_json(self) -> dict[str, Any]:
        out = dict(self.raw)
        out.update(mediaType=self.media_type, digest=self.digest, size=self.size)
        return out


class Layer:
    """One layer: its descriptor, its diff_id (from the config) and an opener.

    ``open()`` returns the compressed stream as stored, verified at EOF. ``open_uncompressed()``
    decompresses according to the media type (gzip, zstd or none).
    """

    def __init__(self, descriptor: Descriptor, opener: Opener, diff_id: str | None = None):
        self.descriptor = descriptor
        self.diff_id = diff_id
        self._opener = opener

    @property
    def digest(self) -> str:
        return self.descriptor.digest

    @property
    def size(self) -> int:
        return self.descriptor.size

    @property
    def media_type(self) -> str:
        return self.descriptor.media_type

    @property
    def compression(self) -> str:
        return mt.layer_compression(self.media_type, f"layer {self.digest}")

    def open(self) -> BinaryIO:
        mt.check_distributable(self.media_type, f"layer {self.digest}")
        return self._opener()

    def open_uncompressed(self) -> BinaryIO:
        compression = self.compression
        raw = self.open()
        if compression == "none":
            return raw
        if compression == "gzip":
            return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return io.BufferedReader(reader, 1 << 20)

    def __repr__(self) -> str:
        return f"Layer({self.media_type}, {self.digest}, {self.size})"


def _annotations(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise InvalidManifest(f"{what}: annotations are not a map of strings")
    return dict(value)


def load_json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidManifest(f"{what}: not valid JSON ({e})") from None


def manifest_media_type(data: bytes, announced: str | None, what: str) -> str:
    """Media type of manifest bytes: the body's ``mediaType``, else what was announced, else
    sniffed from its shape. Raises Unsupported for schema 1 and unknown types."""
    obj = load_json(data, what)
    if not isinstance(obj, dict):
        raise InvalidManifest(f"{what}: manifest is not a JSON object")
    if obj.get("schemaVersion") == 1:
        mt.check_manifest_type(mt.DOCKER_SCHEMA1, what)
    body = obj.get("mediaType")
    if body is not None and not isinstance(body, str):
        raise InvalidManifest(f"{what}: mediaType is not a string")
    if body is not None and announced and body != announced and announced in mt.MANIFEST_ACCEPT:
        raise InvalidManifest(f"{what}: body says {body}, descriptor says {announced}")
    found = body or announced
    if not found or found in ("application/json", "application/octet-stream", "text/plain"):
        found = mt.OCI_INDEX if "manifests" in obj else mt.OCI_MANIFEST
    return mt.check_manifest_type(found, what)


class _Manifested(ABC):
    """Shared part of Image and Index: raw manifest bytes, descriptor and parsed JSON."""

    def __init__(self, descriptor: Descriptor | None = None, name: str = "image") -> None:
        self._parent_descriptor = descriptor
        self.name = name

    @abstractmethod
    def raw_manifest(self) -> bytes:
        """The manifest exactly as stored (its digest is this object's digest)."""

    @cached_property
    def _raw(self) -> bytes:
        data = self.raw_manifest()
        if len(data) > MANIFEST_LIMIT:
            raise InvalidManifest(f"{self.name}: manifest larger than {MANIFEST_LIMIT} bytes")
        return data

    @cached_property
    def media_type(self) -> str:
        announced = self._parent_descriptor.media_type if self._parent_descriptor else None
        return manifest_media_type(self._raw, announced, self.name)

    @cached_property
    def descriptor(self) -> Descriptor:
        """Descriptor of the manifest; keeps platform/annotations given by a parent index."""
        base = dict(self._parent_descriptor.raw) if self._parent_descriptor else {}
        base.update(mediaType=self.media_type, digest=digest_of(self._raw), size=len(self._raw))
        return Descriptor(self.media_type, base["digest"], base["size"], base)

    @property
    def digest(self) -> str:
        return self.descriptor.digest

    @property
    def size(self) -> int:
        return self.descriptor.size

    @cached_property
    def manifest(self) -> dict[str, Any]:
        obj = load_json(self._raw, self.name)
        if not isinstance(obj, dict):
            raise InvalidManifest(f"{self.name}: manifest is not a JSON object")
        if obj.get("schemaVersion") != 2:
            raise InvalidManifest(f"{self.name}: schemaVersion is {obj.get('schemaVersion')!r}")
        return obj

    @property
    def annotations(self) -> dict[str, str]:
        return _annotations(self.manifest.get("annotations"), self.name)


class Image(_Manifested):
    """A single-platform image: manifest, config and layers."""

    # Whether the medium answers ``read_range`` and ``stat_blob`` (a registry does, with Range
    # and HEAD requests): callers test this capability, never the storage class.
    ranged = False

    @abstractmethod
    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        """Verified stream of a blob (config or layer) referenced by this image."""

    def read_range(self, descriptor: Descriptor, offset: int, length: int) -> bytes:
        """``length`` bytes of a blob from ``offset``, fetched alone (only where ``ranged``)."""
        raise Unsupported(f"{self.name}: its medium cannot read part of a blob")

    def stat_blob(self, digest: str) -> int | None:
        """Size of blob ``digest`` in the image's repository, None if absent (``ranged``)."""
        raise Unsupported(f"{self.name}: its medium cannot look blobs up by digest")

    @cached_property
    def manifest(self) -> dict[str, Any]:
        obj = super().manifest
        if not mt.is_image(self.media_type):
            raise InvalidManifest(f"{self.name}: {self.media_type} is not an image manifest")
        if not isinstance(obj.get("layers"), list):
            raise InvalidManifest(f"{self.name}: manifest has no layers list")
        return obj

    @cached_property
    def config_descriptor(self) -> Descriptor:
        return Descriptor.from_json(self.manifest.get("config"), f"{self.name} config")

    @cached_property
    def layer_descriptors(self) -> list[Descriptor]:
        return [
            Descriptor.from_json(d, f"{self.name} layer {i}")
            for i, d in enumerate(self.manifest["layers"])
        ]

    @cached_property
    def raw_config(self) -> bytes:
        desc = self.config_descriptor
        if desc.size > CONFIG_LIMIT:
            raise InvalidManifest(f"{self.name}: config larger than {CONFIG_LIMIT} bytes")
        with self.open_blob(desc) as f:
            data = f.read()
            f.read()
        return data

    @cached_property
    def config(self) -> dict[str, Any]:
        obj = load_json(self.raw_config, f"{self.name} config")
        if not isinstance(obj, dict):
            raise InvalidManifest(f"{self.name}: config is not a JSON object")
        return obj

    @property
    def platform(self) -> Platform | None:
        if self._parent_descriptor and self._parent_descriptor.platform:
            return self._parent_descriptor.platform
        return None

    def layers(self) -> list[Layer]:
        """Layers in manifest order; diff_ids come from the config when it has them."""
        descs = self.layer_descriptors
        diff_ids: list[Any] = []
        if self.config_descriptor.media_type in (mt.OCI_CONFIG, mt.DOCKER_CONFIG, mt.NYDUS_CONFIG):
            rootfs = self.config.get("rootfs") or {}
            found = rootfs.get("diff_ids") or [] if isinstance(rootfs, dict) else None
            if not isinstance(found, list):
                raise InvalidManifest(f"{self.name}: config rootfs.diff_ids is not a list")
            diff_ids = found
        out = []
        for i, d in enumerate(descs):
            diff_id = diff_ids[i] if i < len(diff_ids) and isinstance(diff_ids[i], str) else None
            out.append(Layer(d, _bind(self.open_blob, d), diff_id))
        return out

    def blob_descriptors(self) -> list[Descriptor]:
        """Every blob this image references: layers (distributable ones), then the config."""
        return [d for d in self.layer_descriptors if not mt.is_foreign(d.media_type)] + [
            self.config_descriptor
        ]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


def _bind(fn: Callable[[Descriptor], BinaryIO], d: Descriptor) -> Opener:
    return lambda: fn(d)


class Index(_Manifested):
    """A multi-platform index (OCI index or Docker manifest list)."""

    @abstractmethod
    def child(self, descriptor: Descriptor) -> Image | Index:
        """The image or nested index named by one of ``manifests``."""

    @cached_property
    def manifest(self) -> dict[str, Any]:
        obj = super().manifest
        if not mt.is_index(self.media_type):
            raise InvalidManifest(f"{self.name}: {self.media_type} is not an index")
        if not isinstance(obj.get("manifests"), list):
            raise InvalidManifest(f"{self.name}: index has no manifests list")
        return obj

    @cached_property
    def manifests(self) -> list[Descriptor]:
        return [
            Descriptor.from_json(d, f"{self.name} manifest {i}")
            for i, d in enumerate(self.manifest["manifests"])
        ]

    def children(self) -> Iterator[Image | Index]:
        for d in self.manifests:
            yield self.child(d)

    def image_for(self, platform: Platform) -> Image:
        """The image for ``platform``; NotFound lists what the index offers."""
        for d in self.manifests:
            p = d.platform
            if p is not None and p.matches(platform) and mt.is_image(d.media_type):
                img = self.child(d)
                assert isinstance(img, Image)
                return img
        offered = ", ".join(str(d.platform) for d in self.manifests if d.platform) or "none"
        raise NotFound(f"{self.name}: no image for platform {platform} (offers: {offered})")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


def child_of(
    descriptor: Descriptor, raw: bytes, open_blob: Callable[[Descriptor], BinaryIO], name: str
) -> Image | Index:
    """Build a StaticImage/StaticIndex child from manifest bytes and a blob opener."""
    if mt.is_index(descriptor.media_type):
        return LazyIndex(raw, descriptor, open_blob, name)
    if mt.is_image(descriptor.media_type):
        return StaticImage(raw, open_blob, descriptor, name)
    mt.check_manifest_type(descriptor.media_type, name)
    raise Unsupported(f"{name}: {descriptor.media_type}")  # pragma: no cover


class StaticImage(Image):
    """An image from manifest bytes and a function that opens its blobs by descriptor."""

    def __init__(
        self,
        raw: bytes,
        open_blob: Callable[[Descriptor], BinaryIO],
        descriptor: Descriptor | None = None,
        name: str = "image",
    ) -> None:
        super().__init__(descriptor, name)
        self._bytes = raw
        self._open = open_blob

    def raw_manifest(self) -> bytes:
        return self._bytes

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        return self._open(descriptor)


class LazyIndex(Index):
    """An index whose children are manifests reachable through the same blob opener."""

    def __init__(
        self,
        raw: bytes,
        descriptor: Descriptor | None,
        open_blob: Callable[[Descriptor], BinaryIO],
        name: str = "index",
    ) -> None:
        super().__init__(descriptor, name)
        self._bytes = raw
        self._open = open_blob

    def raw_manifest(self) -> bytes:
        return self._bytes

    def child(self, descriptor: Descriptor) -> Image | Index:
        if descriptor.size > MANIFEST_LIMIT:
            raise InvalidManifest(f"{self.name}: child manifest over {MANIFEST_LIMIT} bytes")
        with self._open(descriptor) as f:
            data = f.read()
            f.read()
        return child_of(descriptor, data, self._open, f"{self.name}@{descriptor.digest}")


class StaticIndex(Index):
    """An index built in memory over already-opened children (keyed by manifest digest)."""

    def __init__(self, raw: bytes, children: Mapping[str, Image | Index], name: str = "index"):
        super().__init__(None, name)
        self._bytes = raw
        self._children = dict(children)

    def raw_manifest(self) -> bytes:
        return self._bytes

    def child(self, descriptor: Descriptor) -> Image | Index:
        try:
            obj = self._children[descriptor.digest]
        except KeyError:
            raise NotFound(f"{self.name}: no child {descriptor.digest}") from None
        # a copy that knows the platform/annotations the index gives it; the caller's object
        # stays as it was
        child = copy.copy(obj)
        child._parent_descriptor = descriptor
        child.__dict__.pop("descriptor", None)
        return child
