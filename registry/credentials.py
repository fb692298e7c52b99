"""Registry credentials: explicit USER:PASS, docker / containers auth files, credential helpers.

Lookup order for a registry host: explicit credentials given by the caller; then the first
auth file found among ``auth_file`` (if given, alone), ``$REGISTRY_AUTH_FILE``,
``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``. Inside a file: ``credHelpers[host]``,
then an inline ``auths`` entry, then ``credsStore``. Helpers are ``docker-credential-<name> get``
with the server URL on stdin. Docker Hub is stored under ``https://index.docker.io/v1/``.

``oras`` also reads docker configs, but ignores ``DOCKER_CONFIG``, ``REGISTRY_AUTH_FILE`` and
credential helpers, so this module does not use it (see docs/decisions.md, "registry").
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AuthError
from .reference import DEFAULT_REGISTRY, DOCKER_HUB_API, DOCKER_HUB_AUTH_KEY


@dataclass(frozen=True)
class Credential:
    """A username and secret; with ``identity_token`` the token server gets an OAuth2 refresh."""

    username: str
    password: str = field(repr=False)
    identity_token: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, text: str) -> Credential:
        """``USER:PASS`` as given on a command line."""
        user, sep, password = text.partition(":")
        if not sep or not user:
            raise AuthError("credentials must be USER:PASS")
        return cls(user, password)


def _host_of(key: str) -> str:
    """``https://host:5000/v1/`` → ``host:5000`` (auth files key entries many ways)."""
    k = key
    for prefix in ("https://", "http://"):
        k = k.removeprefix(prefix)
    return k.split("/", 1)[0]


def _aliases(host: str) -> list[str]:
    if host in (DEFAULT_REGISTRY, DOCKER_HUB_API, "index.docker.io"):
        return [DOCKER_HUB_AUTH_KEY, "index.docker.io", DEFAULT_REGISTRY, DOCKER_HUB_API]
    return [host]


class CredentialStore:
    """Answers ``lookup(host)``; files are read once, helpers run once per host."""

    def __init__(
        self,
        explicit: Mapping[str, Credential] | None = None,
        auth_file: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._explicit = dict(explicit or {})
        self._env = os.environ if env is None else env
        self._auth_file = auth_file
        self._files: list[dict] | None = None
        self._cache: dict[str, Credential | None] = {}

    def config_paths(self) -> list[Path]:
        if self._auth_file is not None:
            return [Path(self._auth_file)]
        paths = []
        if self._env.get("REGISTRY_AUTH_FILE"):
            paths.append(Path(self._env["REGISTRY_AUTH_FILE"]))
        if self._env.get("DOCKER_CONFIG"):
            paths.append(Path(self._env["DOCKER_CONFIG"]) / "config.json")
        else:
            paths.append(Path(self._env.get("HOME", str(Path.home()))) / ".docker" / "config.json")
        return paths

    def _load(self) -> list[dict]:
        if self._files is None:
            files = []
            for p in self.config_paths():
                try:
                    data = json.loads(p.read_text())
                except FileNotFoundError:
                    continue
                except (OSError, ValueError) as e:
                    raise AuthError(f"cannot read auth file {p}: {type(e).__name__}") from None
                if isinstance(data, dict):
                    files.append(data)
            self._files = files
        return self._files

    def lookup(self, host: str) -> Credential | None:
        if host in self._cache:
            return self._cache[host]
        cred = self._lookup(host)
        self._cache[host] = cred
        return cred

    def _lookup(self, host: str) -> Credential | None:
        for alias in _aliases(host):
            if alias in self._explicit:
                return self._explicit[alias]
        for cfg in self._load():
            found = self._from_file(cfg, host)
            if found is not None:
                return found
        return None

    def _from_file(self, cfg: dict, host: str) -> Credential | None:
        aliases = _aliases(host)
        helpers = cfg.get("credHelpers") or {}
        for alias in aliases:
            if alias in helpers:
                return run_helper(helpers[alias], aliases[0])
        auths = cfg.get("auths") or {}
        by_host = {_host_of(k): v for k, v in auths.items() if isinstance(v, dict)}
        for alias in aliases:
            entry = auths.get(alias) or by_host.get(_host_of(alias))
            cred = _from_entry(entry) if entry else None
            if cred is not None:
                return cred
        if cfg.get("credsStore"):
            return run_helper(cfg["credsStore"], aliases[0])
        return None


def _from_entry(entry: dict) -> Credential | None:
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(entry["auth"], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise AuthError("auth file entry has an undecodable 'auth' field") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise AuthError("auth file entry 'auth' is not base64(USER:PASS)")
        return Credential(user, password, entry.get("identitytoken") or None)
    if entry.get("identitytoken"):
        return Credential(entry.get("username") or "<token>", "", entry["identitytoken"])
    if entry.get("username"):
        return Credential(entry["username"], entry.get("password") or "")
    return None


def run_helper(name: str, server: str) -> Credential | None:
    """``docker-credential-NAME get``; None when the helper has nothing for ``server``."""
    program = f"docker-credential-{name}"
    try:
        proc = subprocess.run(
            [program, "get"], input=server.encode(), capture_output=True, timeout=60, check=False
        )
    except FileNotFoundError:
        raise AuthError(f"credential helper {program} is configured but not installed") from None
    except subprocess.TimeoutExpired:
        raise AuthError(f"credential helper {program} timed out") from None
    if proc.returncode != 0:
        out = proc.stdout.decode(errors="replace").strip()
        if "credentials not found" in out.lower():
            return None
        # never echo the helper's output: it may contain a secret
        raise AuthError(f"credential helper {program} failed (exit {proc.returncode})")
    try:
        data = json.loads(proc.stdout)
        user, secret = data["Username"], data["Secret"]
    except (ValueError, KeyError, TypeError):
        raise AuthError(f"credential helper {program} returned unreadable output") from None
    if user == "<token>":
        return Credential(user, "", secret)
    return Credential(user, secret)
