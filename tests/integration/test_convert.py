"""`rconv convert` against a real registry, checked by readers rconv did not write.

The source image is unpacked by umoci (its own whiteout implementation); the converted image
is pulled back, its blobs turned into EROFS devices, and read by the kernel's EROFS driver
and by erofs-utils. Every path must agree on type, mode, owner, size, content, symlink
target, xattrs, hard-link groups and device numbers.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile

import pytest

from rafs.check import assert_sound
from rafs.model import walk
from registry.medium import open_image
from registry.model import Platform
from registry.reference import parse_reference
from tests.cli import rconv
from tests.erofs import fsck_extract, kernel_mount
from tests.gotar import go_tar_digest, one_gzip_member
from tests.integration.nydus import (
    REPO,
    layer_tar,
    make_image,
    manifest_rules,
    pull_nydus,
    push,
    push_index,
    umoci_rootfs,
    views_of,
)
from tests.treeutil import diff_signatures, fs_signature, tree_signature

REG = tarfile.REGTYPE
DIR = tarfile.DIRTYPE


@pytest.fixture(scope="module")
def sample(registry_server, tmp_path_factory) -> str:
    """The testdata sample image, pushed once per module."""
    layout = tmp_path_factory.mktemp("layout")
    subprocess.run(
        [sys.executable, str(REPO / "testdata/make_sample.py"), "--oci", str(layout)], check=True
    )
    ref = registry_server.ref("sample:1")
    rconv("copy", f"oci:{layout}:1", ref)
    return ref


def converted(registry_server, source: str, tag: str, *args: str) -> str:
    target = registry_server.ref(tag)
    rconv("convert", "--source", source, "--target", target, *args)
    return target


def test_sample_equals_umoci_unpack_through_the_kernel(registry_server, sample, tmp_path):
    client = registry_server.client()
    target = converted(registry_server, sample, "sample:1-nydus")
    pulled = pull_nydus(target, client, tmp_path / "pull")
    source = open_image(sample, client=client)
    assert manifest_rules(pulled, source) == []
    with ExitOpen(pulled) as open_blob:
        assert_sound(pulled.boot.read_bytes(), open_blob)
    devices = views_of(pulled, tmp_path / "views")
    reference = fs_signature(umoci_rootfs(sample, client, tmp_path / "umoci"))
    with kernel_mount(pulled.boot, devices, tmp_path / "mnt") as mnt:
        mounted = fs_signature(mnt)
    # umoci gives the rootfs directory its own mode/owner/time: the root is not compared.
    reference.pop("/"), mounted.pop("/")
    assert diff_signatures(reference, mounted) == []
    assert "/var/cache/delete-me" not in mounted and "/opaque/old-1" not in mounted
    assert mounted["/usr/bin/tool"]["links"] == ("/usr/bin/tool", "/usr/bin/tool-alias")
    fsck_extract(pulled.boot, devices, tmp_path / "fsck")
    extracted = fs_signature(tmp_path / "fsck", xattrs=False)
    extracted.pop("/")
    assert (
        diff_signatures(mounted, extracted, ("xattrs", "links", "mode", "mtime", "uid", "gid"))
        == []
    )


class ExitOpen:
    """open_blob for a pulled image's blob dir, closing the files afterwards."""

    def __init__(self, pulled) -> None:
        self.dir = pulled.blob_dir
        self.files: list = []

    def __enter__(self):
        def open_blob(blob):
            f = open(self.dir / blob.blob_id, "rb")  # noqa: SIM115
            self.files.append(f)
            return f

        return open_blob

    def __exit__(self, *exc) -> None:
        for f in self.files:
            f.close()


def test_cross_layer_dedup_stores_readded_chunks_once(registry_server, tmp_path):
    client = registry_server.client()
    big = b"".join(i.to_bytes(4, "little") * 262144 for i in range(6))  # 6 distinct 1 MiB chunks
    lower = layer_tar([("data", DIR, None), ("data/big.bin", REG, big)])
    upper = layer_tar([("copy", DIR, None), ("copy/big.bin", REG, big), ("new", REG, b"n" * 10)])
    ref = registry_server.ref("dedup:1")
    push(make_image([lower, upper]), ref, client)
    target = converted(registry_server, ref, "dedup:1-nydus")
    pulled = pull_nydus(target, client, tmp_path)
    blob_layers = pulled.manifest["layers"][:-1]
    assert len(blob_layers) == 2
    # the upper blob holds only "new": a few KiB of sections, no copy of the 6 MiB file
    assert blob_layers[1]["size"] < 16 * 1024, blob_layers[1]["size"]
    tree = {p: n for p, n in walk(pulled.bootstrap.root)}
    assert tree[b"/copy/big.bin"].chunks == tree[b"/data/big.bin"].chunks
    assert [b.chunk_count for b in pulled.bootstrap.blobs] == [6, 1]


def test_output_is_identical_for_any_jobs(registry_server, sample):
    digests = set()
    for jobs in ("1", "4"):
        target = converted(registry_server, sample, f"sample:jobs{jobs}", "--jobs", jobs)
        client = registry_server.client()
        digests.add(open_image(target, client=client).digest)
    assert len(digests) == 1


def test_v5_conversion_reads_back_equal(registry_server, sample, tmp_path):
    client = registry_server.client()
    target = converted(registry_server, sample, "sample:v5", "--fs-version", "5")
    pulled = pull_nydus(target, client, tmp_path / "pull")
    assert pulled.boot.read_bytes()[:4] == b"SFAR"
    ann = pulled.manifest["layers"][-1]["annotations"]
    assert ann["containerd.io/snapshot/nydus-fs-version"] == "5"
    with ExitOpen(pulled) as open_blob:
        assert_sound(pulled.boot.read_bytes(), open_blob)

        def content(node):
            from rafs.blob.reader import iter_file

            return b"".join(iter_file(node, open_blob, pulled.bootstrap.digester))

        ours = tree_signature(pulled.bootstrap.root, content)
    reference = fs_signature(umoci_rootfs(sample, client, tmp_path / "umoci"))
    reference.pop("/"), ours.pop("/")
    assert diff_signatures(reference, ours) == []


def test_chunk_dict_both_forms_remove_its_chunks(registry_server, tmp_path):
    client = registry_server.client()
    shared = b"".join(i.to_bytes(4, "little") * 262144 for i in range(100, 104))  # 4 chunks
    dict_src = registry_server.ref("dict:src")
    push(make_image([layer_tar([("lib.so", REG, shared)])]), dict_src, client)
    dict_ref = converted(registry_server, dict_src, "dict:nydus")
    app = registry_server.ref("app:1")
    push(make_image([layer_tar([("app.so", REG, shared), ("own", REG, b"own")])]), app, client)
    pulled_dict = pull_nydus(dict_ref, client, tmp_path / "dict")
    dict_blob = pulled_dict.manifest["layers"][0]["digest"]
    # A local dictionary bootstrap names blobs by id: they must already be in the target
    # repository (here copied there with the dictionary image), and rconv says so otherwise.
    missing = rconv("convert", "--source", app, "--target", registry_server.ref("app:x"),
                    "--chunk-dict", f"bootstrap:{pulled_dict.boot}", check=False)  # fmt: skip
    assert missing.returncode == 1 and dict_blob.removeprefix("sha256:") in missing.stderr
    rconv("copy", dict_ref, registry_server.ref("app:dict"))
    for form, value in (
        ("registry", f"registry:{dict_ref}"),
        ("bootstrap", f"bootstrap:{pulled_dict.boot}"),
    ):
        target = converted(registry_server, app, f"app:{form}", "--chunk-dict", value)
        pulled = pull_nydus(target, client, tmp_path / form)
        layers = pulled.manifest["layers"]
        assert [layer["digest"] for layer in layers].count(dict_blob) == 1, form
        assert layers[1]["digest"] == dict_blob  # dict blobs after the source-order blobs
        own_blob = pulled.bootstrap.blobs[0]
        assert own_blob.chunk_count == 1, form  # only "own"; the 4 MiB come from the dict
        assert len(pulled.config["rootfs"]["diff_ids"]) == len(layers)
        assert manifest_rules(pulled, open_image(app, client=client)) == []


def test_multi_platform_index(registry_server, tmp_path):
    client = registry_server.client()
    amd = make_image([layer_tar([("arch", REG, b"amd64\n")])], "amd64", "ARCH=amd64")
    arm = make_image([layer_tar([("arch", REG, b"arm64\n")])], "arm64", "ARCH=arm64")
    ref = registry_server.ref("multi:1")
    push_index([amd, arm], [Platform("linux", "amd64"), Platform("linux", "arm64")], ref, client)
    target = converted(registry_server, ref, "multi:all", "--all-platforms")
    index = open_image(target, client=client)
    manifest = index.manifest
    assert manifest["mediaType"] == "application/vnd.oci.image.index.v1+json"
    platforms = [
        (d["platform"]["os"], d["platform"]["architecture"]) for d in manifest["manifests"]
    ]
    assert platforms == [("linux", "amd64"), ("linux", "arm64")]
    for arch in ("amd64", "arm64"):
        pulled = pull_nydus(target, client, tmp_path / arch, platform=f"linux/{arch}")
        assert pulled.config["architecture"] == arch
        data = {p: n for p, n in walk(pulled.bootstrap.root)}[b"/arch"]
        assert data.size == len(arch) + 1
    single = converted(registry_server, ref, "multi:arm", "--platform", "linux/arm64")
    arm_only = open_image(single, client=client)
    assert arm_only.manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert arm_only.config["architecture"] == "arm64"


def test_the_next_platform_starts_while_the_current_bootstrap_is_written(
    registry_server, tmp_path, monkeypatch
):
    import convert.pipeline as pipeline
    from convert.options import ConvertOptions
    from convert.progress import Silent

    events: list[tuple[str, str]] = []

    def noting(what, real):
        def run(image, *args, **kwargs):
            events.append((what, image.config["architecture"]))
            return real(image, *args, **kwargs)

        return run

    monkeypatch.setattr(pipeline, "start_layers", noting("layers", pipeline.start_layers))
    monkeypatch.setattr(pipeline, "finish_image", noting("bootstrap", pipeline.finish_image))
    client = registry_server.client()
    arches = ("amd64", "arm64", "riscv64")
    images = [make_image([layer_tar([("arch", REG, a.encode() * 9000)])], a, f"A={a}")
              for a in arches]  # fmt: skip
    ref = registry_server.ref("pipelined:1")
    push_index(images, [Platform("linux", a) for a in arches], ref, client)

    def run(target: str, **platforms) -> str:
        opts = ConvertOptions(source=ref, target=registry_server.ref(target),
                              work_dir=tmp_path / target, **platforms)  # fmt: skip
        return pipeline.convert(opts, client, Silent()).target_digest

    run("pipelined:all", all_platforms=True)
    assert events == [
        ("layers", "amd64"), ("layers", "arm64"), ("bootstrap", "amd64"),
        ("layers", "riscv64"), ("bootstrap", "arm64"), ("bootstrap", "riscv64"),
    ]  # fmt: skip
    # The same manifests as each platform converted alone.
    index = open_image(registry_server.ref("pipelined:all"), client=client).manifest
    for entry, arch in zip(index["manifests"], arches, strict=True):
        assert entry["digest"] == run(f"pipelined:{arch}", platforms=(Platform("linux", arch),))


def test_converting_a_nydus_image_is_a_no_op(registry_server, sample):
    client = registry_server.client()
    first = converted(registry_server, sample, "sample:noop-1")
    again = converted(registry_server, first, "sample:noop-2")
    assert open_image(first, client=client).digest == open_image(again, client=client).digest


def test_empty_and_whiteout_only_layers_keep_their_blob_layers(registry_server, tmp_path):
    client = registry_server.client()
    import gzip

    empty = gzip.compress(b"", mtime=0)
    base = layer_tar([("f", REG, b"x"), ("g", REG, b"y")])
    wh = layer_tar([(".wh.g", REG, b"")])
    ref = registry_server.ref("empties:1")
    push(make_image([base, empty, wh]), ref, client)
    target = converted(registry_server, ref, "empties:nydus")
    pulled = pull_nydus(target, client, tmp_path)
    assert len(pulled.manifest["layers"]) == 4
    assert len(pulled.config["rootfs"]["diff_ids"]) == 4
    assert len(pulled.bootstrap.blobs) == 1  # only the layer with data is in the blob table
    names = {p for p, _ in walk(pulled.bootstrap.root)}
    assert b"/f" in names and b"/g" not in names
    assert manifest_rules(pulled, open_image(ref, client=client)) == []


def test_bad_layer_fails_cleanly_and_leaves_no_tag(registry_server, tmp_path):
    client = registry_server.client()
    good = layer_tar([("f", REG, b"x")])
    corrupt = good[:30] + b"\xff" * 40 + good[70:]
    ref = registry_server.ref("bad:1")
    push(make_image([good, corrupt]), ref, client)
    result = rconv("convert", "--source", ref, "--target", registry_server.ref("bad:nydus"),
                   "--output-json", tmp_path / "r.json", check=False)  # fmt: skip
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("rconv: error")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    corrupt_digest = make_image([good, corrupt]).layer_descriptors[1].digest
    assert ref in errors[0] and corrupt_digest in errors[0]
    assert client.list_tags(parse_reference(ref)) == ["1"]  # no "nydus" tag was pushed


def test_output_json_reports_stages_and_dedup(registry_server, sample, tmp_path):
    report_path = tmp_path / "report.json"
    converted(registry_server, sample, "sample:json", "--output-json", str(report_path))
    report = json.loads(report_path.read_text())
    platform = report["platforms"][0]
    assert report["target_digest"].startswith("sha256:")
    assert set(platform["stages"]) >= {"layers", "bootstrap", "push"}
    assert sum(layer["chunks_deduped"] for layer in platform["layers"]) > 0
    assert all(layer["blob_digest"].startswith("sha256:") for layer in platform["layers"])
    manifest = open_image(registry_server.ref("sample:json"), client=registry_server.client())
    descriptors = manifest.manifest["layers"]
    assert [layer["blob_digest"] for layer in platform["layers"]] == [
        d["digest"] for d in descriptors[:-1]
    ]
    assert platform["bootstrap_digest"] == descriptors[-1]["digest"]


def test_merge_platform_index_holds_oci_then_nydus(registry_server, tmp_path):
    client = registry_server.client()
    amd = make_image([layer_tar([("arch", REG, b"amd64\n")])], "amd64", "ARCH=amd64")
    arm = make_image([layer_tar([("arch", REG, b"arm64\n")])], "arm64", "ARCH=arm64")
    ref = registry_server.ref("dual:1")
    push_index([amd, arm], [Platform("linux", "amd64"), Platform("linux", "arm64")], ref, client)
    target = converted(registry_server, ref, "dual:merged", "--all-platforms", "--merge-platform")
    index = open_image(target, client=client)
    entries = index.manifest["manifests"]
    assert [e.get("artifactType") for e in entries] == [
        None,
        None,
        "application/vnd.nydus.image.manifest.v1+json",
        "application/vnd.nydus.image.manifest.v1+json",
    ]
    assert all(set(e["platform"]) >= {"os", "architecture"} for e in entries)
    assert all("features" not in e["platform"] for e in entries)
    for entry, source in zip(entries[:2], (amd, arm), strict=True):
        oci = index.child(index.manifests[entries.index(entry)])
        layers = oci.manifest["layers"]
        assert layers[0]["annotations"] == {"containerd.io/snapshot/nydus-empty-layer": "true"}
        assert layers[1:] == source.manifest["layers"]
        diff_ids = oci.config["rootfs"]["diff_ids"]
        assert (
            diff_ids[0] == "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
        )
        assert diff_ids[1:] == source.config["rootfs"]["diff_ids"]
        assert entry["annotations"]["containerd.io/snapshot/nydus-source-digest"] == source.digest
        for layer in oci.layers():  # every blob is in the target repository
            with layer.open() as f:
                f.read()
    for n in (2, 3):
        nydus = index.child(index.manifests[n])
        assert nydus.manifest["config"]["mediaType"] == "application/vnd.nydus.image.config.v1+json"
        last = nydus.manifest["layers"][-1]
        assert last["annotations"]["containerd.io/snapshot/nydus-bootstrap"] == "true"


def test_convert_with_check_reports_equivalence(registry_server, sample):
    result = rconv("convert", "--source", sample, "--target", registry_server.ref("sample:chk"),
                   "--check")  # fmt: skip
    assert "equivalent:" in result.stdout and "0 difference(s)" in result.stdout


def _go_diff_id(layer) -> str:
    """The diff_id a Go tool computes while unpacking ``layer``; the tar must end there."""
    with layer.open() as f:
        raw = one_gzip_member(f.read())
    digest, consumed = go_tar_digest(io.BytesIO(raw))
    assert consumed == len(raw), f"{len(raw) - consumed} bytes after the end-of-archive marker"
    return digest


@pytest.mark.parametrize("kind", ["v6", "v5", "all-platforms", "merge-platform"])
def test_go_tar_readers_compute_the_diff_ids_in_the_config(registry_server, sample, kind):
    """nydusify check hashes the bootstrap layer as Go's archive/tar unpacks it (issue 16)."""
    client = registry_server.client()
    if kind in ("v6", "v5"):
        target = converted(registry_server, sample, f"sample:go-{kind}", "--fs-version", kind[1])
    else:
        amd = make_image([layer_tar([("arch", REG, b"amd64\n")])], "amd64", "ARCH=amd64")
        arm = make_image([layer_tar([("arch", REG, b"arm64\n")])], "arm64", "ARCH=arm64")
        ref = registry_server.ref(f"go-{kind}:1")
        platforms = [Platform("linux", "amd64"), Platform("linux", "arm64")]
        push_index([amd, arm], platforms, ref, client)
        flags = ["--all-platforms"] + (["--merge-platform"] if kind == "merge-platform" else [])
        target = converted(registry_server, ref, f"go-{kind}:nydus", *flags)
    top = open_image(target, client=client)
    images = [top.child(d) for d in top.manifests] if kind not in ("v6", "v5") else [top]
    checked = 0
    for image in images:
        diff_ids = image.config["rootfs"]["diff_ids"]
        if image.manifest.get("artifactType") or image.layer_descriptors[-1].annotations.get(
            "containerd.io/snapshot/nydus-bootstrap"
        ):
            assert _go_diff_id(image.layers()[-1]) == diff_ids[-1]
            checked += 1
        else:  # merge-platform's OCI entries open with the empty layer
            assert _go_diff_id(image.layers()[0]) == diff_ids[0]
    assert checked == (1 if kind in ("v6", "v5") else 2)


def test_a_hand_made_link_entry_sets_the_shared_inode_metadata_as_containerd(
    registry_server, tmp_path
):
    """A link entry whose header differs from its target's (hand-made tars; tar writers repeat
    the target's values): containerd chmods and chowns the link path, i.e. the shared inode."""
    client = registry_server.client()
    layer = layer_tar(
        [
            ("tool", REG, b"#!/bin/sh\n", {"mode": 0o755, "uid": 1}),
            ("alias", tarfile.LNKTYPE, "tool", {"mode": 0o640, "uid": 7, "gid": 8}),
        ]
    )
    ref = registry_server.ref("handmade-link:1")
    push(make_image([layer]), ref, client)
    target = converted(registry_server, ref, "handmade-link:nydus")
    pulled = pull_nydus(target, client, tmp_path / "pull")
    with kernel_mount(pulled.boot, views_of(pulled, tmp_path / "views"), tmp_path / "mnt") as mnt:
        tool, alias = (mnt / "tool").stat(), (mnt / "alias").stat()
    assert tool.st_ino == alias.st_ino and tool.st_nlink == 2
    assert (oct(tool.st_mode), tool.st_uid, tool.st_gid) == (oct(0o100640), 7, 8)
    checked = rconv("check", "--target", target, "--source", ref, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
