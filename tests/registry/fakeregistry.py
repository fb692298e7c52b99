"""An in-memory distribution registry behind httpx.MockTransport, with fault injection.

Just enough of the API for the client: ping, manifests (GET/HEAD/PUT), blobs (HEAD/GET with
Range), uploads (POST with mount, PATCH, PUT), a Basic or Bearer auth gate and a token realm.
``faults`` are callables tried first on every request; one returning a Response answers it.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re

import httpx

REALM = "https://auth.example/token"


class BrokenStream(httpx.SyncByteStream):
    """Yields ``data`` then fails as a reset connection would."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self):
        yield self.data
        raise httpx.ReadError("connection reset by peer")


class FakeRegistry:
    def __init__(self, host="reg.example", auth=None, user="alice", password="s3cret"):
        self.host, self.auth, self.user, self.password = host, auth, user, password
        self.blobs: dict[str, bytes] = {}
        self.repo_blobs: dict[str, set[str]] = {}
        self.manifests: dict[tuple[str, str], tuple[bytes, str]] = {}
        self.uploads: dict[str, bytearray] = {}
        self.requests: list[httpx.Request] = []
        self.faults: list = []
        self.valid_tokens: set[str] = set()
        self.token_count = itertools.count(1)
        self.range_support = True

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # helpers for tests
    def add_blob(self, repo: str, data: bytes) -> str:
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[d] = data
        self.repo_blobs.setdefault(repo, set()).add(d)
        return d

    def count(self, method: str, pattern: str) -> int:
        return sum(
            1 for r in self.requests if r.method == method and re.search(pattern, str(r.url))
        )

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        for fault in list(self.faults):
            resp = fault(request)
            if resp is not None:
                return resp
        if request.url.host == "auth.example":
            return self._token(request)
        if request.url.host != self.host:
            return httpx.Response(404)
        denied = self._gate(request)
        if denied is not None:
            return denied
        path = request.url.path
        if path == "/v2/":
            return httpx.Response(200, json={})
        m = re.fullmatch(r"/v2/(.+)/blobs/uploads/(.*)", path)
        if m:
            return self._upload(request, *m.groups())
        m = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/(.+)", path)
        if m:
            repo, kind, ident = m.groups()
            if kind == "manifests":
                return self._manifest(request, repo, ident)
            return self._blob(request, repo, ident)
        return httpx.Response(404, json={"errors": [{"code": "NAME_UNKNOWN", "message": path}]})

    # auth
    def _gate(self, request):
        if self.auth is None:
            return None
        given = request.headers.get("Authorization", "")
        if self.auth == "basic":
            good = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            if given == good:
                return None
            return httpx.Response(
                401, headers={"WWW-Authenticate": 'Basic realm="fake"'},
                json={"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
            )  # fmt: skip
        token = given.removeprefix("Bearer ")
        if given.startswith("Bearer ") and token in self.valid_tokens:
            return None
        repo = re.match(r"/v2/([^/]+(?:/[^/]+)*?)/(?:manifests|blobs|tags)", request.url.path)
        scope = f' scope="repository:{repo.group(1)}:pull"' if repo else ""
        return httpx.Response(
            401,
            headers={"WWW-Authenticate": f'Bearer realm="{REALM}",service="fake"{scope}'},
            json={"errors": [{"code": "UNAUTHORIZED", "message": "token required"}]},
        )

    def _token(self, request):
        want = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != want:
            return httpx.Response(401, json={"errors": [{"code": "UNAUTHORIZED"}]})
        tok = f"tok{next(self.token_count)}"
        self.valid_tokens.add(tok)
        return httpx.Response(200, json={"token": tok, "expires_in": 300})

    # API
    def _manifest(self, request, repo, ident):
        if request.method == "PUT":
            body = request.read()
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            mt = request.headers["Content-Type"]
            self.manifests[(repo, ident)] = self.manifests[(repo, digest)] = (body, mt)
            return httpx.Response(201, headers={"Docker-Content-Digest": digest})
        if (repo, ident) not in self.manifests:
            return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
        body, mt = self.manifests[(repo, ident)]
        headers = {
            "Content-Type": mt,
            "Docker-Content-Digest": "sha256:" + hashlib.sha256(body).hexdigest(),
            "Content-Length": str(len(body)),
        }
        return httpx.Response(
            200, headers=headers, content=b"" if request.method == "HEAD" else body
        )

    def _blob(self, request, repo, digest):
        if digest not in self.repo_blobs.get(repo, set()):
            return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN"}]})
        data = self.blobs[digest]
        if request.method == "HEAD":
            return httpx.Response(200, headers={"Content-Length": str(len(data))})
        rng = request.headers.get("Range")
        if rng and self.range_support:
            start, _, end = rng.removeprefix("bytes=").partition("-")
            s, e = int(start), int(end) if end else len(data) - 1
            headers = {"Content-Range": f"bytes {s}-{e}/{len(data)}"}
            return httpx.Response(206, headers=headers, content=data[s : e + 1])
        return httpx.Response(200, content=data)

    def _upload(self, request, repo, uid):
        if request.method == "POST":
            mount, src = request.url.params.get("mount"), request.url.params.get("from")
            if mount and mount in self.repo_blobs.get(src, set()):
                self.repo_blobs.setdefault(repo, set()).add(mount)
                return httpx.Response(201, headers={"Location": f"/v2/{repo}/blobs/{mount}"})
            uid = f"u{len(self.uploads) + 1}"
            self.uploads[uid] = bytearray()
            return httpx.Response(
                202, headers={"Location": f"/v2/{repo}/blobs/uploads/{uid}?_state=x"}
            )
        buf = self.uploads[uid]
        buf += request.read()
        if request.method == "PATCH":
            return httpx.Response(
                202, headers={"Location": f"/v2/{repo}/blobs/uploads/{uid}?_state=y",
                              "Range": f"0-{len(buf) - 1}"},
            )  # fmt: skip
        digest = request.url.params["digest"]
        if "sha256:" + hashlib.sha256(bytes(buf)).hexdigest() != digest:
            return httpx.Response(
                400, json={"errors": [{"code": "DIGEST_INVALID", "message": "no"}]}
            )
        self.add_blob(repo, bytes(buf))
        return httpx.Response(201, headers={"Docker-Content-Digest": digest})
