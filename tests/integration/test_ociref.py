"""`rconv convert --oci-ref` (zran) against a real registry (image.md §11, blob.md §12).

Layers written by Python's gzip, by pigz and as several gzip members are converted to ref
blobs; the kernel mounts the bootstrap over blob views made from the original layers and their
ref blobs, and must equal umoci's unpacking of the source.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
import tarfile

import pytest

from convert.nydus import A_BLOB, A_REF, MANIFEST_ARTIFACT
from registry import mediatype as mt
from registry.errors import NotFound
from registry.medium import open_image
from registry.model import Platform
from registry.reference import parse_reference
from tests.cli import rconv
from tests.conftest import require_tool
from tests.erofs import fsck_extract, kernel_mount
from tests.integration.nydus import (
    layer_tar,
    make_image,
    pull_nydus,
    push,
    push_index,
    umoci_rootfs,
    views_of,
)
from tests.treeutil import diff_signatures, fs_signature

REG, DIR, LNK, SYM = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.LNKTYPE, tarfile.SYMTYPE

pytestmark = pytest.mark.integration


def _blob(seed: int, size: int) -> bytes:
    out = bytearray()
    block = hashlib.sha256(b"%d" % seed).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 8  # compressible, not trivially
    return bytes(out[:size])


def _raw(data: bytes) -> bytes:
    return gzip.decompress(data)


def _pigz(raw: bytes) -> bytes:
    pigz = require_tool("pigz")
    return subprocess.run([pigz, "-c", "-6"], input=raw, capture_output=True, check=True).stdout


def _members(raw: bytes, cuts: list[int]) -> bytes:
    edges = [0, *cuts, len(raw)]
    return b"".join(
        gzip.compress(raw[a:b], mtime=0) for a, b in zip(edges, edges[1:], strict=False)
    )


@pytest.fixture(scope="module")
def zsource(registry_server) -> str:
    base = layer_tar([
        ("etc", DIR, None), ("etc/os", REG, b"zran\n"), ("bin", DIR, None),
        ("bin/big", REG, _blob(1, 5 << 20)), ("bin/alias", LNK, "bin/big"),
        ("bin/sh", SYM, "big"), ("lib", DIR, None),
        *[(f"lib/m{i}.so", REG, _blob(100 + i, 3000 * i + 7)) for i in range(60)],
        ("gone", DIR, None), ("gone/x", REG, b"x"), ("empty", REG, b""),
    ])  # fmt: skip
    pigz_layer = _pigz(_raw(layer_tar([
        ("opt", DIR, None), ("opt/a.bin", REG, _blob(2, 2 << 20)), ("opt/dup", REG, b"x" * 10),
        ("lib/m3.so", REG, b"replaced"),
    ])))  # fmt: skip
    multi_raw = _raw(layer_tar([
        ("srv", DIR, None), *[(f"srv/f{i}", REG, _blob(300 + i, 70_000)) for i in range(20)],
        ("gone/.wh..wh..opq", REG, b""), ("gone/y", REG, b"y"), ("lib/.wh.m5.so", REG, b""),
    ]))  # fmt: skip
    multi = _members(multi_raw, [512 * 3, 300_000, 900_000])
    empty = gzip.compress(b"", mtime=0)
    ref = registry_server.ref("zsrc:1")
    push(make_image([base, pigz_layer, multi, empty]), ref, registry_server.client())
    return ref


def _pull_with_sources(target: str, source: str, client, work):
    pulled = pull_nydus(target, client, work)
    for layer in open_image(source, client=client).layers():
        with layer.open() as src, open(pulled.blob_dir / layer.digest[7:], "wb") as f:
            shutil.copyfileobj(src, f)
    return pulled


def test_oci_ref_mounts_equal_to_umoci_and_check_passes(registry_server, zsource, tmp_path):
    client = registry_server.client()
    target = registry_server.ref("zsrc:1-zran")
    rconv("convert", "--source", zsource, "--target", target, "--oci-ref")
    source = open_image(zsource, client=client)
    pulled = _pull_with_sources(target, zsource, client, tmp_path / "pull")
    layers = pulled.manifest["layers"]
    assert len(layers) == len(source.layers()) + 1
    for layer, src in zip(layers, source.layers(), strict=False):
        assert layer["mediaType"] == mt.NYDUS_BLOB
        assert layer["annotations"] == {A_BLOB: "true", A_REF: src.digest}
        assert layer["size"] < 64 * 1024  # a ref blob, not the data
    assert pulled.bootstrap.compressor == "gzip" and pulled.bootstrap.digester == "sha256"
    ids = [b.blob_id for b in pulled.bootstrap.blobs]
    assert ids == [s.digest[7:] for s in source.layers()[:3]]  # the empty layer has no chunks
    reference = fs_signature(umoci_rootfs(zsource, client, tmp_path / "umoci"))
    with kernel_mount(pulled.boot, views_of(pulled, tmp_path / "views"), tmp_path / "mnt") as mnt:
        mounted = fs_signature(mnt)
    reference.pop("/"), mounted.pop("/")
    assert diff_signatures(reference, mounted) == []
    assert "/gone/x" not in mounted and "/lib/m5.so" not in mounted
    fsck_extract(pulled.boot, views_of(pulled, tmp_path / "views2"), tmp_path / "fsck")
    extracted = fs_signature(tmp_path / "fsck", xattrs=False)
    extracted.pop("/")
    ignored = ("xattrs", "links", "mode", "mtime", "uid", "gid")
    assert diff_signatures(mounted, extracted, ignored) == []
    boot, blobs = str(pulled.boot), str(pulled.blob_dir)
    assert rconv("inspect", boot, "--blob-dir", blobs, check=False).returncode == 0
    rconv("unpack", boot, "--blob-dir", blobs, "--output", str(tmp_path / "l.tar"))
    with tarfile.open(tmp_path / "l.tar") as tar:
        member = tar.extractfile("bin/big")
        assert member is not None and member.read() == _blob(1, 5 << 20)
    result = rconv("check", "--target", target, "--source", zsource, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_oci_ref_into_another_repository_mounts_the_layers(registry_server, zsource):
    client = registry_server.client()
    target = registry_server.ref("zother:1")
    rconv("convert", "--source", zsource, "--target", target, "--oci-ref")
    other = parse_reference(target)
    for layer in open_image(zsource, client=client).layers():
        assert client.stat_blob(other, layer.digest) == layer.size
    assert rconv("check", "--target", target, check=False).returncode == 0


def test_corrupt_source_layer_is_found_by_check(registry_server, tmp_path):
    client = registry_server.client()
    data = layer_tar([("a", REG, _blob(7, 300_000)), ("b", REG, b"b" * 100)])
    ref = registry_server.ref("zbad:1")
    push(make_image([data]), ref, client)
    target = registry_server.ref("zbad:zran")
    rconv("convert", "--source", ref, "--target", target, "--oci-ref")
    # One byte of the source layer changed in the registry's own storage (which serves it
    # without checking): the data nydusd would fetch is no longer what was indexed.
    digest = hashlib.sha256(data).hexdigest()
    stored = registry_server.workdir / "storage/docker/registry/v2/blobs/sha256" / digest[:2]
    path = stored / digest / "data"
    bad = bytearray(path.read_bytes())
    bad[len(bad) // 2] ^= 0x55
    path.write_bytes(bytes(bad))
    result = rconv("check", "--target", target, check=False)
    assert result.returncode != 0
    assert digest in result.stdout + result.stderr, result.stdout + result.stderr


def test_oci_ref_refuses_v5_and_non_gzip_layers(registry_server):
    client = registry_server.client()
    raw = _raw(layer_tar([("f", REG, b"x")]))
    ref = registry_server.ref("zplain:1")
    push(make_image([gzip.compress(raw, mtime=0)]), ref, client)
    result = rconv("convert", "--source", ref, "--target", registry_server.ref("zplain:v5"),
                   "--oci-ref", "--fs-version", "5", check=False)  # fmt: skip
    assert result.returncode == 1 and "RAFS v6" in result.stderr
    from registry.build import Blob, build_image

    blob = Blob.from_bytes(raw, mt.OCI_LAYER)
    config = {"architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": [blob.digest]}}  # fmt: skip
    ref2 = registry_server.ref("zplain:tar")
    push(build_image(config, [blob]), ref2, client)
    result = rconv("convert", "--source", ref2, "--target", registry_server.ref("zplain:z"),
                   "--oci-ref", check=False)  # fmt: skip
    errors = [line for line in result.stderr.splitlines() if line.startswith("rconv: error")]
    assert result.returncode == 1 and len(errors) == 1
    assert blob.digest in errors[0] and "not gzip" in errors[0]
    assert sorted(client.list_tags(parse_reference(ref2))) == ["1", "tar"]  # nothing pushed


def test_layers_in_another_registry_are_refused_before_any_push(
    registry_server, registry_factory, zsource
):
    other = registry_factory()
    assert other.host != registry_server.host
    target = other.ref("zelsewhere:1")
    result = rconv("convert", "--source", zsource, "--target", target, "--oci-ref", check=False)
    errors = [line for line in result.stderr.splitlines() if line.startswith("rconv: error")]
    assert result.returncode == 1 and len(errors) == 1, result.stderr
    first = open_image(zsource, client=registry_server.client()).layers()[0].digest
    assert first in errors[0] and "cannot be mounted" in errors[0]
    with pytest.raises(NotFound):  # nothing was pushed: the repository does not even exist
        other.client().list_tags(parse_reference(target))


def test_build_cache_warm_run_indexes_nothing_and_gives_the_same_image(
    registry_server, zsource, tmp_path
):
    reports = []
    for run in ("cold", "warm"):
        target = registry_server.ref(f"zsrc:cached-{run}")
        rconv("convert", "--source", zsource, "--target", target, "--oci-ref",
              "--build-cache-tag", "zcache", "--output-json", tmp_path / f"{run}.json")  # fmt: skip
        reports.append(json.loads((tmp_path / f"{run}.json").read_text()))
    cold, warm = reports
    layers = open_image(zsource, client=registry_server.client()).layers()
    assert cold["platforms"][0]["cache"]["misses"] == len(layers)
    assert warm["platforms"][0]["cache"]["hits"] == len(layers)
    assert warm["platforms"][0]["cache"]["bytes_not_pulled"] == sum(x.size for x in layers)
    assert "layers" not in warm["platforms"][0]["stages"]  # the whole-image record: no index
    assert warm["target_digest"] == cold["target_digest"]
    warm_image = open_image(
        registry_server.ref("zsrc:cached-warm"), client=registry_server.client()
    )
    boot = [r["platforms"][0]["bootstrap_digest"] for r in reports]
    assert boot[0] == boot[1] == warm_image.layers()[-1].digest
    target = registry_server.ref("zsrc:cached-warm")
    assert rconv("check", "--target", target, "--source", zsource, check=False).returncode == 0


def test_build_cache_layer_records_serve_an_image_sharing_lower_layers(
    registry_server, zsource, tmp_path
):
    client = registry_server.client()
    first = registry_server.ref("zsrc:shared-a")
    rconv("convert", "--source", zsource, "--target", first, "--oci-ref",
          "--build-cache-tag", "zshared")  # fmt: skip
    lower = []
    for layer in open_image(zsource, client=client).layers()[:2]:
        with layer.open() as f:
            lower.append(f.read())
    ref = registry_server.ref("zsrc:2")  # same repository: the layers are there
    push(make_image([*lower, layer_tar([("new", REG, b"n" * 5000)])]), ref, client)
    target = registry_server.ref("zsrc:shared-b")
    rconv("convert", "--source", ref, "--target", target, "--oci-ref",
          "--build-cache-tag", "zshared", "--output-json", tmp_path / "r.json")  # fmt: skip
    cache = json.loads((tmp_path / "r.json").read_text())["platforms"][0]["cache"]
    assert (cache["hits"], cache["misses"]) == (2, 1)
    assert rconv("check", "--target", target, "--source", ref, check=False).returncode == 0


def test_merge_platform_pairs_each_oci_manifest_with_its_zran_one(registry_server, tmp_path):
    client = registry_server.client()
    amd = make_image(
        [
            layer_tar(
                [
                    ("arch", REG, b"amd64\n"),
                    ("lib", DIR, None),
                    ("lib/a.so", REG, _blob(7, 300_000)),
                ]
            )
        ],
        "amd64",
        "ARCH=amd64",
    )
    arm = make_image([layer_tar([("arch", REG, b"arm64\n")])], "arm64", "ARCH=arm64")
    ref = registry_server.ref("zdual:1")
    push_index([amd, arm], [Platform("linux", "amd64"), Platform("linux", "arm64")], ref, client)
    target = registry_server.ref("zdual:merged")
    rconv("convert", "--source", ref, "--target", target, "--oci-ref", "--all-platforms",
          "--merge-platform")  # fmt: skip
    index = open_image(target, client=client)
    entries = index.manifest["manifests"]
    assert [e.get("artifactType") for e in entries] == [None, None, *[MANIFEST_ARTIFACT] * 2]
    for n, source in ((2, amd), (3, arm)):
        nydus = index.child(index.manifests[n])
        assert nydus.manifest["config"]["mediaType"] == mt.NYDUS_CONFIG
        refs = [layer["annotations"].get(A_REF) for layer in nydus.manifest["layers"][:-1]]
        assert refs == [layer["digest"] for layer in source.manifest["layers"]]
        for layer in source.manifest["layers"]:  # the data stays the OCI layers, in place
            assert client.stat_blob(parse_reference(target), layer["digest"]) == layer["size"]
    result = rconv("check", "--target", target, "--source", ref, "--all-platforms", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
