"""rconv's registry package against a real registry process (distribution 2.8).

Variants: open, htpasswd (Basic), token (Bearer with a test-served token endpoint) and TLS
with a self-signed CA. Images are built in the test: several layers (gzip, zstd, none) and
an index with two platforms; everything pulled back must be byte-identical.
"""

from __future__ import annotations

import dataclasses

import pytest

from registry.errors import AuthError, NotFound
from registry.medium import copy_image, open_image, write_image
from registry.model import Index
from registry.reference import parse_reference
from tests.registry.images import blobs_of, random_image, random_index, validate

VARIANTS = [("none", False), ("htpasswd", False), ("token", False), ("htpasswd", True)]


@pytest.mark.parametrize("auth, tls", VARIANTS, ids=["open", "basic", "token", "tls-basic"])
def test_push_pull_byte_identical(registry_factory, auth, tls):
    server = registry_factory(auth, tls)
    idx = random_index(100)
    img = random_image(102, ("gzip", "gzip", "zstd", "none"), oci=False)
    with server.client() as client:
        d = write_image(idx, server.ref("multi/arch:v1"), client=client)
        assert d.digest == idx.digest
        write_image(img, server.ref("single:v1"), client=client)
        back = open_image(server.ref("multi/arch:v1"), client=client)
        assert isinstance(back, Index)
        assert validate(back) == validate(idx)
        assert blobs_of(back) == blobs_of(idx)
        by_digest = open_image(server.ref(f"multi/arch@{idx.digest}"), client=client)
        assert by_digest.raw_manifest() == idx.raw_manifest()
        single = open_image(server.ref("single:v1"), client=client)
        assert single.raw_manifest() == img.raw_manifest()
        assert blobs_of(single) == blobs_of(img)
        # Range read of a layer
        layer = single.layers()[0]
        whole = blobs_of(img)[layer.digest]
        assert single.read_range(layer.descriptor, 7, 100) == whole[7:107]
        assert client.list_tags(parse_reference(server.ref("single"))) == ["v1"]
    if auth == "token":
        assert server.token_requests, "the token endpoint was used"


def test_cross_repo_mount_real(registry_server):
    with registry_server.client() as client:
        img = random_image(110)
        write_image(img, registry_server.ref("mount/src:1"), client=client)
        copy_image(registry_server.ref("mount/src:1"), registry_server.ref("mount/dst:1"),
                   client=client)  # fmt: skip
        back = open_image(registry_server.ref("mount/dst:1"), client=client)
        assert blobs_of(back) == blobs_of(img)


def test_chunked_push_real(registry_server):
    with registry_server.client(chunk_size=4096, jobs=2) as client:
        img = random_image(111, ("none", "gzip"), files=6, size=5000)
        write_image(img, registry_server.ref("chunked:1"), client=client)
        back = open_image(registry_server.ref("chunked:1"), client=client)
        assert blobs_of(back) == blobs_of(img)


def test_plain_http_real(registry_server):
    """plain_http against the real registry: every exchange works with no TLS attempt."""
    with registry_server.client(plain_http=True) as client:
        img = random_image(112, ("gzip", "none"))
        write_image(img, registry_server.ref("plain/x:1"), client=client)
        back = open_image(registry_server.ref("plain/x:1"), client=client)
        assert blobs_of(back) == blobs_of(img)


def test_copy_chain_registry_layout_archive_registry(registry_server, tmp_path):
    img = random_image(120, ("gzip", "zstd"))
    with registry_server.client() as client:
        write_image(img, registry_server.ref("chain/a:1"), client=client)
        copy_image(registry_server.ref("chain/a:1"), f"oci:{tmp_path}/lay:1", client=client)
        copy_image(f"oci:{tmp_path}/lay:1", f"docker-archive:{tmp_path}/a.tar:chain/b:1")
        copy_image(f"docker-archive:{tmp_path}/a.tar", registry_server.ref("chain/b:1"),
                   client=client)  # fmt: skip
        back = open_image(registry_server.ref("chain/b:1"), client=client)
        assert back.digest == img.digest
        assert blobs_of(back) == blobs_of(img)
        # an index survives registry -> layout -> registry
        idx = random_index(122)
        write_image(idx, registry_server.ref("chain/idx:1"), client=client)
        copy_image(registry_server.ref("chain/idx:1"), f"oci:{tmp_path}/lay:idx", client=client)
        copy_image(f"oci:{tmp_path}/lay:idx", registry_server.ref("chain/idx2:1"), client=client)
        assert open_image(registry_server.ref("chain/idx2:1"), client=client).digest == idx.digest


def test_auth_failures(registry_factory):
    server = registry_factory("htpasswd")
    with server.client() as good:
        write_image(random_image(130), server.ref("auth/x:1"), client=good)
    from registry.client import RegistryClient
    from registry.credentials import Credential
    from registry.options import RegistryOptions

    bad = RegistryOptions(credentials={server.host: Credential(server.username, "wrong")},
                          auth_file=str(server.workdir / "none.json"))  # fmt: skip
    with RegistryClient(bad) as client, pytest.raises(AuthError) as e:
        open_image(server.ref("auth/x:1"), client=client)
    assert e.value.status == 401 and "wrong" not in str(e.value)
    with server.client() as client, pytest.raises(NotFound) as e:
        open_image(server.ref("auth/missing:1"), client=client)
    assert "MANIFEST_UNKNOWN" in e.value.codes or "NAME_UNKNOWN" in e.value.codes


def test_tls_with_wrong_ca_fails(registry_factory):
    server = registry_factory("htpasswd", True)
    from registry.client import RegistryClient
    from registry.errors import RegistryError

    # the system CAs do not know the test CA: https fails, and plain http is not a registry
    opts = dataclasses.replace(server.options(retries=0), ca_file=None)
    with RegistryClient(opts) as client, pytest.raises(RegistryError) as e:
        open_image(server.ref("x:1"), client=client)
    assert "certificate" in str(e.value).lower()


@pytest.fixture
def tls_ahead(monkeypatch):
    """A fresh ``registry.transport.tls`` state: the context is built again in this test."""
    from registry.transport import tls

    monkeypatch.setattr(tls, "_thread", None)
    monkeypatch.setattr(tls, "_built", [])
    return tls


def test_tls_context_built_ahead_still_verifies(registry_factory, tls_ahead):
    server = registry_factory("htpasswd", True)
    from registry.client import RegistryClient
    from registry.errors import RegistryError

    tls_ahead.build_ahead()
    opts = dataclasses.replace(server.options(retries=0), ca_file=None)
    with RegistryClient(opts) as client, pytest.raises(RegistryError) as e:
        open_image(server.ref("x:1"), client=client)
    assert "certificate" in str(e.value).lower()
    assert tls_ahead._built, "the context was not built ahead"


def test_tls_context_built_ahead_reads_ssl_cert_file(registry_factory, tls_ahead, monkeypatch):
    """Built ahead as httpx builds it: SSL_CERT_FILE names the CAs to trust."""
    server = registry_factory("htpasswd", True)
    from registry.client import RegistryClient

    monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_file))
    tls_ahead.build_ahead()
    monkeypatch.delenv("SSL_CERT_FILE")  # read by the thread, not by the client
    assert tls_ahead.default_verify() is not True
    image = random_image(41, ("gzip",))
    opts = dataclasses.replace(server.options(retries=0), ca_file=None)
    with RegistryClient(opts) as client:
        write_image(image, server.ref("ahead/x:1"), client=client)
        assert open_image(server.ref("ahead/x:1"), client=client).digest == image.digest


def test_tls_context_that_fails_to_build_ahead_is_left_to_httpx(tls_ahead, monkeypatch, capfd):
    import httpx

    def broken(*a, **k):
        raise OSError("no CA bundle here")

    monkeypatch.setattr(httpx, "create_ssl_context", broken)
    tls_ahead.build_ahead()
    assert tls_ahead.default_verify() is True  # httpx then builds it and reports any failure
    assert capfd.readouterr().err == ""  # no traceback from the thread
