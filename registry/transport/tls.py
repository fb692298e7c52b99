"""The default TLS context, built ahead of the first client.

httpx builds one for every client from the CA bundle (certifi's, or ``SSL_CERT_FILE`` /
``SSL_CERT_DIR``): ~20 ms of certificate parsing at every start, which OpenSSL does with the
GIL released. ``build_ahead`` starts that on a thread while the command line loads;
``default_verify`` then hands the result to the client. The context is the one httpx would
have built (its own function makes it); when none was started, or building it failed, the
client gets ``True`` and httpx builds it (and reports any failure) as usual.
"""

from __future__ import annotations

import ssl
import threading

import httpx

_built: list[ssl.SSLContext] = []
_thread: threading.Thread | None = None
_lock = threading.Lock()


def build_ahead() -> None:
    """Start building the default context (once per process). Not in a process that forks
    (a child forked while OpenSSL holds a lock could hang on its first TLS use)."""
    global _thread
    with _lock:
        if _thread is None:
            # Not a daemon: one still inside OpenSSL when the interpreter finalizes can crash
            # it (seen: a segfault at exit in 1 of 40 short commands); exit waits ~20 ms at
            # most instead.
            _thread = threading.Thread(target=_build, name="rconv-tls")
            _thread.start()


def _build() -> None:
    try:
        _built.append(httpx.create_ssl_context())
    except Exception:  # noqa: S110 - httpx builds it again for the client and says what failed
        pass


def default_verify() -> ssl.SSLContext | bool:
    """What the client's ``verify`` is when TLS is verified against the default CAs."""
    thread = _thread
    if thread is None:
        return True
    thread.join()
    return _built[0] if _built else True
