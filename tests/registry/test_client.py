"""Protocol corners of the registry client and its transport against an in-memory registry
(httpx.MockTransport)."""

import hashlib
import logging

import httpx
import pytest

from registry import mediatype as mt
from registry.client import RegistryClient
from registry.credentials import Credential
from registry.errors import AuthError, DigestMismatch, NotFound, RegistryError, Unsupported
from registry.options import RegistryOptions
from registry.reference import parse_reference
from registry.remote import RemoteSink, open_remote
from registry.transfer import write
from registry.transport.ping import is_local

from .fakeregistry import BrokenStream, FakeRegistry
from .images import blobs_of, random_image, random_index, validate


def make_client(fake, tmp_path, creds=True, **kw):
    sleeps = []
    options = RegistryOptions(
        transport=fake.transport(),
        credentials={fake.host: Credential(fake.user, fake.password)} if creds else {},
        auth_file=str(tmp_path / "no-auth.json"),
        **kw,
    )
    client = RegistryClient(options, sleep=sleeps.append)
    client.sleeps = sleeps
    return client


def ref(fake, name="app/x:1"):
    return parse_reference(f"{fake.host}/{name}")


@pytest.mark.parametrize("auth", [None, "basic", "bearer"])
def test_push_pull_roundtrip(tmp_path, auth):
    fake = FakeRegistry(auth=auth)
    client = make_client(fake, tmp_path)
    idx = random_index(10)
    desc = write(idx, RemoteSink(client, ref(fake)))
    assert desc.digest == idx.digest
    pulled = open_remote(client, ref(fake))
    assert pulled.digest == idx.digest
    assert validate(pulled) == validate(idx)
    assert blobs_of(pulled) == blobs_of(idx)
    # the tag was pushed last, after every blob and child manifest
    puts = [r for r in fake.requests if r.method == "PUT"]
    assert puts[-1].url.path.endswith("/manifests/1")
    if auth == "bearer":
        # one token per scope set, cached: (pull) and (pull,push)
        assert fake.count("GET", "auth.example") == 2


def test_blobs_uploaded_once_and_head_skips(tmp_path):
    fake = FakeRegistry()
    client = make_client(fake, tmp_path)
    img = random_image(3)
    write(img, RemoteSink(client, ref(fake)))
    posts = fake.count("POST", "/uploads/")
    assert posts == 4  # three layers and the config, each once
    write(img, RemoteSink(client, ref(fake, "app/x:2")))
    assert fake.count("POST", "/uploads/") == posts  # HEAD found them all


def test_cross_repo_mount(tmp_path):
    fake = FakeRegistry()
    client = make_client(fake, tmp_path)
    write(random_image(4), RemoteSink(client, ref(fake, "src/img:1")))
    src = open_remote(client, ref(fake, "src/img:1"))
    write(src, RemoteSink(client, ref(fake, "dst/img:1")))
    mounts = [r for r in fake.requests if r.method == "POST" and "mount=" in str(r.url)]
    assert len(mounts) == 4
    assert all(r.url.params["from"] == "src/img" for r in mounts)
    assert fake.count("PUT", "/dst/img/blobs/uploads/") == 0
    assert validate(open_remote(client, ref(fake, "dst/img:1")))


def test_chunked_upload(tmp_path):
    fake = FakeRegistry()
    client = make_client(fake, tmp_path, chunk_size=1000)
    img = random_image(5, ("none",), size=3000)
    write(img, RemoteSink(client, ref(fake)))
    layer = img.layers()[0]
    assert fake.count("PATCH", "/uploads/") == -(-layer.size // 1000)
    assert blobs_of(open_remote(client, ref(fake))) == blobs_of(img)


def test_upload_restarts_with_reopened_source(tmp_path):
    fake = FakeRegistry()
    client = make_client(fake, tmp_path)
    data = b"layer-bytes" * 100
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    opened = []

    def opener():
        import io

        opened.append(1)
        return io.BytesIO(data)

    def fail_first_put(request):
        if request.method == "PUT" and "/uploads/" in request.url.path and len(opened) == 1:
            request.read()
            return httpx.Response(503, json={"errors": [{"code": "UNAVAILABLE"}]})
        return None

    fake.faults.append(fail_first_put)
    assert client.upload_blob(ref(fake), digest, len(data), opener) == "uploaded"
    assert len(opened) == 2
    assert fake.count("POST", "/uploads/") == 2  # a fresh session, not a half-written one
    assert fake.blobs[digest] == data


def test_429_retry_after(tmp_path):
    fake = FakeRegistry()
    client = make_client(fake, tmp_path)
    write(random_image(6), RemoteSink(client, ref(fake)))
    hits = []

    def throttle(request):
        if "/manifests/" in request.url.path and len(hits) < 2:
            hits.append(1)
            return httpx.Response(429, headers={"Retry-After": "7"})
        return None

    fake.faults.append(throttle)
    client.sleeps.clear()
    assert open_remote(client, ref(fake)).media_type == mt.OCI_MANIFEST
    assert client.sleeps == [7.0, 7.0]


def test_retries_exhausted_is_temporary(tmp_path):
    fake = FakeRegistry()
    client = make_client(fake, tmp_path, retries=2)
    fake.faults.append(lambda r: httpx.Response(503) if "/manifests/" in r.url.path else None)
    with pytest.raises(RegistryError) as e:
        open_remote(client, ref(fake))
    assert e.value.status == 503 and e.value.temporary
    assert fake.count("GET", "/manifests/") == 3
    assert len(client.sleeps) == 2 and all(0 < s <= 10 for s in client.sleeps)


def test_connection_errors_retried(tmp_path):
    fake = FakeRegistry()
    client = make_client(fake, tmp_path)
    write(random_image(6), RemoteSink(client, ref(fake)))
    fails = []

    def flaky(request):
        if len(fails) < 2:
            fails.append(1)
            raise httpx.ConnectError("connection refused")
        return None

    fake.faults.append(flaky)
    assert open_remote(client, ref(fake)).digest


@pytest.mark.parametrize("range_support", [True, False])
def test_reset_mid_blob_resumes(tmp_path, range_support):
    fake = FakeRegistry()
    fake.range_support = range_support
    client = make_client(fake, tmp_path)
    data = bytes(range(256)) * 4000
    digest = fake.add_blob("app/x", data)
    resets = []

    def reset_once(request):
        if request.method == "GET" and "/blobs/sha256:" in request.url.path and not resets:
            resets.append(1)
            return httpx.Response(200, stream=BrokenStream(data[:300_000]))
        return None

    fake.faults.append(reset_once)
    with client.open_blob(ref(fake), digest, len(data)) as f:
        assert f.read() == data
    gets = [r for r in fake.requests if r.method == "GET" and "/blobs/" in r.url.path]
    assert len(gets) == 2
    assert gets[1].headers.get("Range") == "bytes=300000-"


def test_blob_digest_and_size_mismatch(tmp_path):
    fake = FakeRegistry()
    client = make_client(fake, tmp_path)
    data = b"x" * 5000
    digest = fake.add_blob("app/x", data)
    fake.blobs[digest] = b"y" * 5000
    with pytest.raises(DigestMismatch, match="content digest"):
        client.open_blob(ref(fake), digest, len(data)).read()
    fake.blobs[digest] = data[:-1]
    with pytest.raises(DigestMismatch, match="4999 bytes"):
        client.open_blob(ref(fake), digest, len(data)).read()


def test_manifest_digest_mismatch(tmp_path):
    fake = FakeRegistry()
    client = make_client(fake, tmp_path)
    img = random_image(7)
    write(img, RemoteSink(client, ref(fake)))
    body, media = fake.manifests[("app/x", img.digest)]
    fake.manifests[("app/x", img.digest)] = (body + b" ", media)
    with pytest.raises(DigestMismatch):
        open_remote(client, ref(fake, f"app/x@{img.digest}"))

    def lying_header(request):
        if "/manifests/1" in request.url.path:
            h = {"Content-Type": media, "Docker-Content-Digest": "sha256:" + "0" * 64}
            return httpx.Response(200, headers=h, content=body)
        return None

    fake.faults.append(lying_header)
    with pytest.raises(DigestMismatch, match="expected sha256:000"):
        open_remote(client, ref(fake))


def test_range_read(tmp_path):
    fake = FakeRegistry()
    client = make_client(fake, tmp_path)
    data = bytes(range(256)) * 10
    digest = fake.add_blob("app/x", data)
    assert client.read_range(ref(fake), digest, 100, 50) == data[100:150]
    fake.range_support = False
    assert client.read_range(ref(fake), digest, 1000, 7) == data[1000:1007]


def test_redirect_to_other_host_drops_auth(tmp_path):
    fake = FakeRegistry(auth="bearer")
    client = make_client(fake, tmp_path)
    data = b"stored elsewhere" * 100
    digest = fake.add_blob("app/x", data)
    seen = []

    def redirect(request):
        if request.url.host == "storage.example":
            seen.append(request.headers.get("Authorization"))
            return httpx.Response(200, content=data)
        if "/blobs/sha256:" in request.url.path and request.headers.get("Authorization"):
            return httpx.Response(307, headers={"Location": "https://storage.example/b?sig=1"})
        return None

    fake.faults.append(redirect)
    with client.open_blob(ref(fake), digest, len(data)) as f:
        assert f.read() == data
    assert seen == [None]
    blob_gets = [r for r in fake.requests if "/blobs/sha256:" in r.url.path]
    assert blob_gets[-1].headers["Authorization"].startswith("Bearer ")


def test_token_expiry_refresh(tmp_path):
    fake = FakeRegistry(auth="bearer")
    client = make_client(fake, tmp_path)
    write(random_image(8), RemoteSink(client, ref(fake)))
    tokens_before = fake.count("GET", "auth.example")
    fake.valid_tokens.clear()  # every token the client holds has expired server-side
    assert validate(open_remote(client, ref(fake)))
    assert fake.count("GET", "auth.example") == tokens_before + 1


def test_basic_auth_wrong_password_keeps_secret(tmp_path, caplog):
    fake = FakeRegistry(auth="basic")
    client = make_client(fake, tmp_path, creds=False)
    client.credentials._explicit[fake.host] = Credential("alice", "wrong-pw-XYZ")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError) as e:
        open_remote(client, ref(fake))
    assert e.value.status == 401 and e.value.codes == ("UNAUTHORIZED",)
    assert not e.value.temporary
    text = str(e.value) + caplog.text
    assert "wrong-pw-XYZ" not in text and "YWxpY2U6" not in text  # base64 of "alice:"


def test_bearer_without_credentials_is_anonymous_then_denied(tmp_path):
    fake = FakeRegistry(auth="bearer")
    client = make_client(fake, tmp_path, creds=False)
    with pytest.raises(AuthError, match="token endpoint https://auth.example/token: HTTP 401"):
        open_remote(client, ref(fake))


def test_not_found_codes(tmp_path):
    fake = FakeRegistry()
    client = make_client(fake, tmp_path)
    with pytest.raises(NotFound) as e:
        open_remote(client, ref(fake, "nope:1"))
    assert e.value.codes == ("MANIFEST_UNKNOWN",) and e.value.status == 404
    assert client.stat_blob(ref(fake), "sha256:" + "1" * 64) is None
    with pytest.raises(NotFound, match="BLOB_UNKNOWN"):
        client.open_blob(ref(fake), "sha256:" + "1" * 64, 10)  # at open, not at first read


def test_schema1_from_registry(tmp_path):
    fake = FakeRegistry()
    client = make_client(fake, tmp_path)
    fake.manifests[("app/x", "1")] = (
        b'{"schemaVersion":1,"fsLayers":[]}',
        mt.DOCKER_SCHEMA1_SIGNED,
    )
    with pytest.raises(Unsupported, match="schema 1"):
        open_remote(client, ref(fake))


def test_localhost_falls_back_to_http(tmp_path):
    fake = FakeRegistry(host="localhost")
    write_client = make_client(fake, tmp_path)

    def no_tls(request):
        if request.url.scheme == "https" and request.url.host == "localhost":
            raise httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number")
        return None

    fake.faults.append(no_tls)
    write(random_image(9), RemoteSink(write_client, parse_reference("localhost/app:1")))
    schemes = {r.url.scheme for r in fake.requests}
    assert schemes == {"https", "http"}
    assert fake.count("GET", "https://localhost/v2/") == 1  # tried once, not retried


def test_remote_host_never_falls_back_to_http(tmp_path):
    fake = FakeRegistry(host="reg.example")
    client = make_client(fake, tmp_path, retries=0)
    fake.faults.append(lambda r: (_ for _ in ()).throw(httpx.ConnectError("tls failed")))
    with pytest.raises(RegistryError, match="ConnectError"):
        open_remote(client, ref(fake))
    assert {r.url.scheme for r in fake.requests} == {"https"}


def test_is_local():
    assert is_local("localhost:5000") and is_local("127.0.0.1") and is_local("127.1.2.3:80")
    assert is_local("[::1]:5000") and is_local("localhost")
    assert not is_local("reg.example:5000") and not is_local("10.0.0.1")


def test_insecure_allows_http_for_remote_hosts(tmp_path):
    fake = FakeRegistry(host="reg.example")
    client = make_client(fake, tmp_path, insecure=True)
    fake.faults.append(
        lambda r: (
            (_ for _ in ()).throw(httpx.ConnectError("wrong version number"))
            if r.url.scheme == "https"
            else None
        )
    )
    write(random_image(31), RemoteSink(client, ref(fake)))
    assert validate(open_remote(client, ref(fake)))
    assert fake.count("GET", "https://reg.example/v2/") == 1


def test_identity_token_uses_oauth2_refresh(tmp_path):
    fake = FakeRegistry(auth="bearer")
    posted = []

    def oauth(request):
        if request.url.host == "auth.example" and request.method == "POST":
            form = dict(httpx.QueryParams(request.read().decode()))
            posted.append(form)
            if form.get("refresh_token") != "refresh-XYZ":
                return httpx.Response(401)
            fake.valid_tokens.add("oauth-token")
            return httpx.Response(200, json={"access_token": "oauth-token", "expires_in": 60})
        return None

    fake.faults.append(oauth)
    client = make_client(fake, tmp_path, creds=False)
    client.credentials._explicit[fake.host] = Credential("<token>", "", "refresh-XYZ")
    write(random_image(32), RemoteSink(client, ref(fake)))
    assert posted and posted[0]["grant_type"] == "refresh_token"
    assert posted[0]["service"] == "fake" and "repository:app/x:pull,push" in posted[0]["scope"]
    assert fake.count("GET", "auth.example") == 0


def test_tokens_and_passwords_stay_out_of_logs(tmp_path, caplog):
    fake = FakeRegistry(auth="bearer", password="pw-SECRET-123")
    client = make_client(fake, tmp_path)
    caplog.set_level(logging.DEBUG)
    write(random_image(33), RemoteSink(client, ref(fake)))
    fake.valid_tokens.clear()
    open_remote(client, ref(fake))
    assert "tok1" not in caplog.text and "pw-SECRET-123" not in caplog.text
    assert "_state=" not in caplog.text  # upload session state is not logged either
    assert "PUT https://reg.example/v2/app/x/manifests/1 -> 201" in caplog.text


def test_retry_after_http_date(tmp_path):
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    fake = FakeRegistry()
    client = make_client(fake, tmp_path)
    write(random_image(34), RemoteSink(client, ref(fake)))
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    hits = []

    def throttle(request):
        if "/manifests/" in request.url.path and not hits:
            hits.append(1)
            return httpx.Response(503, headers={"Retry-After": when})
        return None

    fake.faults.append(throttle)
    client.sleeps.clear()
    open_remote(client, ref(fake))
    assert len(client.sleeps) == 1 and 25 < client.sleeps[0] <= 30


def test_push_by_digest_only(tmp_path):
    fake = FakeRegistry()
    client = make_client(fake, tmp_path)
    img = random_image(35)
    write(img, RemoteSink(client, ref(fake, f"app/x@{img.digest}")))
    assert ("app/x", img.digest) in fake.manifests
    with pytest.raises(Exception, match="names another digest"):
        write(img, RemoteSink(client, ref(fake, "app/x@sha256:" + "0" * 64)))
