"""The OCI image layout medium (OCI image-spec "Image Layout"): ``oci:DIR[:TAG]``.

Reading: ``oci-layout`` must say version 1.0.0; ``index.json`` lists the top manifests, a TAG
selects the one annotated ``org.opencontainers.image.ref.name`` = TAG (without TAG the index
must hold exactly one). Blobs are ``blobs/<alg>/<hex>``, verified as they are read.
Writing: blobs land through a temporary file renamed into place after their digest checked;
``index.json`` is rewritten atomically, replacing an entry with the same TAG.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from .build import dumps
from .digest import COPY_CHUNK, check_digest, verifying
from .errors import InvalidManifest, NotFound
from .model import MANIFEST_LIMIT, Descriptor, Image, Index, Opener, child_of, load_json
from .reference import Reference

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_FILE = {"imageLayoutVersion": "1.0.0"}


def blob_path(root: Path, digest: str) -> Path:
    algo, hexpart = check_digest(digest).split(":", 1)
    return root / "blobs" / algo / hexpart


def _blob_opener(root: Path, name: str):
    def open_blob(desc: Descriptor) -> BinaryIO:
        path = blob_path(root, desc.digest)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise NotFound(f"{name}: blob {desc.digest} is missing") from None
        return verifying(f, desc.digest, desc.size, f"{name} blob {desc.digest}")

    return open_blob


def read_index(root: Path) -> dict[str, Any]:
    layout = root / "oci-layout"
    try:
        version = load_json(layout.read_bytes(), str(layout)).get("imageLayoutVersion")
    except FileNotFoundError:
        raise NotFound(f"{root} is not an OCI layout (no oci-layout file)") from None
    if version != "1.0.0":
        raise InvalidManifest(f"{layout}: unsupported imageLayoutVersion {version!r}")
    data = (root / "index.json").read_bytes()
    obj = load_json(data, f"{root}/index.json")
    if not isinstance(obj, dict) or not isinstance(obj.get("manifests"), list):
        raise InvalidManifest(f"{root}/index.json: no manifests list")
    return obj


def open_layout(root: str | os.PathLike[str], tag: str | None = None) -> Image | Index:
    """The image or index stored in layout ``root`` under ``tag``."""
    root = Path(root)
    index = read_index(root)
    name = f"oci:{root}" + (f":{tag}" if tag else "")
    entries = [Descriptor.from_json(d, f"{root}/index.json") for d in index["manifests"]]
    if tag is not None:
        entries = [d for d in entries if d.annotations.get(REF_NAME) == tag]
        if not entries:
            tags = sorted({d.annotations.get(REF_NAME, "") for d in _all(index)} - {""})
            raise NotFound(f"{name}: no such tag (has: {', '.join(tags) or 'none'})")
    if len(entries) != 1:
        raise NotFound(f"{name}: holds {len(entries)} manifests; name one with oci:DIR:TAG")
    desc = entries[0]
    opener = _blob_opener(root, name)
    if desc.size > MANIFEST_LIMIT:
        raise InvalidManifest(f"{name}: manifest over {MANIFEST_LIMIT} bytes")
    with opener(desc) as f:
        raw = f.read()
        f.read()
    return child_of(desc, raw, opener, name)


def _all(index: dict[str, Any]) -> list[Descriptor]:
    return [Descriptor.from_json(d, "index.json") for d in index["manifests"]]


class LayoutSink:
    """Writes into layout ``root`` (created if absent)."""

    def __init__(self, root: str | os.PathLike[str], jobs: int = 4) -> None:
        self.root, self.jobs = Path(root), jobs
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / "oci-layout").exists():
            _atomic_write(self.root / "oci-layout", dumps(LAYOUT_FILE))
        if not (self.root / "index.json").exists():
            _atomic_write(self.root / "index.json", dumps(_empty_index()))

    def has_blob(self, desc: Descriptor) -> bool:
        path = blob_path(self.root, desc.digest)
        return path.is_file() and path.stat().st_size == desc.size

    def put_blob(self, desc: Descriptor, opener: Opener, origin: Reference | None = None) -> None:
        if self.has_blob(desc):
            return
        path = blob_path(self.root, desc.digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with (
                os.fdopen(fd, "wb") as out,
                # a verified stream (Image.open_blob's contract): hashing again would halve
                # the throughput
                opener() as src,
            ):
                while chunk := src.read(COPY_CHUNK):
                    out.write(chunk)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_manifest(self, obj: Image | Index, tag: str | None, top: bool) -> None:
        raw = obj.raw_manifest()
        self.put_blob(obj.descriptor, lambda: _bytes_io(raw))
        if not top:
            return
        index = read_index(self.root)
        entry = obj.descriptor.to_json()
        entry.pop("annotations", None)
        if tag:
            entry["annotations"] = {REF_NAME: tag}
            keep = [d for d in index["manifests"] if _ref_name(d) != tag]
        else:  # an untagged entry is replaced by the same digest, untagged
            keep = [d for d in index["manifests"] if d.get("digest") != obj.digest or _ref_name(d)]
        index["manifests"] = [*keep, entry]
        _atomic_write(self.root / "index.json", dumps(index))


def _ref_name(entry: dict[str, Any]) -> str | None:
    return (entry.get("annotations") or {}).get(REF_NAME)


def _empty_index() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": []}  # fmt: skip


def _bytes_io(data: bytes) -> BinaryIO:
    return io.BytesIO(data)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
