"""Helpers for end-to-end tests: push sample images, pull converted Nydus images, and read
them back with readers rconv did not write (umoci for the source, the kernel and erofs-utils
for the result)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import zlib
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from convert.inspect import BlobOpener, blob_views
from rafs.bootstrap import read_bootstrap
from rafs.model import Bootstrap
from registry import mediatype as mt
from registry.build import Blob, build_image, build_index
from registry.medium import open_image, write_image
from registry.model import Image, Platform
from tests.conftest import require_tool

REPO = Path(__file__).resolve().parents[2]


def layer_tar(entries: list[tuple]) -> bytes:
    """A gzip layer from (name, kind, data-or-target, extra dict) tuples."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload, *extra in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            info.type = kind
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            for key, value in (extra[0] if extra else {}).items():
                setattr(info, key, value)
            if kind == tarfile.REGTYPE:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                    info.linkname = payload
                tar.addfile(info)
    return gzip.compress(buf.getvalue(), mtime=0)


def make_image(layers: list[bytes], arch: str = "amd64", env: str = "A=1") -> Image:
    blobs, diff_ids = [], []
    for data in layers:
        blobs.append(Blob.from_bytes(data, mt.OCI_LAYER_GZIP))
        try:
            raw = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):  # a deliberately corrupt layer
            raw = data
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Env": [env], "Cmd": ["/bin/sh"], "Labels": {"x": "y"}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"layer {i}"} for i in range(len(blobs))],
    }
    return build_image(config, blobs, annotations={"org.example": "kept"})


def push(image, ref: str, client) -> str:
    return write_image(image, ref, client=client).digest


def push_index(images: list[Image], platforms: list[Platform], ref: str, client) -> str:
    return write_image(build_index(images, platforms=platforms), ref, client=client).digest


@dataclass
class Pulled:
    image: Image
    manifest: dict
    config: dict
    boot: Path
    blob_dir: Path
    bootstrap: Bootstrap


def pull_nydus(ref: str, client, work: Path, platform: str | None = None) -> Pulled:
    """Pull a Nydus image: bootstrap extracted from its layer, every blob layer by digest."""
    image = open_image(ref, client=client, platform=platform)
    assert isinstance(image, Image)
    work.mkdir(parents=True, exist_ok=True)
    blob_dir = work / "blobs"
    blob_dir.mkdir(exist_ok=True)
    layers = image.layers()
    for layer in layers[:-1]:
        with layer.open() as src, open(blob_dir / layer.digest.removeprefix("sha256:"), "wb") as f:
            shutil.copyfileobj(src, f)
    boot = work / "image.boot"
    with layers[-1].open_uncompressed() as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        names = []
        for member in tar:
            names.append(member.name)
            if member.name == "image/image.boot":
                src = tar.extractfile(member)
                assert src is not None
                boot.write_bytes(src.read())
        assert names == ["image", "image/image.boot"], names
    with open(boot, "rb") as f:
        bs = read_bootstrap(f)
    return Pulled(image, image.manifest, image.config, boot, blob_dir, bs)


def views_of(pulled: Pulled, out: Path) -> list[Path]:
    with ExitStack() as stack:
        return blob_views(pulled.bootstrap, BlobOpener(pulled.blob_dir, stack), out)


def umoci_rootfs(ref: str, client, work: Path) -> Path:
    """The source image unpacked by umoci (an independent whiteout implementation)."""
    umoci = require_tool("umoci")
    layout = work / "layout"
    write_image(open_image(ref, client=client, platform="linux/amd64"), f"oci:{layout}:src")
    bundle = work / "bundle"
    result = subprocess.run(
        [umoci, "unpack", "--image", f"{layout}:src", str(bundle)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return bundle / "rootfs"


def manifest_rules(pulled: Pulled, source: Image, fs_version: int = 6) -> list[str]:
    """image.md §18 items checked on a pulled Nydus manifest and config; problems as lines."""
    problems = []
    m, cfg = pulled.manifest, pulled.config
    layers = m["layers"]
    if m.get("mediaType") != mt.OCI_MANIFEST:
        problems.append(f"manifest mediaType {m.get('mediaType')}")
    last = layers[-1]
    if last["mediaType"] != mt.OCI_LAYER_GZIP:
        problems.append("bootstrap layer is not gzip")
    if last.get("annotations", {}).get("containerd.io/snapshot/nydus-bootstrap") != "true":
        problems.append("bootstrap annotation missing")
    if last.get("annotations", {}).get("containerd.io/snapshot/nydus-fs-version") != str(
        fs_version
    ):
        problems.append("fs-version annotation wrong")
    for layer in layers[:-1]:
        if layer["mediaType"] != "application/vnd.oci.image.layer.nydus.blob.v1":
            problems.append(f"blob layer media type {layer['mediaType']}")
        if layer.get("annotations", {}).get("containerd.io/snapshot/nydus-blob") != "true":
            problems.append("blob annotation missing")
    diff_ids = cfg["rootfs"]["diff_ids"]
    if len(diff_ids) != len(layers):
        problems.append("diff_ids do not match the layers")
    if diff_ids[:-1] != [layer["digest"] for layer in layers[:-1]]:
        problems.append("blob diff_ids are not the blob digests")
    with pulled.image.layers()[-1].open_uncompressed() as raw:
        if "sha256:" + hashlib.sha256(raw.read()).hexdigest() != diff_ids[-1]:
            problems.append("bootstrap diff_id is not the sha256 of the uncompressed tar")
    if json.dumps(cfg["config"], sort_keys=True) != json.dumps(
        source.config["config"], sort_keys=True
    ):
        problems.append("config.config changed")
    if cfg["history"][: len(source.config["history"])] != source.config["history"]:
        problems.append("history not kept")
    if cfg["history"][-1].get("comment") != "Nydus Bootstrap Layer":
        problems.append("no converter history entry")
    digests = {layer["digest"].removeprefix("sha256:") for layer in layers[:-1]}
    for blob in pulled.bootstrap.blobs:
        if blob.blob_id not in digests:
            problems.append(f"blob table id {blob.blob_id[:12]} is not a layer digest")
    if len(layers) - 1 < len(source.layer_descriptors):
        problems.append("fewer blob layers than source layers")
    return problems
