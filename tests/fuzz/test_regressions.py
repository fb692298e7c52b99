"""Inputs the fuzzers found (or that a seed exposed), kept as plain tests of the fix."""

from __future__ import annotations

import io
import json

import pytest
import zstandard

from rafs.layerstream import open_layer
from registry.errors import InvalidManifest
from registry.model import Descriptor, LazyIndex, StaticImage
from tests.fuzz import seeds


def test_zstd_layer_opening_with_a_skippable_frame_is_zstd() -> None:
    data = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"skip"
    data += zstandard.ZstdCompressor().compress(b"tar bytes")
    assert open_layer(io.BytesIO(data)).read(100) == b"tar bytes"


def _image(**changes) -> StaticImage:
    manifest = json.loads(seeds.manifests()[0])
    manifest.update(changes)
    return StaticImage(json.dumps(manifest).encode(), lambda d: io.BytesIO(seeds.configs()[0]))


@pytest.mark.parametrize("value", [True, ["a"], {"k": 1}])
def test_manifest_annotations_must_be_a_string_map(value) -> None:
    with pytest.raises(InvalidManifest, match="annotations are not a map of strings"):
        _ = _image(annotations=value).annotations


def test_descriptor_fields_of_the_wrong_type() -> None:
    raw = {"mediaType": "x", "digest": "sha256:" + "a" * 64, "size": 1}
    with pytest.raises(InvalidManifest, match="annotations"):
        _ = Descriptor.from_json({**raw, "annotations": True}, "d").annotations
    with pytest.raises(InvalidManifest, match="urls"):
        _ = Descriptor.from_json({**raw, "urls": True}, "d").urls
    bad_platform = {"os": "linux", "architecture": [None]}
    with pytest.raises(InvalidManifest, match="platform"):
        _ = Descriptor.from_json({**raw, "platform": bad_platform}, "d").platform


@pytest.mark.parametrize("rootfs", [True, {"diff_ids": True}, {"diff_ids": "sha256:x"}])
def test_config_rootfs_of_the_wrong_type(rootfs) -> None:
    config = json.loads(seeds.configs()[0])
    config["rootfs"] = rootfs
    image = StaticImage(seeds.manifests()[0], lambda d: io.BytesIO(json.dumps(config).encode()))
    with pytest.raises(InvalidManifest, match="rootfs.diff_ids is not a list"):
        image.layers()


@pytest.mark.parametrize("body", [b"[]", b'{"schemaVersion": 2, "mediaType": ["x"]}'])
def test_manifest_that_is_not_an_object_or_has_a_list_media_type(body) -> None:
    with pytest.raises(InvalidManifest):
        _ = StaticImage(body, lambda d: io.BytesIO(b"{}")).manifest
    with pytest.raises(InvalidManifest):
        _ = LazyIndex(body, None, lambda d: io.BytesIO(b"{}")).manifest


@pytest.mark.parametrize("field", [b"\x80" + (2**40 + 0o644).to_bytes(7, "big"), b"\xff" * 8])
def test_tar_mode_in_base256_that_does_not_fit_mode_t(field) -> None:
    from rafs.tarstream import read_layer
    from tests.tarmaker import END, entry

    for flag in (b"0", b"1"):
        tar = entry(b"f", b"x") + entry(b"g", b"", flag, link=b"f", fields={100: field}) + END
        tree = read_layer(io.BytesIO(tar), lambda reader, size: [])
        assert tree.root.children[b"g"].mode & 0o777 in (0o644, 0o777)


def test_blob_meta_offset_beyond_any_file_is_invalid_image() -> None:
    from rafs.blob.reader import read_blob_meta
    from rafs.errors import InvalidImage
    from rafs.model import BlobInfo

    info = BlobInfo(chunk_count=1, ci_offset=2**63, ci_compressed_size=24, ci_uncompressed_size=24)
    with pytest.raises(InvalidImage, match="out of range"):
        read_blob_meta(io.BytesIO(bytes(4096)), info)


def test_v6_blob_id_with_a_newline_gives_a_one_line_error() -> None:
    from rafs.errors import InvalidImage
    from rafs.v6.ondisk import DEVT_OFFSET
    from rafs.v6.reader import parse

    data = bytearray(seeds.bootstraps(6)[0])
    data[DEVT_OFFSET + 1] = 0x0A  # inside the first device slot's blob id
    with pytest.raises(InvalidImage, match="control characters") as info:
        parse(bytes(data))
    assert "\n" not in str(info.value)
