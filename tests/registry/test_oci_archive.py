"""The oci-archive medium: an OCI layout in an uncompressed tar, read in place and written
deterministically; every broken archive gives one clear error naming the file."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from registry import mediatype as mt
from registry.build import build_index
from registry.errors import (
    DigestMismatch,
    InvalidArchive,
    InvalidManifest,
    InvalidReference,
    NotFound,
    RegistryError,
)
from registry.layout import REF_NAME
from registry.medium import copy_image, open_image, parse_spec, write_image
from registry.model import Image, Index
from tests.gotar import go_tar_digest

from .images import blobs_of, random_image, random_index, validate


def members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tf:
        return tf.getmembers()


def member_bytes(path: Path) -> dict[str, bytes]:
    out = {}
    with tarfile.open(path) as tf:
        for m in tf:
            if m.isfile():
                out[m.name] = tf.extractfile(m).read()  # type: ignore[union-attr]
    return out


def make_tar(path: Path, files: dict[str, bytes], prefix: str = "", dirs: bool = False) -> None:
    """A tar holding ``files`` (names prefixed, e.g. ``./``), as other tools write one."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        if dirs:
            for d in (".", "blobs", "blobs/sha256"):
                info = tarfile.TarInfo(prefix + d if d != "." else ".")
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def header_offsets(path: Path) -> dict[str, tuple[int, int]]:
    """name -> (header offset, data offset)."""
    with tarfile.open(path) as tf:
        return {m.name: (m.offset, m.offset_data) for m in tf}


def test_parse_spec():
    s = parse_spec("oci-archive:/tmp/x.tar:v1")
    assert (s.kind, s.path, s.tag) == ("oci-archive", "/tmp/x.tar", "v1")
    assert str(s) == "oci-archive:/tmp/x.tar:v1"
    s = parse_spec("oci-archive:rel/x.tar")
    assert (s.kind, s.path, s.tag) == ("oci-archive", "rel/x.tar", None)
    for bad in ("oci-archive:", "oci-archive:/x.tar:-bad", "oci-archive:/x.tar:a b"):
        with pytest.raises(InvalidReference):
            parse_spec(bad)


def test_image_roundtrip_keeps_digests(tmp_path):
    img = random_image(300)
    d = write_image(img, f"oci-archive:{tmp_path}/a.tar:v1")
    assert d.digest == img.digest
    for spec in (f"oci-archive:{tmp_path}/a.tar:v1", f"oci-archive:{tmp_path}/a.tar"):
        back = open_image(spec)
        assert isinstance(back, Image) and back.digest == img.digest
        assert validate(back) == validate(img) and blobs_of(back) == blobs_of(img)
    index = json.loads(member_bytes(tmp_path / "a.tar")["index.json"])
    assert index["mediaType"] == mt.OCI_INDEX
    assert index["manifests"] == [
        {"mediaType": img.media_type, "digest": img.digest, "size": img.size,
         "annotations": {REF_NAME: "v1"}}]  # fmt: skip


def test_index_roundtrip_and_platforms(tmp_path):
    idx = random_index(310)
    nested = build_index([idx, random_image(312, arch="s390x")])
    for obj, name in ((idx, "i.tar"), (nested, "n.tar")):
        write_image(obj, f"oci-archive:{tmp_path}/{name}:multi")
        back = open_image(f"oci-archive:{tmp_path}/{name}:multi")
        assert isinstance(back, Index) and back.digest == obj.digest
        assert validate(back) == validate(obj) and blobs_of(back) == blobs_of(obj)
    arm = open_image(f"oci-archive:{tmp_path}/i.tar", platform="linux/arm64")
    assert isinstance(arm, Image) and arm.config["architecture"] == "arm64"
    inner = open_image(f"oci-archive:{tmp_path}/n.tar").child(nested.manifests[0])
    assert isinstance(inner, Index) and inner.digest == idx.digest
    # through the other media and back, every digest kept
    copy_image(f"oci-archive:{tmp_path}/n.tar:multi", f"oci:{tmp_path}/lay:t")
    copy_image(f"oci:{tmp_path}/lay:t", f"oci-archive:{tmp_path}/again.tar:multi")
    assert (tmp_path / "again.tar").read_bytes() == (tmp_path / "n.tar").read_bytes()


def test_written_bytes_are_deterministic(tmp_path):
    idx = random_index(320)
    write_image(idx, f"oci-archive:{tmp_path}/a.tar:t")
    write_image(open_image(f"oci-archive:{tmp_path}/a.tar"), f"oci-archive:{tmp_path}/b.tar:t")
    data = (tmp_path / "a.tar").read_bytes()
    assert data == (tmp_path / "b.tar").read_bytes()
    infos = members(tmp_path / "a.tar")
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and not m.uname for m in infos)
    names = [m.name for m in infos]
    assert names[:2] == ["blobs", "blobs/sha256"] and names[-2:] == ["index.json", "oci-layout"]
    blobs = names[2:-2]
    assert len(blobs) == len(set(blobs))  # each blob once
    want = set(blobs_of(idx)) | {idx.digest} | {d.digest for d in idx.manifests}
    assert {"sha256:" + n.rsplit("/", 1)[1] for n in blobs} == want
    with open(tmp_path / "a.tar", "rb") as f:  # ends at the marker: Go's reader takes it all
        assert go_tar_digest(f)[1] == len(data)
    assert json.loads(member_bytes(tmp_path / "a.tar")["oci-layout"]) == {
        "imageLayoutVersion": "1.0.0"}  # fmt: skip


def test_tag_selection(tmp_path):
    a, b = random_image(330), random_image(331, oci=False)
    # an archive with two tags, as a tool that writes several names into one archive does
    write_image(a, f"oci:{tmp_path}/lay:a")
    write_image(b, f"oci:{tmp_path}/lay:b")
    files = {str(p.relative_to(tmp_path / "lay")): p.read_bytes()
             for p in sorted((tmp_path / "lay").rglob("*")) if p.is_file()}  # fmt: skip
    make_tar(tmp_path / "two.tar", files)
    spec = f"oci-archive:{tmp_path}/two.tar"
    assert open_image(spec + ":a").digest == a.digest
    assert open_image(spec + ":b").digest == b.digest
    with pytest.raises(NotFound, match=r"holds 2 manifests \(tags: a, b\); name one with "
                                       r"oci-archive:FILE:TAG"):  # fmt: skip
        open_image(spec)
    with pytest.raises(NotFound, match=rf"^{spec}:c: no such tag \(has: a, b\)$"):
        open_image(spec + ":c")
    # an untagged archive is read without a tag; asking for one lists none
    write_image(a, f"oci-archive:{tmp_path}/untagged.tar")
    assert open_image(f"oci-archive:{tmp_path}/untagged.tar").digest == a.digest
    with pytest.raises(NotFound, match=r"no such tag \(has: none\)"):
        open_image(f"oci-archive:{tmp_path}/untagged.tar:x")


@pytest.mark.parametrize("prefix", ["", "./"])
def test_member_names_with_or_without_dot_slash(tmp_path, prefix):
    idx = random_index(340)
    write_image(idx, f"oci-archive:{tmp_path}/ours.tar:1")
    make_tar(tmp_path / "theirs.tar", member_bytes(tmp_path / "ours.tar"), prefix, dirs=True)
    back = open_image(f"oci-archive:{tmp_path}/theirs.tar:1")
    assert back.digest == idx.digest and blobs_of(back) == blobs_of(idx)


def test_existing_file_is_replaced_atomically(tmp_path):
    a, b = random_image(350), random_image(351)
    target = tmp_path / "out" / "x.tar"
    write_image(a, f"oci-archive:{target}:a")
    write_image(b, f"oci-archive:{target}:b")
    assert open_image(f"oci-archive:{target}").digest == b.digest  # only b: replaced
    before = target.read_bytes()
    # a failed write (a source blob cut short) leaves the old archive and no temp file
    write_image(a, f"oci:{tmp_path}/lay")
    layer = tmp_path / "lay/blobs/sha256" / a.layers()[0].digest.split(":")[1]
    layer.write_bytes(layer.read_bytes()[:-1])
    with pytest.raises(DigestMismatch):
        copy_image(f"oci:{tmp_path}/lay", f"oci-archive:{target}:a")
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.tar"]


@pytest.fixture
def archive(tmp_path) -> tuple[Path, Image]:
    img = random_image(360, ("gzip", "none"), size=20000)
    path = tmp_path / "img.tar"
    write_image(img, f"oci-archive:{path}:1")
    return path, img


def _error(spec: str) -> RegistryError:
    with pytest.raises(RegistryError) as info:
        obj = open_image(spec)
        validate(obj)
    return info.value


def test_truncated_archives(archive, tmp_path):
    path, img = archive
    data = path.read_bytes()
    offsets = header_offsets(path)
    layer = f"blobs/sha256/{img.layers()[0].digest.split(':')[1]}"
    cuts = {
        "half": len(data) // 2,
        "in a blob": offsets[layer][1] + 100,
        "in a header": offsets[layer][0] + 100,
        "before index.json": offsets["index.json"][0],
    }
    for what, cut in cuts.items():
        cut_path = tmp_path / f"cut-{cut}.tar"
        cut_path.write_bytes(data[:cut])
        err = _error(f"oci-archive:{cut_path}:1")
        msg = str(err)
        assert "\n" not in msg and str(cut_path) in msg, (what, msg)
        assert isinstance(err, InvalidArchive) and "truncated tar archive" in msg, (what, msg)


def test_corrupt_archives(archive, tmp_path):
    path, img = archive
    data = path.read_bytes()
    offsets = header_offsets(path)
    layer_digest = img.layers()[1].digest
    layer = f"blobs/sha256/{layer_digest.split(':')[1]}"

    def case(name: str, content: bytes, cls: type, pattern: str) -> None:
        p = tmp_path / name
        p.write_bytes(content)
        err = _error(f"oci-archive:{p}:1")
        assert isinstance(err, cls), (name, err)
        assert "\n" not in str(err) and str(p) in str(err), str(err)
        assert pattern in str(err), str(err)

    case("garbage.tar", b"garbage, not a tar" * 100, InvalidArchive, "not an uncompressed tar")
    case("empty.tar", b"", InvalidArchive, "not an uncompressed tar")
    case("gzip.tar", gzip.compress(data), InvalidArchive, "is gzip-compressed")
    bad_header = bytearray(data)
    start = offsets[layer][0]
    bad_header[start : start + 512] = b"x" * 512
    case("header.tar", bytes(bad_header), InvalidArchive, f"invalid header at offset {start}")
    flipped = bytearray(data)
    flipped[offsets[layer][1] + 7] ^= 0xFF
    case("blob.tar", bytes(flipped), DigestMismatch, f"blob {layer_digest}: content digest")
    files = member_bytes(path)
    make_tar(tmp_path / "no-index.tar", {k: v for k, v in files.items() if k != "index.json"})
    case("no-index.tar", (tmp_path / "no-index.tar").read_bytes(), NotFound, "index.json")
    make_tar(tmp_path / "no-blob.tar", {k: v for k, v in files.items() if k != layer})
    case("no-blob.tar", (tmp_path / "no-blob.tar").read_bytes(), NotFound,
         f"blob {layer_digest} is missing")  # fmt: skip
    make_tar(tmp_path / "no-layout.tar", {k: v for k, v in files.items() if k != "oci-layout"})
    case("no-layout.tar", (tmp_path / "no-layout.tar").read_bytes(), NotFound,
         "is not an OCI layout")  # fmt: skip
    make_tar(tmp_path / "bad-index.tar", {**files, "index.json": b"{not json"})
    case("bad-index.tar", (tmp_path / "bad-index.tar").read_bytes(), InvalidManifest,
         "index.json: not valid JSON")  # fmt: skip
    with pytest.raises(NotFound, match="no such file"):
        open_image(f"oci-archive:{tmp_path}/absent.tar")
    with pytest.raises(InvalidArchive, match="is a directory"):
        open_image(f"oci-archive:{tmp_path}")


def test_docker_archive_shares_the_checks(archive, tmp_path):
    path, _ = archive
    copy_image(f"oci-archive:{path}", f"docker-archive:{tmp_path}/d.tar:app:1")
    data = (tmp_path / "d.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidArchive, match="truncated tar archive"):
        open_image(f"docker-archive:{tmp_path}/cut.tar")
    (tmp_path / "gz.tar").write_bytes(gzip.compress(data))
    with pytest.raises(InvalidArchive, match="gzip-compressed"):
        open_image(f"docker-archive:{tmp_path}/gz.tar")
    # a docker-archive written by rconv (Docker 25's layout) is also an oci-archive
    assert (
        open_image(f"oci-archive:{tmp_path}/d.tar:1").digest
        == open_image(f"oci-archive:{path}").digest
    )
