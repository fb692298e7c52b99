"""The distribution API (OCI distribution-spec): manifests, blobs, uploads, tags, mounts.

``RegistryClient`` speaks the API of any number of registries through one
``transport.Transport``, which owns everything HTTP (the scheme per host, auth, retries,
redirects, httpx and its errors; see ``registry/transport/``). This module imports no httpx.

* manifests: GET checked against the digest in the reference or ``Docker-Content-Digest``,
  retried when the body is cut short; HEAD to resolve; PUT, which checks the stored manifest
  when the answer was lost (spec "Pushing Manifests");
* blobs: streamed, size and digest verified at EOF, resumed with ``Range: bytes=N-`` after a
  reset (spec "Pulling Blobs"); Range reads of parts;
* uploads: HEAD skip, cross-repository mount, monolithic or chunked (spec "Pushing Blobs"),
  restarted whole from a new POST with the source re-opened when a failure is temporary;
* tags: listed page by page (``Link: rel="next"``).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

from . import mediatype as mt
from .auth import repo_scope
from .credentials import CredentialStore
from .digest import check_digest, digest_of, verifying
from .errors import DigestMismatch, InvalidManifest, RegistryError
from .model import MANIFEST_LIMIT, Descriptor, Opener
from .options import RegistryOptions
from .reference import Reference
from .transport import Content, Response, Transport

log = logging.getLogger("rconv.registry")


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
        self._transport = Transport(o, self.credentials, sleep)
        self._request = self._transport.request
        self._retry = self._transport.retry

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
                data = resp.read(MANIFEST_LIMIT + 1, what)
                break
            except RegistryError as err:
                # a body cut short (reset, early close) is worth a new GET like any other
                # temporary failure; the transport only retries until the response head
                if not err.temporary or attempt == attempts - 1:
                    raise
                self._retry.pause(attempt)
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
        target: str | None = f"/v2/{ref.repository}/tags/list"
        while target:
            resp = self._request("GET", ref, target)
            tags += resp.json().get("tags") or []
            target = resp.next_link()
        return tags

    # ----------------------------------------------------------------- blobs: pull

    def stat_blob(self, ref: Reference, digest: str, *, push: bool = False) -> int | None:
        """Size of the blob if the repository has it, else None."""
        resp = self._request(
            "HEAD", ref, f"/v2/{ref.repository}/blobs/{digest}", ok=(200, 404), push=push
        )
        if resp.status == 404:
            return None
        size = resp.headers.get("Content-Length", "")
        return int(size) if size.isdigit() else -1

    def open_blob(self, ref: Reference, digest: str, size: int | None) -> BinaryIO:
        """The blob as a stream, resumed with Range after a reset, verified at EOF."""
        check_digest(digest)
        raw = _ResumableBlob(self, ref, digest)
        raw._open()  # fail here, not at the first read, when the blob is missing or denied
        return verifying(raw, digest, size, f"blob {digest} of {ref.name}")

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
            if resp.status == 206:
                crange = resp.headers.get("Content-Range", "")
                if not crange.startswith(f"bytes {offset}-"):
                    raise RegistryError(f"{what}: unexpected Content-Range {crange!r}")
                data = resp.read(length, what)
            else:  # the server ignored Range: skip to the offset
                data = resp.read(offset + length, what)[offset:]
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
                self._retry.pause(attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _upload_once(
        self, ref: Reference, digest: str, size: int, opener: Opener, mount: Reference | None
    ) -> str:
        extra: tuple[str, ...] = ()
        params: list[tuple[str, str]] | None = None
        if mount is not None:
            params = [("mount", digest), ("from", mount.repository)]
            extra = (repo_scope(mount.repository),)
        resp = self._request(
            "POST", ref, f"/v2/{ref.repository}/blobs/uploads/", push=True, extra_scopes=extra,
            params=params, ok=(201, 202), headers={"Content-Length": "0"},
        )  # fmt: skip
        if resp.status == 201 and mount is not None:
            return "mounted"
        location = resp.location(f"upload of {digest}")
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
                    location = resp.location(f"upload of {digest}")
                    offset += len(data)
            body: Content = b""
            length = 0
        else:
            body, length = opener, size
        resp = self._request(
            "PUT", ref, location, params=[("digest", digest)], push=True,
            content=body, ok=(201, 204), retry=False,
            headers={**octet, "Content-Length": str(length)},
        )  # fmt: skip
        answered = _header_digest(resp.headers.get("Docker-Content-Digest"))
        if answered and answered != digest:
            raise DigestMismatch(f"blob {digest}: registry stored {answered}")
        return "uploaded"


class _ResumableBlob(io.RawIOBase):
    """Raw stream of a blob GET that reconnects with ``Range: bytes=N-`` after a reset."""

    def __init__(self, client: RegistryClient, ref: Reference, digest: str) -> None:
        super().__init__()
        self._c, self._ref, self._digest = client, ref, digest
        self._resp: Response | None = None
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
        if self._pos and resp.status == 200:
            skip = self._pos  # no Range support: read again and drop what we already have
        elif resp.status == 206:
            crange = resp.headers.get("Content-Range", "")
            if not crange.startswith(f"bytes {self._pos}-"):
                resp.close()
                raise RegistryError(f"blob {self._digest}: bad Content-Range {crange!r}")
        self._resp = resp
        self._chunks = _skip(resp.chunks(self._where), skip)

    def _where(self) -> str:
        return f"blob {self._digest} at byte {self._pos}"

    def _drop(self) -> None:
        if self._resp is not None:
            self._resp.close()
        self._resp, self._chunks = None, None

    def readinto(self, b) -> int:
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
            except RegistryError as err:
                self._drop()
                if not err.temporary or self._resumes >= self._c.options.retries:
                    raise
                self._c._retry.pause(self._resumes)
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


def _header_digest(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return check_digest(value.strip())
    except RegistryError:
        return None
