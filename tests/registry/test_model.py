import json

import pytest

from registry import mediatype as mt
from registry.build import Blob, build_image, dumps
from registry.errors import InvalidManifest, NotFound, Unsupported
from registry.model import Descriptor, Platform, StaticImage, manifest_media_type

from .images import random_image, random_index, validate


def test_image_model_roundtrip():
    img = random_image(1)
    manifests = validate(img)
    assert list(manifests) == [img.digest]
    assert img.media_type == mt.OCI_MANIFEST
    assert [lay.compression for lay in img.layers()] == ["gzip", "zstd", "none"]
    assert img.annotations == {"seed": "1"}
    # deterministic
    assert random_image(1).raw_manifest() == img.raw_manifest()


def test_index_model():
    idx = random_index(5, oci=False)
    assert idx.media_type == mt.DOCKER_MANIFEST_LIST
    assert len(validate(idx)) == 3
    arm = idx.image_for(Platform.parse("linux/arm64"))
    assert arm.config["architecture"] == "arm64"
    assert arm.platform == Platform("linux", "arm64", "v8")
    assert arm.descriptor.platform == Platform("linux", "arm64", "v8")
    original = idx._children[arm.digest]
    assert original.platform is None  # the index hands out a copy, the input is untouched
    with pytest.raises(NotFound, match="offers: linux/amd64, linux/arm64/v8"):
        idx.image_for(Platform.parse("linux/s390x"))


def test_schema1_and_unknown():
    body = json.dumps({"schemaVersion": 1, "name": "x", "fsLayers": []}).encode()
    with pytest.raises(Unsupported, match="schema 1"):
        manifest_media_type(body, None, "img")
    with pytest.raises(Unsupported, match="schema 1"):
        manifest_media_type(b"{}", mt.DOCKER_SCHEMA1_SIGNED, "img")
    with pytest.raises(Unsupported, match="application/x-weird"):
        manifest_media_type(b'{"mediaType":"application/x-weird"}', None, "img")
    with pytest.raises(InvalidManifest, match="not valid JSON"):
        manifest_media_type(b"{", None, "img")
    # no mediaType in body: sniffed
    assert manifest_media_type(b'{"manifests":[]}', None, "i") == mt.OCI_INDEX
    assert manifest_media_type(b'{"layers":[]}', "application/json", "i") == mt.OCI_MANIFEST


def test_foreign_layer_error():
    foreign = {
        "mediaType": mt.DOCKER_FOREIGN_GZIP,
        "digest": "sha256:" + "1" * 64,
        "size": 5,
        "urls": ["https://example.invalid/x"],
    }
    cfg = Blob.from_bytes(b"{}", mt.DOCKER_CONFIG)
    raw = dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST,
            "config": cfg.descriptor().to_json(),
            "layers": [foreign],
        }
    )
    img = StaticImage(raw, lambda d: cfg.open())
    (layer,) = img.layers()
    assert layer.descriptor.urls == ["https://example.invalid/x"]
    with pytest.raises(Unsupported, match="foreign / non-distributable"):
        layer.open()
    assert img.blob_descriptors() == [cfg.descriptor()]


def test_bad_descriptors():
    for bad, msg in [
        ({"digest": "sha256:" + "0" * 64, "size": 1}, "without mediaType"),
        ({"mediaType": "a", "digest": "sha256:zz", "size": 1}, "invalid sha256"),
        ({"mediaType": "a", "digest": "sha256:" + "0" * 64, "size": -1}, "size"),
        ({"mediaType": "a", "digest": "sha256:" + "0" * 64, "size": True}, "size"),
    ]:
        with pytest.raises(InvalidManifest, match=msg):
            Descriptor.from_json(bad, "x")
    img = build_image({}, [])
    raw = json.loads(img.raw_manifest())
    raw["schemaVersion"] = 3
    with pytest.raises(InvalidManifest, match="schemaVersion"):
        _ = StaticImage(dumps(raw), img.open_blob).manifest


def test_mediatype_body_vs_descriptor_conflict():
    img = random_image(2)
    desc = Descriptor(mt.DOCKER_MANIFEST, img.digest, img.size, {})
    with pytest.raises(InvalidManifest, match="body says"):
        _ = StaticImage(img.raw_manifest(), img.open_blob, desc).media_type
