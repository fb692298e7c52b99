"""Pieces of the registry auth flow that need no HTTP: challenges, scopes, the token cache.

The flow itself (send, read the 401 challenge, fetch a token, resend) lives in
``transport/authorize.py`` and ``transport/transport.py``; this module parses
``WWW-Authenticate`` (RFC 7235 auth-params, as the distribution token spec uses them), names
scopes, and caches tokens per (registry, realm, service, scopes) until a little before they
expire. Tokens never leave this cache except in an Authorization header.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')
DEFAULT_TOKEN_LIFETIME = 60  # seconds; what the token spec says to assume
EXPIRY_MARGIN = 10


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercase: "basic" or "bearer"
    params: dict[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(self.params.get("scope", "").split())

    @property
    def error(self) -> str | None:
        return self.params.get("error")


def parse_challenges(header: str | None) -> list[Challenge]:
    """All challenges in a ``WWW-Authenticate`` value, in order."""
    out: list[Challenge] = []
    text = (header or "").strip()
    while text:
        m = re.match(r"([A-Za-z][A-Za-z0-9_-]*)\s*", text)
        if not m:
            break
        scheme, text = m.group(1).lower(), text[m.end() :]
        params: dict[str, str] = {}
        while True:
            pm = _PARAM.match(text)
            if not pm:
                break
            value = pm.group(2)
            value = re.sub(r"\\(.)", r"\1", value) if value is not None else pm.group(3)
            params[pm.group(1).lower()] = value
            text = text[pm.end() :]
        out.append(Challenge(scheme, params))
        text = text.lstrip(", ")
    return out


def pick_challenge(header: str | None) -> Challenge | None:
    """The challenge rconv answers: Bearer if offered, else Basic, else none."""
    found = {c.scheme: c for c in reversed(parse_challenges(header))}
    return found.get("bearer") or found.get("basic")


def repo_scope(repository: str, push: bool = False) -> str:
    return f"repository:{repository}:{'pull,push' if push else 'pull'}"


@dataclass
class _Token:
    value: str
    expires: float


class TokenCache:
    """Thread-safe bearer tokens keyed by (host, realm, service, scopes)."""

    def __init__(self, clock=time.monotonic) -> None:
        self._tokens: dict[tuple, _Token] = {}
        self._lock = threading.Lock()
        self.fetch_lock = threading.Lock()  # one token fetch at a time: no stampede
        self._clock = clock

    @staticmethod
    def key(host: str, challenge: Challenge, scopes: tuple[str, ...]) -> tuple:
        return (host, challenge.realm, challenge.service, tuple(sorted(set(scopes))))

    def get(self, key: tuple) -> str | None:
        with self._lock:
            tok = self._tokens.get(key)
            if tok is None or tok.expires <= self._clock():
                return None
            return tok.value

    def put(self, key: tuple, value: str, expires_in: float | None) -> None:
        life = expires_in if expires_in and expires_in > 0 else DEFAULT_TOKEN_LIFETIME
        margin = min(EXPIRY_MARGIN, life / 2)
        with self._lock:
            self._tokens[key] = _Token(value, self._clock() + life - margin)

    def drop(self, key: tuple) -> None:
        with self._lock:
            self._tokens.pop(key, None)
