import hashlib
import io

import pytest

from registry import mediatype as mt
from registry.digest import check_digest, read_verified, verifying
from registry.errors import DigestMismatch, InvalidReference, Unsupported


def test_manifest_types():
    for t in (mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST):
        assert mt.check_manifest_type(t, "m") == t
    with pytest.raises(Unsupported, match="schema 1"):
        mt.check_manifest_type(mt.DOCKER_SCHEMA1_SIGNED, "m")
    with pytest.raises(Unsupported, match="neither an image manifest nor an index"):
        mt.check_manifest_type("application/vnd.cncf.helm.chart.content.v1.tar+gzip", "m")


def test_layer_compression():
    assert mt.layer_compression(mt.OCI_LAYER_GZIP) == "gzip"
    assert mt.layer_compression(mt.DOCKER_LAYER_GZIP) == "gzip"
    assert mt.layer_compression(mt.OCI_LAYER_ZSTD) == "zstd"
    assert mt.layer_compression(mt.OCI_LAYER) == "none"
    for t in (mt.DOCKER_FOREIGN_GZIP, mt.OCI_NONDIST_GZIP):
        with pytest.raises(Unsupported, match="non-distributable"):
            mt.layer_compression(t)
    with pytest.raises(Unsupported, match="Nydus data blob"):
        mt.layer_compression(mt.NYDUS_BLOB)
    with pytest.raises(Unsupported, match="unknown layer media type"):
        mt.layer_compression("application/x-foo")
    assert mt.layer_type("zstd", oci=False) == mt.DOCKER_LAYER_ZSTD


def test_digest_check():
    d = "sha256:" + hashlib.sha256(b"x").hexdigest()
    assert check_digest(d) == d
    bad_ones = ("sha256:" + "A" * 64, "sha256:abc", "md5:" + "0" * 32, "nope", "sha512:" + "0" * 64)
    for bad in bad_ones:
        with pytest.raises(InvalidReference):
            check_digest(bad)


def test_verifying_reader():
    data = b"hello" * 1000
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    assert verifying(io.BytesIO(data), d, len(data), "b").read() == data
    with pytest.raises(DigestMismatch, match="content digest"):
        verifying(io.BytesIO(data[:-1] + b"X"), d, len(data), "b").read()
    with pytest.raises(DigestMismatch, match="got 4999 bytes"):
        verifying(io.BytesIO(data[:-1]), d, len(data), "b").read()
    with pytest.raises(DigestMismatch, match="more than"):
        verifying(io.BytesIO(data + b"!"), d, len(data), "b").read()
    assert read_verified(io.BytesIO(data), d, None, "b", 10000) == data
    with pytest.raises(DigestMismatch, match="limit"):
        read_verified(io.BytesIO(data), d, None, "b", 100)
