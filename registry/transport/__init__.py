"""The transport layer of the registry package: everything HTTP below the distribution API.

Modelled on go-containerregistry's ``remote/transport``; the only modules of rconv that import
httpx are in this package, and every httpx exception becomes ``RegistryError`` in ``errors``.

* ``transport``: ``Transport.request``, one API call for a repository (scheme, auth, status);
* ``ping``: the scheme of each host, decided once by pinging ``/v2/``;
* ``authorize``: Basic, or Bearer tokens from the realm (distribution token spec);
* ``sender``: the one ``httpx.Client``, retries and hand-followed redirects;
* ``retry``: which failures are retried, and the backoff;
* ``response``: an answer as the distribution API reads it (no httpx types);
* ``tls``: the default TLS context, built on a thread ahead of the first client;
* ``errors``: httpx exceptions and unexpected statuses made ``RegistryError``.
"""

import sys

# httpx imports its own command-line client (click, rich, pygments: ~35 ms, a tenth of
# rconv's start-up) whenever those happen to be installed; rconv never runs it. Blocked so,
# the import fails and httpx defines its placeholder ``main`` instead.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from .response import Response  # noqa: E402
from .sender import Content  # noqa: E402
from .tls import build_ahead as build_tls_ahead  # noqa: E402
from .transport import Transport  # noqa: E402

__all__ = ["Content", "Response", "Transport", "build_tls_ahead"]
