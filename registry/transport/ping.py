"""Which scheme a registry host speaks, decided once per host by pinging ``/v2/``.

distribution-spec "Determining support": ``GET /v2/`` answers 200, or 401 with a
``WWW-Authenticate`` challenge, on a registry. Candidates, in order:

* ``plain_http``: ``http`` only; no TLS handshake is ever attempted;
* otherwise ``https``, then ``http`` for localhost / 127.0.0.0/8 / ::1 or with ``insecure``.

Only the last candidate is retried, so an https attempt on a plain-http port costs one failed
handshake, not a backoff series. The ping's challenge is kept with the host for ``authorize``.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass

from ..auth import Challenge, pick_challenge
from ..errors import RegistryError
from ..options import RegistryOptions
from .sender import Sender


@dataclass
class Host:
    name: str
    scheme: str
    challenge: Challenge | None  # the last one seen; None while the host asks for no auth


def is_local(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1, with or without a port: plain http is allowed there."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or "]" in host else host
    name = name.strip("[]")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def schemes(name: str, options: RegistryOptions) -> list[str]:
    """The schemes to try for host ``name``, in order."""
    if options.plain_http:
        return ["http"]
    if options.insecure or name in options.insecure_hosts or is_local(name):
        return ["https", "http"]
    return ["https"]


class Hosts:
    """Host records by name, each pinged once (thread-safe)."""

    def __init__(self, options: RegistryOptions, sender: Sender) -> None:
        self._options = options
        self._sender = sender
        self._hosts: dict[str, Host] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Host:
        with self._lock:
            host = self._hosts.get(name)
            if host is None:
                host = self._ping(name)
                self._hosts[name] = host
            return host

    def _ping(self, name: str) -> Host:
        candidates = schemes(name, self._options)
        first_error: RegistryError | None = None
        for i, scheme in enumerate(candidates):
            url = f"{scheme}://{name}/v2/"
            # only the last candidate is retried: a TLS attempt on a plain-http port fails fast
            try:
                resp = self._sender.send("GET", url, {}, None, retry=i == len(candidates) - 1)
            except RegistryError as e:
                first_error = first_error or e
                continue
            status = resp.status
            challenge = pick_challenge(resp.headers.get("WWW-Authenticate"))
            resp.close()
            if status == 200 or (status == 401 and challenge is not None):
                return Host(name, scheme, challenge if status == 401 else None)
            err = RegistryError(
                f"{resp.what}: HTTP {status}: not an OCI distribution registry", status=status
            )
            first_error = first_error or err
        assert first_error is not None
        raise first_error
