"""The docker-archive medium (``docker save`` / ``docker load`` tar): ``docker-archive:FILE[:REF]``.

The archive is an uncompressed tar with a ``manifest.json`` list of ``{Config, RepoTags,
Layers}``. rconv writes the layout Docker 25 writes: every blob under ``blobs/sha256/<hex>``
plus ``index.json`` and ``oci-layout``, so the archive is also an OCI layout and keeps the
exact manifest bytes; layers are stored as they are in the source (compressed or not).
Reading prefers that manifest when it matches the ``manifest.json`` entry; otherwise (older
``docker save`` output) it synthesises a Docker v2 schema 2 manifest (OCI if a layer is zstd)
by hashing each layer and sniffing its compression. Members are read in place, never
extracted.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, BinaryIO

from . import mediatype as mt
from .build import dumps
from .digest import COPY_CHUNK, digest_of, verifying
from .errors import InvalidManifest, NotFound, Unsupported
from .layout import LAYOUT_FILE, REF_NAME
from .model import Descriptor, Image, Index, StaticImage, load_json
from .reference import Reference, parse_reference
from .tarlayout import Member, Section, TarSink, norm, read_small, scan

IMAGE_NAME = "io.containerd.image.name"


def _select(entries: list[dict[str, Any]], tag: str | None, what: str) -> dict[str, Any]:
    if tag is None:
        if len(entries) != 1:
            raise NotFound(f"{what}: holds {len(entries)} images; name one with :REF")
        return entries[0]
    want = str(parse_reference(tag))
    for e in entries:
        for t in e.get("RepoTags") or []:
            try:
                if str(parse_reference(t)) == want:
                    return e
            except Exception:
                continue
    tags = [t for e in entries for t in (e.get("RepoTags") or [])]
    raise NotFound(f"{what}: no image tagged {tag} (has: {', '.join(tags) or 'none'})")


def open_archive(path: str | os.PathLike[str], tag: str | None = None) -> Image:
    """The image of a docker-archive (selected by ``tag`` when it holds several)."""
    path = Path(path)
    what = f"docker-archive:{path}" + (f":{tag}" if tag else "")
    members = scan(path, what)
    entries = load_json(read_small(path, members, "manifest.json", what), what)
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InvalidManifest(f"{what}: manifest.json is not a list of objects")
    entry = _select(entries, tag, what)
    config_name, layer_names = entry.get("Config"), entry.get("Layers")
    if not isinstance(config_name, str) or not isinstance(layer_names, list):
        raise InvalidManifest(f"{what}: manifest.json entry without Config or Layers")
    config = read_small(path, members, config_name, what)
    config_digest = digest_of(config)
    files = {config_digest: members[norm(config_name)]}
    raw = _stored_manifest(path, members, config_digest, layer_names, what)
    if raw is None:
        raw = _synthesise(path, members, config, layer_names, files, what)
    else:
        for d in load_json(raw, what)["layers"]:
            files[d["digest"]] = members[norm(f"blobs/sha256/{d['digest'].split(':')[1]}")]

    def open_blob(desc: Descriptor) -> BinaryIO:
        m = files.get(desc.digest)
        if m is None:
            raise NotFound(f"{what}: no blob {desc.digest}")
        return verifying(Section(path, m), desc.digest, desc.size, f"{what} blob {desc.digest}")

    return StaticImage(raw, open_blob, name=what)


def _stored_manifest(
    path: Path, members: dict[str, Member], config_digest: str, layers: list, what: str
) -> bytes | None:
    """The manifest kept in index.json + blobs/ if it describes exactly this entry."""
    if "index.json" not in members:
        return None
    index = load_json(read_small(path, members, "index.json", what), what)
    for d in index.get("manifests") or [] if isinstance(index, dict) else []:
        if not isinstance(d, dict) or d.get("mediaType") not in mt.IMAGE_MANIFESTS:
            continue
        name = f"blobs/{str(d.get('digest', '')).replace(':', '/')}"
        if norm(name) not in members:
            continue
        raw = read_small(path, members, name, what)
        if digest_of(raw) != d.get("digest"):
            raise InvalidManifest(f"{what}: {name} does not match its digest")
        m = load_json(raw, what)
        if (m.get("config") or {}).get("digest") != config_digest:
            continue
        want = [norm(f"blobs/{ld.get('digest', '').replace(':', '/')}") for ld in m["layers"]]
        if want == [norm(n) for n in layers] and all(n in members for n in want):
            return raw
    return None


def _synthesise(
    path: Path,
    members: dict[str, Member],
    config: bytes,
    layer_names: list,
    files: dict[str, Member],
    what: str,
) -> bytes:
    descs = []
    for name in layer_names:
        m = members.get(norm(str(name)))
        if m is None:
            raise InvalidManifest(f"{what}: layer {name} is missing from the archive")
        digest, head = _hash_member(path, m)
        files[digest] = m
        descs.append((_sniff(head), digest, m.size))
    oci = any(c == "zstd" for c, _, _ in descs)
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST if oci else mt.DOCKER_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG if oci else mt.DOCKER_CONFIG,
                   "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": mt.layer_type(c, oci=oci), "digest": d, "size": s}
                   for c, d, s in descs],
    }  # fmt: skip
    return dumps(manifest)


def _hash_member(path: Path, m: Member) -> tuple[str, bytes]:
    import hashlib

    h = hashlib.sha256()
    head = b""
    with Section(path, m) as f:
        while chunk := f.read(COPY_CHUNK):
            head = head or chunk[:8]
            h.update(chunk)
    return "sha256:" + h.hexdigest(), head


def _sniff(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    return "none"


class ArchiveSink(TarSink):
    """Writes one image into a new docker-archive, atomically (temp file, then rename)."""

    kind = "docker-archive"

    def __init__(self, path: str | os.PathLike[str], ref: Reference | None) -> None:
        super().__init__(path)
        self.ref = ref
        self._entry: dict[str, Any] | None = None
        self._index: dict[str, Any] | None = None

    def blob_name(self, digest: str) -> str:
        if not digest.startswith("sha256:"):
            raise Unsupported(f"docker-archive: cannot store {digest} (sha256 only)")
        return super().blob_name(digest)

    def put_manifest(self, obj: Image | Index, tag: str | None, top: bool) -> None:
        if isinstance(obj, Index):
            raise Unsupported(
                "docker-archive holds single-platform images; select a platform of the index"
            )
        raw = obj.raw_manifest()
        self.put_blob(obj.descriptor, lambda: io.BytesIO(raw))
        blob = "blobs/sha256/{}".format
        self._entry = {
            "Config": blob(obj.config_descriptor.digest.split(":", 1)[1]),
            "RepoTags": [self.ref.familiar()] if self.ref else [],
            "Layers": [blob(d.digest.split(":", 1)[1]) for d in obj.layer_descriptors],
        }
        entry = {"mediaType": obj.media_type, "digest": obj.digest, "size": obj.size}
        if self.ref:
            entry["annotations"] = {IMAGE_NAME: str(self.ref), REF_NAME: self.ref.tag or "latest"}
        self._index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [entry]}

    def finish(self) -> None:
        if self._entry is None or self._index is None:
            raise InvalidManifest("docker-archive: no image was written")
        self.add("index.json", dumps(self._index))
        self.add("manifest.json", dumps([self._entry]))
        self.add("oci-layout", dumps(LAYOUT_FILE))
