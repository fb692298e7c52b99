import pytest

from registry.errors import InvalidReference
from registry.reference import parse_reference

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "text, registry, repo, tag, digest",
    [
        ("alpine", "docker.io", "library/alpine", "latest", None),
        ("alpine:3.19", "docker.io", "library/alpine", "3.19", None),
        ("user/app", "docker.io", "user/app", "latest", None),
        ("docker.io/alpine", "docker.io", "library/alpine", "latest", None),
        ("index.docker.io/user/app:v1", "docker.io", "user/app", "v1", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost:5000/a/b/c:t", "localhost:5000", "a/b/c", "t", None),
        ("127.0.0.1:5000/x", "127.0.0.1:5000", "x", "latest", None),
        ("ghcr.io/o/r@" + D, "ghcr.io", "o/r", None, D),
        ("ghcr.io/o/r:t@" + D, "ghcr.io", "o/r", "t", D),
        ("Host/app", "Host", "app", "latest", None),
        ("[::1]:5000/app", "[::1]:5000", "app", "latest", None),
        ("a.b/x__y/z-w.v:T_1.0-x", "a.b", "x__y/z-w.v", "T_1.0-x", None),
    ],
)
def test_parse(text, registry, repo, tag, digest):
    r = parse_reference(text)
    assert (r.registry, r.repository, r.tag, r.digest) == (registry, repo, tag, digest)


def test_forms():
    r = parse_reference("alpine")
    assert str(r) == "docker.io/library/alpine:latest"
    assert r.familiar() == "alpine:latest"
    assert r.api_host == "registry-1.docker.io"
    assert r.identifier == "latest"
    r = parse_reference("h:5/x:t@" + D)
    assert r.identifier == D
    assert r.familiar() == f"h:5/x:t@{D}"
    assert parse_reference("h:5/x").api_host == "h:5"
    assert parse_reference("x", default_tag=False).tag is None
    assert str(parse_reference("h:5/x").with_digest(D)) == f"h:5/x@{D}"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("Alpine", "lowercase"),
        ("docker.io/Foo/bar", "lowercase"),
        ("a b", "whitespace"),
        ("alpine:", "bad tag"),
        ("alpine:-x", "bad tag"),
        ("alpine:" + "x" * 129, "bad tag"),
        ("alpine@sha256:abc", "sha256"),
        ("alpine@md5:" + "0" * 32, "unsupported digest algorithm"),
        ("host:5000/", "no repository"),
        ("a//b", "path component"),
        ("a/-b", "path component"),
        ("bad_host.com:x/y", "registry host"),
        ("-bad.host/x", "registry host"),
        ("h.io/" + "a" * 260, "longer than"),
    ],
)
def test_bad(text, fragment):
    with pytest.raises(InvalidReference, match=fragment):
        parse_reference(text)
