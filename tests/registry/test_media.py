"""OCI layout and docker-archive media, and copies between media keeping digests."""

import hashlib
import io
import json
import os
import tarfile

import pytest

from registry import mediatype as mt
from registry.errors import DigestMismatch, InvalidManifest, InvalidReference, NotFound, Unsupported
from registry.layout import blob_path
from registry.medium import copy_image, open_image, parse_spec, write_image
from registry.model import Image, Platform
from tests.gotar import go_tar_digest

from .images import blobs_of, random_image, random_index, validate


def test_parse_spec():
    s = parse_spec("oci:/tmp/x:v1")
    assert (s.kind, s.path, s.tag) == ("oci", "/tmp/x", "v1")
    s = parse_spec("docker-archive:/tmp/a.tar:app:2")
    assert (s.kind, s.path, str(s.ref)) == (
        "docker-archive",
        "/tmp/a.tar",
        "docker.io/library/app:2",
    )
    assert str(parse_spec("docker://alpine").ref) == "docker.io/library/alpine:latest"
    assert parse_spec("localhost:5000/a:b").ref.registry == "localhost:5000"
    for bad in ("oci:", "dir:/x", "http://x/y", "oci:/x:-bad"):
        with pytest.raises(InvalidReference):
            parse_spec(bad)


def test_layout_roundtrip(tmp_path):
    idx = random_index(20)
    img = random_image(22, oci=False)
    d = write_image(idx, f"oci:{tmp_path}/lay:multi")
    write_image(img, f"oci:{tmp_path}/lay:single")
    assert d.digest == idx.digest
    back = open_image(f"oci:{tmp_path}/lay:multi")
    assert validate(back) == validate(idx) and blobs_of(back) == blobs_of(idx)
    single = open_image(f"oci:{tmp_path}/lay:single")
    assert single.digest == img.digest and single.media_type == mt.DOCKER_MANIFEST
    index = json.loads((tmp_path / "lay/index.json").read_text())
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == [
        "multi", "single"]  # fmt: skip
    # re-tagging replaces, and blobs are written once
    write_image(img, f"oci:{tmp_path}/lay:multi")
    assert open_image(f"oci:{tmp_path}/lay:multi").digest == img.digest
    with pytest.raises(NotFound, match="holds 2 manifests"):
        open_image(f"oci:{tmp_path}/lay")
    with pytest.raises(NotFound, match="has: multi, single"):
        open_image(f"oci:{tmp_path}/lay:nope")
    arm = open_image(f"oci:{tmp_path}/lay:single", platform="linux/amd64")
    assert isinstance(arm, Image)


def test_layout_corruption_detected(tmp_path):
    img = random_image(23)
    write_image(img, f"oci:{tmp_path}")
    layer = img.layers()[0]
    p = blob_path(tmp_path, layer.digest)
    data = bytearray(p.read_bytes())
    data[10] ^= 1
    p.write_bytes(bytes(data))
    back = open_image(f"oci:{tmp_path}")
    with pytest.raises(DigestMismatch):
        back.layers()[0].open().read()


def test_archive_roundtrip_keeps_digests(tmp_path):
    img = random_image(24)
    write_image(img, f"docker-archive:{tmp_path}/a.tar:example.com/app:v1")
    back = open_image(f"docker-archive:{tmp_path}/a.tar")
    assert back.digest == img.digest
    assert validate(back) == validate(img) and blobs_of(back) == blobs_of(img)
    assert open_image(f"docker-archive:{tmp_path}/a.tar:example.com/app:v1").digest == img.digest
    with pytest.raises(NotFound, match="example.com/app:v1"):
        open_image(f"docker-archive:{tmp_path}/a.tar:other:v1")
    with tarfile.open(tmp_path / "a.tar") as tf:
        entry = json.load(tf.extractfile("manifest.json"))[0]
        assert entry["RepoTags"] == ["example.com/app:v1"]
        assert entry["Config"] == "blobs/sha256/" + img.config_descriptor.digest[7:]
        assert all(m.mtime == 0 and m.uid == 0 for m in tf.getmembers())
    with open(tmp_path / "a.tar", "rb") as f:  # ends at the marker: Go's reader takes it all
        assert go_tar_digest(f)[1] == (tmp_path / "a.tar").stat().st_size
    # deterministic bytes
    write_image(img, f"docker-archive:{tmp_path}/b.tar:example.com/app:v1")
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_archive_classic_docker_save(tmp_path):
    """An archive without index.json (docker < 25): a manifest is synthesised."""
    img = random_image(25, ("none", "gzip"), oci=False)
    blobs = blobs_of(img)
    path = tmp_path / "old.tar"
    with tarfile.open(path, "w") as tf:

        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))

        names = []
        for i, layer in enumerate(img.layers()):
            add(f"l{i}/layer.tar", blobs[layer.digest])
            names.append(f"l{i}/layer.tar")
        add("cfg.json", img.raw_config)
        link = tarfile.TarInfo("alias/layer.tar")
        link.type, link.linkname = tarfile.SYMTYPE, "../l0/layer.tar"
        tf.addfile(link)
        names[0] = "alias/layer.tar"
        add("manifest.json", json.dumps([{"Config": "cfg.json", "RepoTags": ["app:1"],
                                          "Layers": names}]).encode())  # fmt: skip
    back = open_image(f"docker-archive:{path}:app:1")
    assert back.media_type == mt.DOCKER_MANIFEST
    assert [lay.media_type for lay in back.layers()] == [mt.DOCKER_LAYER, mt.DOCKER_LAYER_GZIP]
    assert [lay.digest for lay in back.layers()] == [lay.digest for lay in img.layers()]
    assert back.config_descriptor.digest == img.config_descriptor.digest
    validate(back)


def test_copy_chain_keeps_digests(tmp_path):
    img = random_image(26)
    write_image(img, f"oci:{tmp_path}/l1:t")
    copy_image(f"oci:{tmp_path}/l1:t", f"docker-archive:{tmp_path}/x.tar:app:t")
    copy_image(f"docker-archive:{tmp_path}/x.tar", f"oci:{tmp_path}/l2:t")
    back = open_image(f"oci:{tmp_path}/l2:t")
    assert back.digest == img.digest and blobs_of(back) == blobs_of(img)


def test_index_to_archive_needs_platform(tmp_path):
    idx = random_index(27)
    with pytest.raises(Unsupported, match="single-platform"):
        write_image(idx, f"docker-archive:{tmp_path}/i.tar")
    assert not (tmp_path / "i.tar").exists() and not list(tmp_path.iterdir())
    write_image(idx.image_for(Platform.parse("linux/arm64")), f"docker-archive:{tmp_path}/i.tar")
    assert open_image(f"docker-archive:{tmp_path}/i.tar").config["architecture"] == "arm64"


def test_failed_archive_write_leaves_nothing(tmp_path):
    img = random_image(28)
    write_image(img, f"oci:{tmp_path}/lay")
    p = blob_path(tmp_path / "lay", img.layers()[1].digest)
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(DigestMismatch):
        copy_image(f"oci:{tmp_path}/lay", f"docker-archive:{tmp_path}/out/x.tar")
    assert list((tmp_path / "out").iterdir()) == []


def test_not_an_archive(tmp_path):
    (tmp_path / "x.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(InvalidManifest, match="not an uncompressed tar"):
        open_image(f"docker-archive:{tmp_path}/x.tar")
    with pytest.raises(NotFound, match="not an OCI layout"):
        open_image(f"oci:{tmp_path}")


# --------------------------------------------------------------- layout writes in the kernel


class _Pieces(io.RawIOBase):
    """A blob made of pieces of local files, as a converter's final blob is read."""

    def __init__(self, ranges):
        super().__init__()
        self.ranges, self.fds = ranges, []

    def readable(self):
        return True

    def readinto(self, buffer):  # the fast path must not need it
        raise AssertionError("read instead of copied")

    def fd_ranges(self):
        out = []
        for path, offset, length in self.ranges:
            self.fds.append(os.open(path, os.O_RDONLY))
            out.append((self.fds[-1], offset, length))
        return out

    def close(self):
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        super().close()


def _known_good_image(tmp_path, opener, data: bytes):
    from registry.build import Blob, build_image

    blob = Blob(mt.OCI_LAYER_GZIP, "sha256:" + hashlib.sha256(data).hexdigest(), len(data),
                opener, digest_known_good=True)  # fmt: skip
    return build_image({"architecture": "amd64", "os": "linux"}, [blob]), blob


@pytest.mark.parametrize("kernel_copy", [True, False], ids=["copy_file_range", "its fallback"])
def test_layout_copies_known_good_files_in_the_kernel(tmp_path, monkeypatch, kernel_copy):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(os.urandom(3 << 20))
    b.write_bytes(os.urandom(1 << 20))
    if not kernel_copy:

        def refuse(*args, **kw):
            raise OSError(18, "Invalid cross-device link")

        monkeypatch.setattr(os, "copy_file_range", refuse)
    # a whole file, and pieces of two files (as a final blob: kept chunk runs, then its tail)
    whole = a.read_bytes()
    pieces = a.read_bytes()[100 : 100 + (1 << 20)] + a.read_bytes()[2 << 20 :] + b.read_bytes()
    ranges = [(a, 100, 1 << 20), (a, 2 << 20, 1 << 20), (b, 0, 1 << 20)]
    for data, opener in ((whole, lambda: open(a, "rb")),
                         (pieces, lambda: io.BufferedReader(_Pieces(ranges)))):  # fmt: skip
        image, blob = _known_good_image(tmp_path, opener, data)
        out = tmp_path / f"out-{len(data)}"
        write_image(image, f"oci:{out}:x")
        assert blob_path(out, blob.digest).read_bytes() == data


def test_layout_reads_what_is_not_a_plain_local_file(tmp_path):
    from registry.layout import local_ranges

    f = tmp_path / "f"
    f.write_bytes(b"0123456789")
    with open(f, "rb") as src:
        assert local_ranges(src, 10) is not None
        assert local_ranges(src, 9) is None  # not what the descriptor says: read it
    assert local_ranges(io.BytesIO(b"0123456789"), 10) is None
    from registry.digest import verifying

    with verifying(open(f, "rb"), "sha256:" + "0" * 64, 10, "blob") as src:
        assert local_ranges(src, 10) is None  # a checked stream is read (and checked)
