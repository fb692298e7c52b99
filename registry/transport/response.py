"""A registry's answer as the distribution API sees it: status, headers, body, links; no httpx.

Bodies are read as received (``iter_raw``, never content-decoded: a digest is of the bytes as
stored), and every read goes through ``errors.translated``, so a reset mid-body arrives as a
``temporary`` ``RegistryError``. Links (``Location``, ``Link: <…>; rel="next"``) come back as
absolute URLs, resolved against the URL that answered (after redirects).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx

from ..errors import RegistryError
from .errors import status_error, translated

ERROR_BODY_LIMIT = 64 << 10


class Response:
    """One answer; ``what`` names the exchange in error messages ("GET https://…")."""

    def __init__(self, raw: httpx.Response, what: str) -> None:
        self._raw = raw
        self.what = what

    @property
    def status(self) -> int:
        return self._raw.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive."""
        return self._raw.headers

    def load(self) -> None:
        """Read the whole body now (what a non-streaming call does before returning)."""
        with translated(self.what):
            self._raw.read()

    def chunks(self, what: str | Callable[[], str] | None = None) -> Iterator[bytes]:
        """The body's chunks as received; a failure is raised as RegistryError naming ``what``."""
        with translated(what or self.what):
            yield from _body(self._raw)

    def read(self, limit: int | None = None, what: str | None = None) -> bytes:
        """The body, or its first ``limit`` bytes."""
        out = bytearray()
        for chunk in self.chunks(what):
            out += chunk
            if limit is not None and len(out) >= limit:
                break
        return bytes(out if limit is None else out[:limit])

    def json(self) -> Any:
        return json.loads(self.read())

    def location(self, what: str) -> str:
        """The absolute URL of the ``Location`` header; RegistryError if there is none."""
        loc = self._raw.headers.get("Location")
        if not loc:
            raise RegistryError(f"{what}: registry answered without a Location")
        with translated(what):
            return str(self._raw.url.join(loc))

    def next_link(self) -> str | None:
        """The absolute URL of the ``rel="next"`` link (paginated tag lists), if any."""
        nxt = self._raw.links.get("next", {}).get("url")
        if not nxt:
            return None
        with translated(self.what):
            return str(self._raw.url.join(nxt))

    def error(self, what: str | None = None) -> RegistryError:
        """The RegistryError for this (unexpected) answer; closes it."""
        body = b""
        try:
            if self._raw.request.method != "HEAD":
                body = self.read(ERROR_BODY_LIMIT)
        except Exception:
            pass  # the status alone still makes the error
        finally:
            self.close()
        return status_error(self.status, body, what or self.what)

    def close(self) -> None:
        self._raw.close()


def _body(resp: httpx.Response) -> Iterator[bytes]:
    """Raw body chunks (never content-decoded: digests are of the bytes as stored)."""
    try:
        return iter((resp.content,))  # already read, e.g. a response built in memory
    except httpx.ResponseNotRead:
        return resp.iter_raw()  # as received: a reset loses nothing already delivered
