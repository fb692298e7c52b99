"""The Authorization header for a registry host and a set of scopes: Basic, or a Bearer token.

The host's challenge (from the ping, or from a later 401) picks the scheme. Bearer tokens come
from the challenge's realm as the distribution token spec says: a GET with ``service`` and
``scope`` parameters and Basic credentials if there are any, or, with an identity token, the
OAuth2 refresh-token POST (token spec "OAuth2"). Tokens are cached in ``auth.TokenCache``,
fetched one at a time, and dropped when a 401 brings a new challenge. Challenge parsing and
the cache live in ``registry/auth.py``, which needs no HTTP.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import urlencode, urlsplit

from ..auth import Challenge, TokenCache
from ..credentials import Credential, CredentialStore
from ..errors import AuthError
from .errors import safe_url
from .ping import Host
from .sender import Sender

TOKEN_ANSWER_LIMIT = 1 << 20


class Authorizer:
    def __init__(self, credentials: CredentialStore, sender: Sender) -> None:
        self.credentials = credentials
        self.tokens = TokenCache()
        self._sender = sender

    def header(self, host: Host, scopes: tuple[str, ...]) -> str | None:
        """The Authorization value for a request of ``scopes`` to ``host``, or None."""
        ch = host.challenge
        if ch is None:
            return None
        cred = self.credentials.lookup(host.name)
        if ch.scheme == "basic":
            return basic(cred) if cred else None
        key = self.tokens.key(host.name, ch, scopes)
        token = self.tokens.get(key)
        if token is None:
            with self.tokens.fetch_lock:
                token = self.tokens.get(key) or self._fetch_token(host, ch, scopes, cred, key)
        return f"Bearer {token}"

    def rechallenged(self, host: Host, challenge: Challenge, scopes: tuple[str, ...]) -> None:
        """A 401 came with ``challenge``: the token held for ``scopes`` (expired, too narrow)
        is dropped, and the host answers to the new challenge from now on."""
        if host.challenge is not None and host.challenge.scheme == "bearer":
            self.tokens.drop(self.tokens.key(host.name, host.challenge, scopes))
        host.challenge = challenge

    def _fetch_token(
        self,
        host: Host,
        ch: Challenge,
        scopes: tuple[str, ...],
        cred: Credential | None,
        key: tuple,
    ) -> str:
        if not ch.realm:
            raise AuthError(f"{host.name}: bearer challenge without a realm")
        if urlsplit(ch.realm).scheme not in ("http", "https"):
            raise AuthError(f"{host.name}: token realm is not an http(s) URL")
        all_scopes = sorted(set(scopes))
        headers: dict[str, str] = {}
        if cred is not None and cred.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": cred.identity_token,
                    "client_id": "rconv", "scope": " ".join(all_scopes)}  # fmt: skip
            if ch.service:
                form["service"] = ch.service
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            resp = self._sender.send("POST", ch.realm, headers, urlencode(form).encode())
        else:
            params: list[tuple[str, str]] = [("service", ch.service)] if ch.service else []
            params += [("scope", s) for s in all_scopes]
            if cred is not None:
                headers["Authorization"] = basic(cred)
            resp = self._sender.send("GET", ch.realm, headers, None, params=params)
        what = f"token endpoint {safe_url(ch.realm)}"
        if resp.status != 200:
            err = resp.error(what)
            raise AuthError(str(err), status=err.status, codes=err.codes, temporary=err.temporary)
        try:
            data = json.loads(resp.read(TOKEN_ANSWER_LIMIT))
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


def basic(cred: Credential) -> str:
    return "Basic " + base64.b64encode(f"{cred.username}:{cred.password}".encode()).decode()
