"""Options of the registry package: one frozen dataclass, built once by the caller (the CLI)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .credentials import Credential


@dataclass(frozen=True)
class RegistryOptions:
    """How to talk to registries.

    ``insecure`` allows plain http and skips TLS verification for every host (localhost and
    127.0.0.0/8 may always fall back to plain http). ``credentials`` maps a registry host to
    explicit credentials, which win over auth files. ``transport`` is an ``httpx`` transport,
    for tests; it is typed loosely so that only ``registry/client.py`` knows httpx.
    """

    insecure: bool = False
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
