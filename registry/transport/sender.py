"""The one ``httpx.Client`` of rconv and how a request goes out on it: retries and redirects.

* one client for every host: TLS verified against the system CAs or ``ca_file``, not at all
  with ``insecure``; ``Accept-Encoding: identity`` so blob bytes arrive exactly as stored;
* ``send`` retries connection errors and ``RETRY_STATUS`` answers as ``retry.py`` says; a
  request body given as an opener is opened again for every attempt and every redirect;
* redirects (RFC 9110 §15.4) are followed by hand so that Authorization is dropped as soon as
  the origin changes (blob storage, CDNs); a 303 turns the request into a body-less GET;
* httpx's own request log lines lose their query strings (signed URLs, upload state).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, BinaryIO

import httpx

from ..errors import RegistryError
from ..model import Opener
from ..options import RegistryOptions
from .errors import safe_url, translated
from .response import Response
from .retry import RETRY_STATUS, Retry, parse_retry_after
from .tls import default_verify

log = logging.getLogger("rconv.registry")

REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
READ_CHUNK = 1 << 20
Content = bytes | Opener | None
Params = Sequence[tuple[str, str]]  # query parameters, merged into the URL's


class _RedactQueries(logging.Filter):
    """httpx logs every request URL at INFO; query strings may carry signed storage URLs or
    upload state, so they are cut from its records (only URLs are in its arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                safe_url(a) if isinstance(a, httpx.URL) and a.query else a for a in record.args
            )
        return True


logging.getLogger("httpx").addFilter(_RedactQueries())


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


class Sender:
    """Sends requests for the whole process; thread-safe; ``close`` it."""

    def __init__(self, options: RegistryOptions, retry: Retry) -> None:
        o = options
        verify: bool | ssl.SSLContext
        if o.insecure:
            verify = False
        elif o.ca_file:
            verify = ssl.create_default_context(cafile=o.ca_file)
        else:
            verify = default_verify()
        # Hosts insecure on their own get a transport that skips verification; the rest verify.
        mounts = {f"all://{host}": httpx.HTTPTransport(verify=False) for host in o.insecure_hosts}
        self._http = httpx.Client(
            transport=o.transport,  # type: ignore[arg-type]
            mounts=mounts if o.transport is None else None,
            verify=verify,
            timeout=httpx.Timeout(o.timeout, connect=min(o.timeout, 30.0)),
            follow_redirects=False,
            # identity: blob bytes must arrive exactly as stored for the digest to hold
            headers={"User-Agent": o.user_agent, "Accept-Encoding": "identity"},
            limits=httpx.Limits(max_connections=max(4 * o.jobs, 16)),
        )
        self.retry = retry

    def close(self) -> None:
        self._http.close()

    def send(
        self,
        method: str,
        url: httpx.URL | str,
        headers: Mapping[str, str],
        content: Content,
        *,
        params: Params | None = None,
        retry: bool = True,
    ) -> Response:
        """Send with retries (connection errors, 408/429/5xx) and safe redirects. The answer
        is streaming: its head has arrived, its body has not been read."""
        with translated(f"{method} {str(url).split('?')[0]}"):
            url = httpx.URL(url)
            if params is not None:
                url = url.copy_merge_params(tuple(params))
            what = f"{method} {safe_url(url)}"
        attempts = self.retry.attempts if retry else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                with translated(what):
                    resp = self._follow(method, url, dict(headers), content)
            except RegistryError as err:
                if not err.temporary or last:
                    raise
                log.debug("retrying after %s", err)
                self.retry.pause(attempt)
                continue
            if resp.status_code in RETRY_STATUS and not last:
                delay = parse_retry_after(resp.headers.get("Retry-After"))
                resp.close()
                log.debug("retrying %s after HTTP %d", what, resp.status_code)
                self.retry.pause(attempt, delay)
                continue
            return Response(resp, what)
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
            log.debug("%s %s -> %d", method, safe_url(url), resp.status_code)
            location = resp.headers.get("Location")
            if resp.status_code not in REDIRECT_STATUS or not location:
                return resp
            resp.close()
            target = url.join(location)
            if origin(target) != origin(url):
                # a redirect to storage (S3, a CDN) must not carry the registry's credentials
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if resp.status_code == 303:
                method, content = "GET", None
            url = target
        raise RegistryError(f"{method} {safe_url(url)}: more than {MAX_REDIRECTS} redirects")


def _iter_file(f: BinaryIO) -> Iterator[bytes]:
    with f:
        while chunk := f.read(READ_CHUNK):
            yield chunk
