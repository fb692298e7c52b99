"""Options of the registry package: one frozen dataclass, built once by the caller (the CLI)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .credentials import Credential


@dataclass(frozen=True)
class RegistryOptions:
    """How to talk to registries.

    ``plain_http`` speaks plain http to every registry host, with no TLS attempt first (token
    realms and redirects keep the scheme the registry gives). ``insecure`` skips TLS
    verification and lets every host fall back to plain http when https fails (localhost and
    127.0.0.0/8 may always fall back); ``insecure_hosts`` does the same for those hosts only
    (``--build-cache-insecure``). ``credentials`` maps a registry host to explicit
    credentials, which win over auth files. ``transport`` is an ``httpx`` transport, for
    tests; it is typed loosely so that only ``registry/transport/`` knows httpx.
    """

    plain_http: bool = False
    insecure: bool = False
    insecure_hosts: frozenset[str] = frozenset()
    ca_file: str | None = None
    credentials: Mapping[str, Credential] = field(default_factory=dict)
    auth_file: str | None = None
    retries: int = 5
    backoff: float = 0.2
    max_backoff: float = 10.0
    max_retry_after: float = 60.0
    timeout: float = 60.0
    user_agent: str = "rconv/0.1"
    jobs: int = 4
    chunk_size: int | None = None
    transport: object | None = None
