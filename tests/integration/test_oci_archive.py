"""oci-archive with skopeo both ways, through the command line as a user runs it.

skopeo writes the sample image as ``oci-archive:``; ``rconv convert`` reads it and writes the
Nydus image to the registry and to another ``oci-archive:``; ``rconv check`` proves both
equivalent to the archive; skopeo reads what rconv wrote; a truncated archive is one error
line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from registry.medium import open_image, write_image
from tests.cli import rconv
from tests.integration.nydus import REPO
from tests.registry.images import blobs_of, random_index

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def archive(skopeo, tmp_path_factory) -> Path:
    """The testdata sample as skopeo writes it: ``oci-archive:FILE:1``."""
    work = tmp_path_factory.mktemp("sample")
    layout = work / "layout"
    subprocess.run(
        [sys.executable, str(REPO / "testdata/make_sample.py"), "--oci", str(layout)], check=True
    )
    path = work / "sample.tar"
    skopeo("copy", f"oci:{layout}:1", f"oci-archive:{path}:1")
    return path


def one_error_line(result, alone: bool = True) -> str:
    """The one ``rconv: error:`` line of a failed command; ``alone``: nothing else on stderr
    (a conversion that failed half-way has logged its progress before)."""
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("rconv: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert len(lines) == 1 or not alone, result.stderr
    return errors[0]


def test_skopeo_archive_converts_to_registry_and_archive(registry_server, archive, tmp_path):
    source = f"oci-archive:{archive}:1"
    targets = [registry_server.ref("ociarchive/sample:1-nydus"),
               f"oci-archive:{tmp_path}/nydus.tar:1-nydus"]  # fmt: skip
    for target in targets:
        rconv("convert", "--source", source, "--target", target)
        checked = rconv("check", "--target", target, "--source", source)
        assert "equivalent:" in checked.stdout and "0 difference(s)" in checked.stdout
    # the same conversion, whatever the medium it went to
    with registry_server.client() as client:
        pushed = open_image(targets[0], client=client)
        assert pushed.digest == open_image(targets[1]).digest


def test_skopeo_reads_what_rconv_wrote(archive, skopeo, tmp_path):
    # a converted image, copied by skopeo out of rconv's archive with every digest kept
    ours = tmp_path / "nydus.tar"
    rconv("convert", "--source", f"oci-archive:{archive}:1", "--target", f"oci-archive:{ours}:n")
    nydus = open_image(f"oci-archive:{ours}:n")
    info = json.loads(skopeo("inspect", f"oci-archive:{ours}:n"))
    assert info["Digest"] == nydus.digest
    skopeo("copy", "--preserve-digests", f"oci-archive:{ours}:n", f"oci:{tmp_path}/out:n")
    copied = open_image(f"oci:{tmp_path}/out:n")
    assert copied.digest == nydus.digest and blobs_of(copied) == blobs_of(nydus)
    # rconv copy of skopeo's archive gives the same bytes skopeo reads back
    rconv("copy", f"oci-archive:{archive}:1", f"oci-archive:{tmp_path}/copy.tar:1")
    raw = skopeo("inspect", "--raw", f"oci-archive:{tmp_path}/copy.tar:1")
    assert raw == open_image(f"oci-archive:{archive}:1").raw_manifest()
    # a multi-platform index: skopeo copies all of it
    idx = random_index(400)
    write_image(idx, f"oci-archive:{tmp_path}/index.tar:multi")
    skopeo("copy", "--all", "--preserve-digests", f"oci-archive:{tmp_path}/index.tar:multi",
           f"oci:{tmp_path}/idx:multi")  # fmt: skip
    back = open_image(f"oci:{tmp_path}/idx:multi")
    assert back.digest == idx.digest and blobs_of(back) == blobs_of(idx)


def test_broken_archives_give_one_error_line(registry_server, archive, tmp_path):
    data = archive.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2])
    target = registry_server.ref("ociarchive/cut:1")
    line = one_error_line(rconv("convert", "--source", f"oci-archive:{cut}:1",
                                "--target", target, check=False))  # fmt: skip
    assert line == f"rconv: error: oci-archive:{cut}: truncated tar archive (a member is cut short)"
    line = one_error_line(rconv("copy", f"oci-archive:{cut}:1", f"oci:{tmp_path}/x", check=False))
    assert "truncated tar archive" in line and str(cut) in line
    # a layer whose bytes changed: found while converting, named with its digest
    with tarfile.open(archive) as tf:
        largest = max(tf.getmembers(), key=lambda m: m.size)
    flipped = bytearray(data)
    flipped[largest.offset_data + largest.size // 2] ^= 0xFF
    bad = tmp_path / "flipped.tar"
    bad.write_bytes(bytes(flipped))
    result = rconv("convert", "--source", f"oci-archive:{bad}:1",
                   "--target", f"oci-archive:{tmp_path}/o.tar", check=False)  # fmt: skip
    line = one_error_line(result, alone=False)
    digest = "sha256:" + largest.name.rsplit("/", 1)[1]
    assert str(bad) in line and f"blob {digest}: content digest is" in line
    assert not (tmp_path / "o.tar").exists() and not list(tmp_path.glob(".tmp-*"))
    # a compressed archive
    gz = tmp_path / "sample.tar.gz"
    with gz.open("wb") as out:
        subprocess.run(["gzip", "-c", str(archive)], stdout=out, check=True)
    line = one_error_line(rconv("copy", f"oci-archive:{gz}", f"oci:{tmp_path}/y", check=False))
    assert line.endswith("is gzip-compressed; it must be an uncompressed tar (decompress it first)")
