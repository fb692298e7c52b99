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
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from . import mediatype as mt
from .build import dumps
from .digest import COPY_CHUNK, digest_of, verifying
from .errors import DigestMismatch, InvalidManifest, NotFound, Unsupported
from .layout import LAYOUT_FILE, REF_NAME
from .model import MANIFEST_LIMIT, Descriptor, Image, Index, Opener, StaticImage, load_json
from .reference import Reference, parse_reference
from .tarwriter import open_tar_writer

IMAGE_NAME = "io.containerd.image.name"


@dataclass(frozen=True)
class _Member:
    offset: int
    size: int


class _Section(io.RawIOBase):
    """A byte range of a file, opened on its own handle (safe across threads)."""

    def __init__(self, path: Path, m: _Member) -> None:
        super().__init__()
        self._f = open(path, "rb")
        self._f.seek(m.offset)
        self._left = m.size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._left <= 0:
            return 0
        n = self._f.readinto(memoryview(b)[: min(len(b), self._left)])
        self._left -= n or 0
        return n or 0

    def close(self) -> None:
        self._f.close()
        super().close()


def _scan(path: Path) -> dict[str, _Member]:
    members: dict[str, _Member] = {}
    links: dict[str, str] = {}
    try:
        with tarfile.open(path, "r:") as tf:
            for info in tf:
                name = _norm(info.name)
                if info.isfile():
                    members[name] = _Member(info.offset_data, info.size)
                elif info.issym():
                    links[name] = _norm(str(PurePosixPath(name).parent / info.linkname))
                elif info.islnk():
                    links[name] = _norm(info.linkname)
    except tarfile.ReadError as e:
        raise InvalidManifest(f"{path}: not an uncompressed tar archive ({e})") from None
    for name, target in links.items():
        for _ in range(16):  # symlink chains (legacy <id>/layer.tar -> ../<hex>.tar)
            target = links.get(target, target)
        if target in members:
            members[name] = members[target]
    return members


def _norm(name: str) -> str:
    parts: list[str] = []
    for p in PurePosixPath(name.lstrip("/")).parts:
        if p == "..":
            if parts:
                parts.pop()
        elif p != ".":
            parts.append(p)
    return "/".join(parts)


def _read_small(path: Path, members: dict[str, _Member], name: str, what: str) -> bytes:
    m = members.get(_norm(name))
    if m is None:
        raise InvalidManifest(f"{what}: {name} is missing from the archive")
    if m.size > MANIFEST_LIMIT * 4:
        raise InvalidManifest(f"{what}: {name} is too large")
    with _Section(path, m) as f:
        return f.read()


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
    members = _scan(path)
    entries = load_json(_read_small(path, members, "manifest.json", what), what)
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InvalidManifest(f"{what}: manifest.json is not a list of objects")
    entry = _select(entries, tag, what)
    config_name, layer_names = entry.get("Config"), entry.get("Layers")
    if not isinstance(config_name, str) or not isinstance(layer_names, list):
        raise InvalidManifest(f"{what}: manifest.json entry without Config or Layers")
    config = _read_small(path, members, config_name, what)
    config_digest = digest_of(config)
    files = {config_digest: members[_norm(config_name)]}
    raw = _stored_manifest(path, members, config_digest, layer_names, what)
    if raw is None:
        raw = _synthesise(path, members, config, layer_names, files, what)
    else:
        for d in load_json(raw, what)["layers"]:
            files[d["digest"]] = members[_norm(f"blobs/sha256/{d['digest'].split(':')[1]}")]

    def open_blob(desc: Descriptor) -> BinaryIO:
        m = files.get(desc.digest)
        if m is None:
            raise NotFound(f"{what}: no blob {desc.digest}")
        return verifying(_Section(path, m), desc.digest, desc.size, f"{what} blob {desc.digest}")

    return StaticImage(raw, open_blob, name=what)


def _stored_manifest(
    path: Path, members: dict[str, _Member], config_digest: str, layers: list, what: str
) -> bytes | None:
    """The manifest kept in index.json + blobs/ if it describes exactly this entry."""
    if "index.json" not in members:
        return None
    index = load_json(_read_small(path, members, "index.json", what), what)
    for d in index.get("manifests") or [] if isinstance(index, dict) else []:
        if not isinstance(d, dict) or d.get("mediaType") not in mt.IMAGE_MANIFESTS:
            continue
        name = f"blobs/{str(d.get('digest', '')).replace(':', '/')}"
        if _norm(name) not in members:
            continue
        raw = _read_small(path, members, name, what)
        if digest_of(raw) != d.get("digest"):
            raise InvalidManifest(f"{what}: {name} does not match its digest")
        m = load_json(raw, what)
        if (m.get("config") or {}).get("digest") != config_digest:
            continue
        want = [_norm(f"blobs/{ld.get('digest', '').replace(':', '/')}") for ld in m["layers"]]
        if want == [_norm(n) for n in layers] and all(n in members for n in want):
            return raw
    return None


def _synthesise(
    path: Path,
    members: dict[str, _Member],
    config: bytes,
    layer_names: list,
    files: dict[str, _Member],
    what: str,
) -> bytes:
    descs = []
    for name in layer_names:
        m = members.get(_norm(str(name)))
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


def _hash_member(path: Path, m: _Member) -> tuple[str, bytes]:
    import hashlib

    h = hashlib.sha256()
    head = b""
    with _Section(path, m) as f:
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


class ArchiveSink:
    """Writes one image into a new docker-archive, atomically (temp file, then rename)."""

    jobs = 1  # a tar is written in sequence

    def __init__(self, path: str | os.PathLike[str], ref: Reference | None) -> None:
        self.path, self.ref = Path(path), ref
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-")
        self._file = os.fdopen(fd, "wb")
        self._tar = open_tar_writer(self._file)
        self._written: set[str] = set()
        self._entry: dict[str, Any] | None = None
        self._index: dict[str, Any] | None = None
        for d in ("blobs", "blobs/sha256"):
            info = self._info(d, 0)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            self._tar.addfile(info)

    @staticmethod
    def _info(name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uid, info.gid = size, 0, 0o644, 0, 0
        info.uname = info.gname = ""
        return info

    def put_blob(self, desc: Descriptor, opener: Opener, origin: Reference | None = None) -> None:
        if desc.digest in self._written:
            return
        if not desc.digest.startswith("sha256:"):
            raise Unsupported(f"docker-archive: cannot store {desc.digest} (sha256 only)")
        name = f"blobs/sha256/{desc.digest.split(':', 1)[1]}"
        with opener() as src:  # a verified stream (Image.open_blob's contract)
            self._tar.addfile(self._info(name, desc.size), src)
            if src.read(1):  # reaching EOF makes the source check its digest
                raise DigestMismatch(f"blob {desc.digest}: longer than {desc.size} bytes")
        self._written.add(desc.digest)

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

    def _add(self, name: str, data: bytes) -> None:
        self._tar.addfile(self._info(name, len(data)), io.BytesIO(data))

    def close(self, ok: bool = True) -> None:
        try:
            if ok:
                if self._entry is None or self._index is None:
                    raise InvalidManifest("docker-archive: no image was written")
                self._add("index.json", dumps(self._index))
                self._add("manifest.json", dumps([self._entry]))
                self._add("oci-layout", dumps(LAYOUT_FILE))
            self._tar.close()
            self._file.close()
            if ok:
                os.chmod(self._tmp, 0o644)
                os.replace(self._tmp, self.path)
        finally:
            Path(self._tmp).unlink(missing_ok=True)
