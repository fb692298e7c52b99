"""The registry HTTP client: the only module of rconv that imports httpx.

Implements the distribution API (OCI distribution-spec) over one ``httpx.Client``:

* hosts: ``https`` first; plain ``http`` allowed for localhost / 127.0.0.0/8 / ::1 and with
  ``insecure`` (which also skips TLS verification), chosen once per host by pinging ``/v2/``;
* auth: anonymous, Basic, Bearer token challenges (GET with Basic credentials, or OAuth2
  refresh with an identity token), tokens cached per scope and refreshed on a 401;
* errors: every httpx exception and every unexpected status becomes a ``RegistryError`` in
  ``_status_error`` / ``_transport_error`` (status, distribution error codes, ``temporary``);
* retries with exponential backoff and jitter on connection errors, 408/429/5xx, honouring
  ``Retry-After``; request bodies come from openers and are re-read on each attempt;
* redirects followed by hand so that Authorization never reaches another host;
* blobs: streamed, size and digest verified at EOF, resumed with Range after a reset;
  uploads: HEAD skip, cross-repo mount, monolithic or chunked, restarted whole when temporary.

Nothing here logs or raises a header value, a token or a password.
"""

from __future__ import annotations

import base64
import email.utils
import io
import ipaddress
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import httpx

from . import mediatype as mt
from .auth import Challenge, TokenCache, pick_challenge, repo_scope
from .credentials import Credential, CredentialStore
from .digest import check_digest, digest_of, verifying
from .errors import AuthError, DigestMismatch, InvalidManifest, NotFound, RegistryError
from .model import MANIFEST_LIMIT, Descriptor, Opener
from .options import RegistryOptions
from .reference import Reference

log = logging.getLogger("rconv.registry")


class _RedactQueries(logging.Filter):
    """httpx logs every request URL at INFO; query strings may carry signed storage URLs or
    upload state, so they are cut from its records (only URLs are in its arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _safe(a) if isinstance(a, httpx.URL) and a.query else a for a in record.args
            )
        return True


logging.getLogger("httpx").addFilter(_RedactQueries())

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
TEMPORARY_CODES = frozenset({"TOOMANYREQUESTS", "UNAVAILABLE"})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
READ_CHUNK = 1 << 20
Content = bytes | Opener | None


def is_local(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1, with or without a port: plain http is allowed there."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or "]" in host else host
    name = name.strip("[]")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _safe(url: httpx.URL | str) -> str:
    """URL without its query string, for messages (upload state and token scopes stay out)."""
    u = httpx.URL(str(url))
    return str(u.copy_with(query=None, fragment=None))


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


@dataclass
class _Host:
    name: str
    scheme: str
    challenge: Challenge | None


class RegistryClient:
    """Thread-safe client for any number of registries; close it (or use ``with``)."""

    def __init__(
        self,
        options: RegistryOptions | None = None,
        credentials: CredentialStore | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.options = options or RegistryOptions()
        o = self.options
        self.credentials = credentials or CredentialStore(o.credentials, o.auth_file)
        verify: bool | ssl.SSLContext = True
        if o.insecure:
            verify = False
        elif o.ca_file:
            verify = ssl.create_default_context(cafile=o.ca_file)
        self._http = httpx.Client(
            transport=o.transport,  # type: ignore[arg-type]
            verify=verify,
            timeout=httpx.Timeout(o.timeout, connect=min(o.timeout, 30.0)),
            follow_redirects=False,
            # identity: blob bytes must arrive exactly as stored for the digest to hold
            headers={"User-Agent": o.user_agent, "Accept-Encoding": "identity"},
            limits=httpx.Limits(max_connections=max(4 * o.jobs, 16)),
        )
        self._sleep = sleep
        self._hosts: dict[str, _Host] = {}
        self._hosts_lock = threading.Lock()
        self.tokens = TokenCache()

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- errors, in one place

    def _status_error(self, resp: httpx.Response, what: str) -> RegistryError:
        codes: tuple[str, ...] = ()
        detail = ""
        try:
            body = b"" if resp.request.method == "HEAD" else _read_limited(resp, 64 << 10)
            errors = httpx.Response(200, content=body).json().get("errors") or []
            codes = tuple(str(e.get("code", "")) for e in errors if isinstance(e, dict))
            if errors and isinstance(errors[0], dict) and errors[0].get("message"):
                detail = f": {str(errors[0]['message'])[:200]}"
        except Exception:
            pass
        finally:
            resp.close()
        status = resp.status_code
        temporary = status in RETRY_STATUS or bool(TEMPORARY_CODES & set(codes))
        text = f"{what}: HTTP {status}" + (f" {codes[0]}" if codes else "") + detail
        cls: type[RegistryError] = RegistryError
        if status in (401, 403):
            cls = AuthError
        elif status == 404:
            cls = NotFound
        return cls(text, status=status, codes=codes, temporary=temporary)

    @staticmethod
    def _transport_error(exc: Exception, what: str) -> RegistryError:
        text = str(exc) or type(exc).__name__
        temporary = isinstance(exc, httpx.TransportError) and not isinstance(
            exc, httpx.UnsupportedProtocol | httpx.ProxyError
        )
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            temporary = False
        return RegistryError(f"{what}: {type(exc).__name__}: {text}", temporary=temporary)

    # ----------------------------------------------------------------- sending, retrying

    def _backoff(self, attempt: int, retry_after: float | None) -> None:
        o = self.options
        if retry_after is not None:
            delay = min(max(retry_after, 0.0), o.max_retry_after)
        else:
            cap = min(o.max_backoff, o.backoff * (2**attempt))
            delay = cap * (0.5 + random.random() / 2)
        self._sleep(delay)

    def _send(
        self,
        method: str,
        url: httpx.URL,
        headers: Mapping[str, str],
        content: Content,
        *,
        retry: bool = True,
    ) -> httpx.Response:
        """Send with retries (connection errors, 408/429/5xx) and safe redirects."""
        attempts = self.options.retries + 1 if retry else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                resp = self._follow(method, url, dict(headers), content)
            except httpx.HTTPError as e:
                err = self._transport_error(e, f"{method} {_safe(url)}")
                if not err.temporary or last:
                    raise err from None
                log.debug("retrying %s %s after %s", method, _safe(url), type(e).__name__)
                self._backoff(attempt, None)
                continue
            if resp.status_code in RETRY_STATUS and not last:
                delay = _retry_after(resp.headers.get("Retry-After"))
                resp.close()
                log.debug("retrying %s %s after HTTP %d", method, _safe(url), resp.status_code)
                self._backoff(attempt, delay)
                continue
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def _follow(
        self, method: str, url: httpx.URL, headers: dict[str, str], content: Content
    ) -> httpx.Response:
        for _ in range(MAX_REDIRECTS + 1):
            body: Any = content() if callable(content) else content
            if hasattr(body, "read"):
                body = _iter_file(body)
            req = self._http.build_request(method, url, headers=headers, content=body)
            resp = self._http.send(req, stream=True)
            log.debug("%s %s -> %d", method, _safe(url), resp.status_code)
            location = resp.headers.get("Location")
            if resp.status_code not in REDIRECT_STATUS or not location:
                return resp
            resp.close()
            target = url.join(location)
            if _origin(target) != _origin(url):
                # a redirect to storage (S3, a CDN) must not carry the registry's credentials
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if resp.status_code == 303:
                method, content = "GET", None
            url = target
        raise RegistryError(f"{method} {_safe(url)}: more than {MAX_REDIRECTS} redirects")

    # ----------------------------------------------------------------- hosts and auth

    def _host(self, name: str) -> _Host:
        with self._hosts_lock:
            host = self._hosts.get(name)
            if host is None:
                host = self._ping(name)
                self._hosts[name] = host
            return host

    def _ping(self, name: str) -> _Host:
        schemes = ["https"]
        if self.options.insecure or is_local(name):
            schemes.append("http")
        first_error: RegistryError | None = None
        for i, scheme in enumerate(schemes):
            url = httpx.URL(f"{scheme}://{name}/v2/")
            # only the last candidate is retried: a TLS attempt on a plain-http port fails fast
            try:
                resp = self._send("GET", url, {}, None, retry=i == len(schemes) - 1)
            except RegistryError as e:
                first_error = first_error or e
                continue
            status = resp.status_code
            challenge = pick_challenge(resp.headers.get("WWW-Authenticate"))
            resp.close()
            if status == 200 or (status == 401 and challenge is not None):
                return _Host(name, scheme, challenge if status == 401 else None)
            err = RegistryError(
                f"GET {_safe(url)}: HTTP {status}: not an OCI distribution registry",
                status=status,
            )
            first_error = first_error or err
        assert first_error is not None
        raise first_error

    def _authorization(self, host: _Host, scopes: tuple[str, ...]) -> str | None:
        ch = host.challenge
        if ch is None:
            return None
        cred = self.credentials.lookup(host.name)
        if ch.scheme == "basic":
            return _basic(cred) if cred else None
        key = self.tokens.key(host.name, ch, scopes)
        token = self.tokens.get(key)
        if token is None:
            with self.tokens.fetch_lock:
                token = self.tokens.get(key) or self._fetch_token(host, ch, scopes, cred, key)
        return f"Bearer {token}"

    def _fetch_token(
        self,
        host: _Host,
        ch: Challenge,
        scopes: tuple[str, ...],
        cred: Credential | None,
        key: tuple,
    ) -> str:
        if not ch.realm:
            raise AuthError(f"{host.name}: bearer challenge without a realm")
        realm = httpx.URL(ch.realm)
        if realm.scheme not in ("http", "https"):
            raise AuthError(f"{host.name}: token realm is not an http(s) URL")
        all_scopes = sorted(set(scopes))
        headers: dict[str, str] = {}
        if cred is not None and cred.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": cred.identity_token,
                    "client_id": "rconv", "scope": " ".join(all_scopes)}  # fmt: skip
            if ch.service:
                form["service"] = ch.service
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = httpx.QueryParams(form).__str__().encode()
            resp = self._send("POST", realm, headers, body)
        else:
            params: list[tuple[str, str]] = [("service", ch.service)] if ch.service else []
            params += [("scope", s) for s in all_scopes]
            if cred is not None:
                headers["Authorization"] = _basic(cred)
            resp = self._send("GET", realm.copy_merge_params(params), headers, None)
        what = f"token endpoint {_safe(realm)}"
        if resp.status_code != 200:
            err = self._status_error(resp, what)
            raise AuthError(str(err), status=err.status, codes=err.codes, temporary=err.temporary)
        try:
            data = httpx.Response(200, content=_read_limited(resp, 1 << 20)).json()
            token = data.get("token") or data.get("access_token")
            expires_in = data.get("expires_in")
        except Exception:
            token, expires_in = None, None
        finally:
            resp.close()
        if not isinstance(token, str) or not token:
            raise AuthError(f"{what}: answer has no token")
        self.tokens.put(key, token, expires_in if isinstance(expires_in, int | float) else None)
        return token

    def _request(
        self,
        method: str,
        ref: Reference,
        target: str | httpx.URL,
        *,
        push: bool = False,
        extra_scopes: tuple[str, ...] = (),
        headers: Mapping[str, str] | None = None,
        content: Content = None,
        ok: tuple[int, ...] = (200,),
        retry: bool = True,
        stream: bool = False,
    ) -> httpx.Response:
        """One registry API call for repository ``ref``; raises RegistryError unless ``ok``."""
        host = self._host(ref.api_host)
        base = httpx.URL(f"{host.scheme}://{host.name}")
        url = base.join(target) if isinstance(target, str) else target
        scopes = (repo_scope(ref.repository, push), *extra_scopes)
        what = f"{method} {_safe(url)}"
        for auth_round in range(2):
            hdrs = dict(headers or {})
            auth = self._authorization(host, scopes) if _origin(url) == _origin(base) else None
            if auth:
                hdrs["Authorization"] = auth
            resp = self._send(method, url, hdrs, content, retry=retry)
            if resp.status_code == 401 and auth_round == 0:
                challenge = pick_challenge(resp.headers.get("WWW-Authenticate"))
                if challenge is not None:
                    # expired or too narrow token, or auth needed though /v2/ was open
                    resp.close()
                    if host.challenge is not None and host.challenge.scheme == "bearer":
                        self.tokens.drop(self.tokens.key(host.name, host.challenge, scopes))
                    host.challenge = challenge
                    continue
            if resp.status_code not in ok:
                raise self._status_error(resp, what)
            if not stream:
                try:
                    resp.read()
                except httpx.HTTPError as e:
                    resp.close()
                    raise self._transport_error(e, what) from None
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    # ----------------------------------------------------------------- manifests

    def get_manifest(self, ref: Reference) -> tuple[bytes, str]:
        """Manifest bytes and media type; checked against the digest in ``ref`` or the
        registry's Docker-Content-Digest header."""
        what = f"manifest {ref}"
        attempts = self.options.retries + 1
        for attempt in range(attempts):
            resp = self._request(
                "GET", ref, f"/v2/{ref.repository}/manifests/{ref.identifier}",
                headers={"Accept": ", ".join(mt.MANIFEST_ACCEPT)}, stream=True,
            )  # fmt: skip
            try:
                data = _read_limited(resp, MANIFEST_LIMIT + 1)
                break
            except httpx.HTTPError as e:
                # a body cut short (reset, early close) is worth a new GET like any other
                # temporary failure; _send only retries until the response head
                err = self._transport_error(e, what)
                if not err.temporary or attempt == attempts - 1:
                    raise err from None
                self._backoff(attempt, None)
            finally:
                resp.close()
        if len(data) > MANIFEST_LIMIT:
            raise InvalidManifest(f"{what}: larger than {MANIFEST_LIMIT} bytes")
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        expected = ref.digest or _header_digest(resp.headers.get("Docker-Content-Digest"))
        if expected:
            got = digest_of(data, expected.split(":", 1)[0])
            if got != expected:
                raise DigestMismatch(f"{what}: content digest is {got}, expected {expected}")
        return data, media_type

    def resolve(self, ref: Reference) -> Descriptor:
        """Descriptor of the manifest ``ref`` names (HEAD, falling back to GET)."""
        resp = self._request(
            "HEAD", ref, f"/v2/{ref.repository}/manifests/{ref.identifier}",
            headers={"Accept": ", ".join(mt.MANIFEST_ACCEPT)},
        )  # fmt: skip
        digest = _header_digest(resp.headers.get("Docker-Content-Digest"))
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        size = resp.headers.get("Content-Length")
        if digest and media_type and size and size.isdigit():
            raw = {"mediaType": media_type, "digest": digest, "size": int(size)}
            return Descriptor(media_type, digest, int(size), raw)
        data, media_type = self.get_manifest(ref)
        return Descriptor.of(media_type, data)

    def put_manifest(self, ref: Reference, raw: bytes, media_type: str) -> str:
        """PUT manifest bytes under ``ref.identifier`` (tag or digest); returns the digest."""
        digest = digest_of(raw)
        try:
            resp = self._request(
                "PUT", ref, f"/v2/{ref.repository}/manifests/{ref.identifier}", push=True,
                headers={"Content-Type": media_type}, content=raw, ok=(200, 201, 202),
            )  # fmt: skip
        except RegistryError as err:
            # The answer may have been lost after the registry stored the manifest: then the
            # push did succeed, and saying otherwise would misreport a moved tag.
            if err.status is None and err.temporary and self._stored(ref, digest):
                return digest
            raise
        answered = _header_digest(resp.headers.get("Docker-Content-Digest"))
        if answered and answered.startswith("sha256:") and answered != digest:
            raise DigestMismatch(f"manifest {ref}: registry stored {answered}, sent {digest}")
        return digest

    def _stored(self, ref: Reference, digest: str) -> bool:
        try:
            return self.resolve(ref).digest == digest
        except RegistryError:
            return False

    def list_tags(self, ref: Reference) -> list[str]:
        tags: list[str] = []
        target: str | httpx.URL = f"/v2/{ref.repository}/tags/list"
        while target:
            resp = self._request("GET", ref, target)
            tags += resp.json().get("tags") or []
            nxt = resp.links.get("next", {}).get("url")
            target = resp.url.join(nxt) if nxt else ""
        return tags

    # ----------------------------------------------------------------- blobs: pull

    def stat_blob(self, ref: Reference, digest: str, *, push: bool = False) -> int | None:
        """Size of the blob if the repository has it, else None."""
        resp = self._request(
            "HEAD", ref, f"/v2/{ref.repository}/blobs/{digest}", ok=(200, 404), push=push
        )
        if resp.status_code == 404:
            return None
        size = resp.headers.get("Content-Length", "")
        return int(size) if size.isdigit() else -1

    def open_blob(self, ref: Reference, digest: str, size: int | None) -> BinaryIO:
        """The blob as a stream, resumed with Range after a reset, verified at EOF."""
        check_digest(digest)
        raw = _ResumableBlob(self, ref, digest)
        raw._open()  # fail here, not at the first read, when the blob is missing or denied
        return verifying(raw, digest, size, f"blob {digest} of {ref.name}")  # type: ignore[arg-type]

    def read_range(self, ref: Reference, digest: str, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` of a blob (unverified: a part has no digest)."""
        if length <= 0:
            return b""
        what = f"blob {digest} of {ref.name} range {offset}+{length}"
        resp = self._request(
            "GET", ref, f"/v2/{ref.repository}/blobs/{digest}", stream=True, ok=(200, 206),
            headers={"Range": f"bytes={offset}-{offset + length - 1}"},
        )  # fmt: skip
        try:
            if resp.status_code == 206:
                crange = resp.headers.get("Content-Range", "")
                if not crange.startswith(f"bytes {offset}-"):
                    raise RegistryError(f"{what}: unexpected Content-Range {crange!r}")
                data = _read_limited(resp, length)
            else:  # the server ignored Range: skip to the offset
                data = _read_limited(resp, offset + length)[offset:]
        except httpx.HTTPError as e:
            raise self._transport_error(e, what) from None
        finally:
            resp.close()
        if len(data) != length:
            raise DigestMismatch(f"{what}: got {len(data)} bytes")
        return data

    # ----------------------------------------------------------------- blobs: push

    def upload_blob(
        self,
        ref: Reference,
        digest: str,
        size: int,
        opener: Opener,
        *,
        mount_from: Reference | None = None,
    ) -> str:
        """Make the blob exist in ``ref``'s repository: ``"exists"``, ``"mounted"`` or
        ``"uploaded"``. A temporary failure restarts the upload with a re-opened source."""
        check_digest(digest)
        if self.stat_blob(ref, digest, push=True) is not None:
            return "exists"
        mount = mount_from is not None and mount_from.registry == ref.registry
        mount = mount and mount_from.repository != ref.repository  # type: ignore[union-attr]
        attempts = self.options.retries + 1
        for attempt in range(attempts):
            try:
                return self._upload_once(ref, digest, size, opener, mount_from if mount else None)
            except RegistryError as e:
                if not e.temporary or attempt == attempts - 1:
                    raise
                log.debug("restarting upload of %s: %s", digest, e)
                self._backoff(attempt, None)
        raise AssertionError("unreachable")  # pragma: no cover

    def _upload_once(
        self, ref: Reference, digest: str, size: int, opener: Opener, mount: Reference | None
    ) -> str:
        target = f"/v2/{ref.repository}/blobs/uploads/"
        extra: tuple[str, ...] = ()
        if mount is not None:
            target += "?" + str(httpx.QueryParams({"mount": digest, "from": mount.repository}))
            extra = (repo_scope(mount.repository),)
        resp = self._request(
            "POST", ref, target, push=True, extra_scopes=extra, ok=(201, 202),
            headers={"Content-Length": "0"},
        )  # fmt: skip
        if resp.status_code == 201 and mount is not None:
            return "mounted"
        location = self._location(resp, f"upload of {digest}")
        chunk = self.options.chunk_size
        octet = {"Content-Type": "application/octet-stream"}
        if chunk and size > chunk:
            with opener() as f:
                offset = 0
                while offset < size:
                    data = f.read(min(chunk, size - offset))
                    if not data:
                        raise DigestMismatch(f"blob {digest}: source ended at {offset} of {size}")
                    end = offset + len(data) - 1
                    resp = self._request(
                        "PATCH", ref, location, push=True, content=data, ok=(202,), retry=False,
                        headers={**octet, "Content-Range": f"{offset}-{end}",
                                 "Content-Length": str(len(data))},
                    )  # fmt: skip
                    location = self._location(resp, f"upload of {digest}")
                    offset += len(data)
            body: Content = b""
            length = 0
        else:
            body, length = opener, size
        resp = self._request(
            "PUT", ref, location.copy_merge_params({"digest": digest}), push=True,
            content=body, ok=(201, 204), retry=False,
            headers={**octet, "Content-Length": str(length)},
        )  # fmt: skip
        answered = _header_digest(resp.headers.get("Docker-Content-Digest"))
        if answered and answered != digest:
            raise DigestMismatch(f"blob {digest}: registry stored {answered}")
        return "uploaded"

    @staticmethod
    def _location(resp: httpx.Response, what: str) -> httpx.URL:
        loc = resp.headers.get("Location")
        if not loc:
            raise RegistryError(f"{what}: registry answered without a Location")
        return resp.url.join(loc)


class _ResumableBlob(io.RawIOBase):
    """Raw stream of a blob GET that reconnects with ``Range: bytes=N-`` after a reset."""

    def __init__(self, client: RegistryClient, ref: Reference, digest: str) -> None:
        super().__init__()
        self._c, self._ref, self._digest = client, ref, digest
        self._resp: httpx.Response | None = None
        self._chunks: Iterator[bytes] | None = None
        self._buf = b""
        self._pos = 0
        self._resumes = 0
        self._eof = False

    def readable(self) -> bool:
        return True

    def _open(self) -> None:
        headers = {"Range": f"bytes={self._pos}-"} if self._pos else {}
        resp = self._c._request(
            "GET", self._ref, f"/v2/{self._ref.repository}/blobs/{self._digest}",
            headers=headers, stream=True, ok=(200, 206),
        )  # fmt: skip
        skip = 0
        if self._pos and resp.status_code == 200:
            skip = self._pos  # no Range support: read again and drop what we already have
        elif resp.status_code == 206:
            crange = resp.headers.get("Content-Range", "")
            if not crange.startswith(f"bytes {self._pos}-"):
                resp.close()
                raise RegistryError(f"blob {self._digest}: bad Content-Range {crange!r}")
        self._resp = resp
        self._chunks = _skip(_body(resp), skip)

    def _drop(self) -> None:
        if self._resp is not None:
            self._resp.close()
        self._resp, self._chunks = None, None

    def readinto(self, b) -> int:  # type: ignore[override]
        while not self._buf:
            if self._eof:
                return 0
            if self._chunks is None:
                self._open()
            try:
                self._buf = next(self._chunks)  # type: ignore[arg-type]
            except StopIteration:
                self._drop()
                self._eof = True
                return 0
            except httpx.HTTPError as e:
                self._drop()
                err = self._c._transport_error(e, f"blob {self._digest} at byte {self._pos}")
                if not err.temporary or self._resumes >= self._c.options.retries:
                    raise err from None
                self._c._backoff(self._resumes, None)
                self._resumes += 1
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        self._pos += n
        return n

    def close(self) -> None:
        self._drop()
        super().close()


def _skip(chunks: Iterator[bytes], n: int) -> Iterator[bytes]:
    for chunk in chunks:
        if n >= len(chunk):
            n -= len(chunk)
            continue
        yield chunk[n:]
        n = 0


def _iter_file(f: BinaryIO) -> Iterator[bytes]:
    with f:
        while chunk := f.read(READ_CHUNK):
            yield chunk


def _body(resp: httpx.Response) -> Iterator[bytes]:
    """Raw body chunks (never content-decoded: digests are of the bytes as stored)."""
    try:
        return iter((resp.content,))  # already read, e.g. a response built in memory
    except httpx.ResponseNotRead:
        return resp.iter_raw()  # as received: a reset loses nothing already delivered


def _read_limited(resp: httpx.Response, limit: int) -> bytes:
    out = bytearray()
    for chunk in _body(resp):
        out += chunk
        if len(out) >= limit:
            break
    return bytes(out[:limit])


def _basic(cred: Credential) -> str:
    return "Basic " + base64.b64encode(f"{cred.username}:{cred.password}".encode()).decode()


def _header_digest(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return check_digest(value.strip())
    except RegistryError:
        return None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
