"""One registry API call for a repository: the host's scheme, Authorization, the status check.

``Transport.request`` is what the distribution API (``registry/client.py``) sends through: it
asks ``ping`` for the host's scheme, ``authorize`` for the header (only for URLs of the
registry's own origin: an upload Location on another host gets none), sends with ``sender``
(retries, redirects), and re-authenticates once when a 401 brings a new challenge (expired or
too narrow token, or auth needed though ``/v2/`` was open). An answer whose status is not in
``ok`` is raised as ``RegistryError``; unless ``stream``, the body is read before returning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx

from ..auth import pick_challenge, repo_scope
from ..credentials import CredentialStore
from ..errors import RegistryError
from ..options import RegistryOptions
from ..reference import Reference
from .authorize import Authorizer
from .errors import safe_url, translated
from .ping import Hosts
from .response import Response
from .retry import Retry
from .sender import Content, Params, Sender, origin


class Transport:
    """Thread-safe; ``close`` it."""

    def __init__(
        self,
        options: RegistryOptions,
        credentials: CredentialStore,
        sleep: Callable[[float], None],
    ) -> None:
        self.retry = Retry(options, sleep)
        self._sender = Sender(options, self.retry)
        self._hosts = Hosts(options, self._sender)
        self._auth = Authorizer(credentials, self._sender)

    def close(self) -> None:
        self._sender.close()

    def request(
        self,
        method: str,
        ref: Reference,
        target: str,
        *,
        push: bool = False,
        extra_scopes: tuple[str, ...] = (),
        headers: Mapping[str, str] | None = None,
        content: Content = None,
        params: Params | None = None,
        ok: tuple[int, ...] = (200,),
        retry: bool = True,
        stream: bool = False,
    ) -> Response:
        """``target`` is a path on ``ref``'s registry or an absolute URL (a Location)."""
        host = self._hosts.get(ref.api_host)
        base = httpx.URL(f"{host.scheme}://{host.name}")
        with translated(f"{method} {target.split('?')[0]}"):
            url = httpx.URL(target) if "://" in target else base.join(target)
        scopes = (repo_scope(ref.repository, push), *extra_scopes)
        what = f"{method} {safe_url(url)}"
        for auth_round in range(2):
            hdrs = dict(headers or {})
            auth = self._auth.header(host, scopes) if origin(url) == origin(base) else None
            if auth:
                hdrs["Authorization"] = auth
            resp = self._sender.send(method, url, hdrs, content, params=params, retry=retry)
            if resp.status == 401 and auth_round == 0:
                challenge = pick_challenge(resp.headers.get("WWW-Authenticate"))
                if challenge is not None:
                    resp.close()
                    self._auth.rechallenged(host, challenge, scopes)
                    continue
            if resp.status not in ok:
                raise resp.error(what)
            if not stream:
                try:
                    resp.load()
                except RegistryError:
                    resp.close()
                    raise
            return resp
        raise AssertionError("unreachable")  # pragma: no cover
