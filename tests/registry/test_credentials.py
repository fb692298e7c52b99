import base64
import json
import os
import stat

import pytest

from registry.auth import TokenCache, parse_challenges, pick_challenge
from registry.credentials import Credential, CredentialStore
from registry.errors import AuthError


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def write_config(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_docker_config_lookup(tmp_path):
    home = tmp_path / "home"
    write_config(
        home / ".docker" / "config.json",
        {"auths": {
            "https://index.docker.io/v1/": {"auth": b64("hub:hubpw")},
            "https://reg.example:5000/v2/": {"auth": b64("a:b:c")},
            "tok.example": {"identitytoken": "refresh-1"},
        }},
    )  # fmt: skip
    store = CredentialStore(env={"HOME": str(home)})
    assert store.lookup("docker.io") == Credential("hub", "hubpw")
    assert store.lookup("registry-1.docker.io") == Credential("hub", "hubpw")
    assert store.lookup("reg.example:5000") == Credential("a", "b:c")
    assert store.lookup("tok.example").identity_token == "refresh-1"
    assert store.lookup("other.example") is None
    assert "hubpw" not in repr(store.lookup("docker.io"))


def test_precedence(tmp_path):
    a = write_config(tmp_path / "auth.json", {"auths": {"r.example": {"auth": b64("from:auth")}}})
    d = write_config(tmp_path / "dc" / "config.json", {"auths": {
        "r.example": {"auth": b64("from:docker")}, "s.example": {"auth": b64("s:s")}}})  # fmt: skip
    env = {"REGISTRY_AUTH_FILE": str(a), "DOCKER_CONFIG": str(d.parent), "HOME": "/nonexistent"}
    store = CredentialStore(env=env)
    assert store.lookup("r.example") == Credential("from", "auth")
    assert store.lookup("s.example") == Credential("s", "s")
    explicit = CredentialStore({"r.example": Credential("x", "y")}, env=env)
    assert explicit.lookup("r.example") == Credential("x", "y")
    only = CredentialStore(auth_file=d, env=env)
    assert only.lookup("r.example") == Credential("from", "docker")


def helper(tmp_path, name, script):
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    p = bindir / f"docker-credential-{name}"
    p.write_text("#!/bin/sh\n" + script)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return bindir


def test_credential_helpers(tmp_path, monkeypatch):
    bindir = helper(
        tmp_path, "fake",
        'read url\nif [ "$url" = "h.example" ]; then\n'
        '  echo \'{"ServerURL":"h.example","Username":"hu","Secret":"hs"}\'\n'
        'else echo "credentials not found in native keychain"; exit 1; fi\n',
    )  # fmt: skip
    helper(tmp_path, "broken", "echo 'secret-ish output'; exit 3\n")
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    cfg = write_config(tmp_path / "c.json", {
        "credsStore": "fake", "credHelpers": {"b.example": "broken", "m.example": "missing"},
        "auths": {"i.example": {"auth": b64("inline:pw")}}})  # fmt: skip
    store = CredentialStore(auth_file=cfg)
    assert store.lookup("h.example") == Credential("hu", "hs")
    assert store.lookup("i.example") == Credential("inline", "pw")
    assert store.lookup("n.example") is None
    with pytest.raises(AuthError) as e:
        store.lookup("b.example")
    assert "secret-ish" not in str(e.value) and "exit 3" in str(e.value)
    with pytest.raises(AuthError, match="not installed"):
        store.lookup("m.example")


def test_bad_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(AuthError, match="cannot read auth file"):
        CredentialStore(auth_file=bad).lookup("x")
    cfg = write_config(tmp_path / "c.json", {"auths": {"x": {"auth": "%%%"}}})
    with pytest.raises(AuthError, match="undecodable"):
        CredentialStore(auth_file=cfg).lookup("x")
    assert Credential.parse("u:p:q") == Credential("u", "p:q")
    with pytest.raises(AuthError):
        Credential.parse("nocolon")


def test_challenges():
    h = (
        'Bearer realm="https://a/token",service="reg",scope="repository:x:pull,push", '
        'Basic realm="b"'
    )
    chs = parse_challenges(h)
    assert [c.scheme for c in chs] == ["bearer", "basic"]
    assert chs[0].realm == "https://a/token" and chs[0].service == "reg"
    assert chs[0].scopes == ("repository:x:pull,push",)
    assert pick_challenge('Basic realm="r"').scheme == "basic"
    assert pick_challenge(h).scheme == "bearer"
    assert pick_challenge(None) is None
    esc = parse_challenges(r'Bearer realm="a\"b",error=insufficient_scope')[0]
    assert esc.realm == 'a"b' and esc.error == "insufficient_scope"


def test_token_cache_expiry():
    now = [1000.0]
    cache = TokenCache(clock=lambda: now[0])
    ch = pick_challenge('Bearer realm="r",service="s"')
    k = cache.key("h", ch, ("b", "a", "a"))
    assert k == cache.key("h", ch, ("a", "b"))
    cache.put(k, "t", 100)
    assert cache.get(k) == "t"
    now[0] += 89
    assert cache.get(k) == "t"
    now[0] += 2  # within the 10 s margin before expiry
    assert cache.get(k) is None
