"""Interoperability with skopeo both ways, against the real registry process.

skopeo reads what rconv pushed (the same manifest bytes, the same blobs) and rconv reads what
skopeo pushed and wrote (registry, docker-archive); skopeo also reads rconv's docker-archive.
"""

from __future__ import annotations

import json

from registry.medium import open_image, write_image
from tests.registry.images import blobs_of, random_image, random_index, validate


def test_skopeo_reads_what_rconv_pushed(registry_server, skopeo, tmp_path):
    idx = random_index(200)
    with registry_server.client() as client:
        write_image(idx, registry_server.ref("interop/rconv:1"), client=client)
    src = f"docker://{registry_server.ref('interop/rconv:1')}"
    raw = skopeo("inspect", "--raw", "--tls-verify=false", src)
    assert raw == idx.raw_manifest()
    skopeo("copy", "--all", "--preserve-digests", "--src-tls-verify=false", src,
           f"oci:{tmp_path}/out:t")  # fmt: skip
    copied = open_image(f"oci:{tmp_path}/out:t")
    assert copied.digest == idx.digest
    assert blobs_of(copied) == blobs_of(idx)
    info = json.loads(skopeo("inspect", "--tls-verify=false", "--override-arch=arm64", src))
    assert info["Architecture"] == "arm64"


def test_rconv_reads_what_skopeo_pushed(registry_server, skopeo, tmp_path):
    img = random_image(210, ("gzip", "zstd", "none"))
    write_image(img, f"oci:{tmp_path}/src:v1")
    dst = registry_server.ref("interop/skopeo:v1")
    # without --preserve-digests skopeo would gzip the uncompressed layer on its way
    skopeo("copy", "--preserve-digests", "--dest-tls-verify=false", f"oci:{tmp_path}/src:v1",
           f"docker://{dst}")  # fmt: skip
    with registry_server.client() as client:
        pulled = open_image(dst, client=client)
        assert pulled.digest == img.digest  # skopeo kept the manifest bytes
        assert validate(pulled) == validate(img)
        assert blobs_of(pulled) == blobs_of(img)


def test_docker_archive_interop(registry_server, skopeo, tmp_path):
    img = random_image(220, ("gzip", "gzip"), oci=False)
    ours = tmp_path / "rconv.tar"
    write_image(img, f"docker-archive:{ours}:interop/archive:1")
    # skopeo reads rconv's archive
    dst = registry_server.ref("interop/archive:1")
    skopeo("copy", "--dest-tls-verify=false", f"docker-archive:{ours}", f"docker://{dst}")
    with registry_server.client() as client:
        pulled = open_image(dst, client=client)
        # skopeo decompresses archive layers and compresses them again: same content and
        # config, other layer digests
        assert pulled.config_descriptor.digest == img.config_descriptor.digest
        assert [ly.diff_id for ly in pulled.layers()] == [ly.diff_id for ly in img.layers()]
        validate(pulled)
    # rconv reads skopeo's archive
    theirs = tmp_path / "skopeo.tar"
    skopeo("copy", "--src-tls-verify=false", f"docker://{dst}",
           f"docker-archive:{theirs}:interop/archive:1")  # fmt: skip
    back = open_image(f"docker-archive:{theirs}:interop/archive:1")
    assert [ly.diff_id for ly in back.layers()] == [ly.diff_id for ly in img.layers()]
    assert back.config_descriptor.digest == img.config_descriptor.digest
    assert validate(back)
