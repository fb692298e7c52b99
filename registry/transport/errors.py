"""Where registry failures become ``RegistryError``: the one place that knows httpx's exceptions.

* ``translated(what)`` wraps every use of httpx (sending, reading a body, parsing a URL); an
  httpx exception leaves it as a ``RegistryError`` made by ``transport_error``: ``temporary``
  for transport failures (resets, timeouts) except a refused certificate, an unsupported
  scheme or a proxy error;
* ``status_error`` turns an unexpected HTTP status into ``RegistryError`` (``AuthError`` for
  401/403, ``NotFound`` for 404) with the distribution error codes of the body
  (distribution-spec "Error Codes"); 408/429/5xx and ``TOOMANYREQUESTS``/``UNAVAILABLE`` are
  ``temporary``;
* ``safe_url`` is what of a URL may appear in a message or a log line: no query string
  (upload state, signed storage URLs, token scopes).

Nothing here puts a header value, a token or a password into a message.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator

import httpx

from ..errors import AuthError, NotFound, RegistryError
from .retry import RETRY_STATUS

TEMPORARY_CODES = frozenset({"TOOMANYREQUESTS", "UNAVAILABLE"})


def safe_url(url: httpx.URL | str) -> str:
    """URL without its query string, for messages (upload state and token scopes stay out)."""
    u = httpx.URL(str(url))
    return str(u.copy_with(query=None, fragment=None))


def transport_error(exc: Exception, what: str) -> RegistryError:
    text = str(exc) or type(exc).__name__
    temporary = isinstance(exc, httpx.TransportError) and not isinstance(
        exc, httpx.UnsupportedProtocol | httpx.ProxyError
    )
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        temporary = False
    return RegistryError(f"{what}: {type(exc).__name__}: {text}", temporary=temporary)


@contextlib.contextmanager
def translated(what: str | Callable[[], str]) -> Iterator[None]:
    """Raise any httpx exception of the block as ``RegistryError``; ``what`` names the
    exchange (a callable is asked only when something failed)."""
    try:
        yield
    except (httpx.HTTPError, httpx.InvalidURL) as e:
        raise transport_error(e, what() if callable(what) else what) from None


def status_error(status: int, body: bytes, what: str) -> RegistryError:
    """The error for an answer whose status the caller did not expect; ``body`` is the start
    of the response body (empty for HEAD)."""
    codes: tuple[str, ...] = ()
    detail = ""
    try:
        errors = json.loads(body).get("errors") or []
        codes = tuple(str(e.get("code", "")) for e in errors if isinstance(e, dict))
        if errors and isinstance(errors[0], dict) and errors[0].get("message"):
            detail = f": {str(errors[0]['message'])[:200]}"
    except Exception:
        pass
    temporary = status in RETRY_STATUS or bool(TEMPORARY_CODES & set(codes))
    text = f"{what}: HTTP {status}" + (f" {codes[0]}" if codes else "") + detail
    cls: type[RegistryError] = RegistryError
    if status in (401, 403):
        cls = AuthError
    elif status == 404:
        cls = NotFound
    return cls(text, status=status, codes=codes, temporary=temporary)
