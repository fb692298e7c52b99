"""Random test images and the one invariant checker run on every medium (like crane's validate)."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import tarfile

import zstandard

from registry import mediatype as mt
from registry.build import Blob, build_image, build_index
from registry.model import Image, Index, Platform


def layer_tar(rng: random.Random, files: int, size: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(files):
            data = rng.randbytes(size)
            info = tarfile.TarInfo(f"dir{i % 3}/file{i}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def random_image(
    seed: int,
    compressions=("gzip", "zstd", "none"),
    *,
    files: int = 3,
    size: int = 2000,
    oci: bool = True,
    arch: str = "amd64",
) -> Image:
    rng = random.Random(seed)
    layers, diff_ids = [], []
    for c in compressions:
        tar = layer_tar(rng, files, size)
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
        layers.append(Blob.from_bytes(compress(tar, c), mt.layer_type(c, oci=oci)))
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Env": [f"SEED={seed}"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    return build_image(config, layers, oci=oci, annotations={"seed": str(seed)} if oci else None)


def random_index(seed: int, oci: bool = True, **kw) -> Index:
    amd = random_image(seed, oci=oci, arch="amd64", **kw)
    arm = random_image(seed + 1, oci=oci, arch="arm64", **kw)
    return build_index([amd, arm], oci=oci, platforms=[None, Platform("linux", "arm64", "v8")])


def validate(obj: Image | Index) -> dict[str, bytes]:
    """Read everything reachable, check digests, sizes, diff_ids; return manifests by digest."""
    seen: dict[str, bytes] = {}
    raw = obj.raw_manifest()
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == obj.digest
    assert obj.size == len(raw)
    seen[obj.digest] = raw
    if isinstance(obj, Index):
        for d in obj.manifests:
            child = obj.child(d)
            assert child.digest == d.digest and child.media_type == d.media_type
            seen.update(validate(child))
        return seen
    assert obj.config_descriptor.size == len(obj.raw_config)
    layers = obj.layers()
    diff_ids = obj.config["rootfs"]["diff_ids"]
    assert len(layers) == len(diff_ids)
    for layer, diff_id in zip(layers, diff_ids, strict=True):
        with layer.open() as f:
            data = f.read()
        assert len(data) == layer.size
        assert "sha256:" + hashlib.sha256(data).hexdigest() == layer.digest
        with layer.open_uncompressed() as f:
            assert "sha256:" + hashlib.sha256(f.read()).hexdigest() == diff_id
        assert layer.diff_id == diff_id
    return seen


def blobs_of(obj: Image | Index) -> dict[str, bytes]:
    """Every blob (configs, layers) reachable, by digest."""
    out: dict[str, bytes] = {}
    if isinstance(obj, Index):
        for child in obj.children():
            out.update(blobs_of(child))
        return out
    for d in obj.blob_descriptors():
        with obj.open_blob(d) as f:
            out[d.digest] = f.read()
    return out
