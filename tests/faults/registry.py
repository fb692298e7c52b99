"""Real registry processes behind a ``FaultProxy``, for the fault tests.

``open_registry`` is tests/integration/conftest.py's ``start_registry`` (reused as is);
``token_registry`` starts the same docker-registry with token auth whose token endpoint can be
told to hand out tokens that are already expired while announcing ``expires_in: 300`` (a
registry that revokes or expires tokens early). Both are context managers; the fixtures live in
the test modules (this file is not a conftest).
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from registry.client import RegistryClient
from registry.credentials import Credential
from registry.options import RegistryOptions
from tests.conftest import require_tool
from tests.faults.proxy import FaultProxy
from tests.integration.conftest import (
    ISSUER,
    PASSWORD,
    SERVICE,
    USER,
    RegistryServer,
    TokenIssuer,
    _wait_ready,
    free_port,
    start_registry,
)

# Quick retries: the faults are injected once or twice, the tests should not sleep for long.
FAST = {"backoff": 0.01, "max_backoff": 0.05, "retries": 3, "timeout": 10.0}


def client_for(host: str, workdir: Path, creds: bool = False, **options) -> RegistryClient:
    kw = {**FAST, **options}
    credentials = {host: Credential(USER, PASSWORD)} if creds else {}
    return RegistryClient(
        RegistryOptions(credentials=credentials, auth_file=str(workdir / "no-auth.json"), **kw)
    )


@contextlib.contextmanager
def open_registry(workdir: Path) -> Iterator[tuple[RegistryServer, FaultProxy]]:
    with start_registry(workdir) as server, FaultProxy(int(server.host.rsplit(":", 1)[1])) as proxy:
        yield server, proxy


class ExpiringTokens:
    """Token endpoint state: the next ``expire_next`` tokens are born expired."""

    def __init__(self, issuer: TokenIssuer) -> None:
        self.issuer = issuer
        self.expire_next = 0
        self.issued: list[bool] = []  # True for each expired token handed out
        self.lock = threading.Lock()

    def token(self, scopes: list[str]) -> str:
        with self.lock:
            expired = self.expire_next > 0
            self.expire_next -= expired
            self.issued.append(expired)
        # distribution accepts tokens up to 60 s past their expiry: go well beyond that
        return self.issuer.token(scopes, lifetime=-300 if expired else 300)


@contextlib.contextmanager
def _token_endpoint(tokens: ExpiringTokens) -> Iterator[str]:
    good = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            query = parse_qs(urlparse(self.path).query)
            if self.headers.get("Authorization") != good:
                self.send_response(401)
                self.end_headers()
                return
            token = tokens.token(query.get("scope", []))
            body = json.dumps({"token": token, "expires_in": 300}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/token"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def token_registry(workdir: Path) -> Iterator[tuple[RegistryServer, FaultProxy, ExpiringTokens]]:
    """docker-registry with bearer tokens from an ``ExpiringTokens`` endpoint, behind a proxy."""
    binary = require_tool("docker-registry")
    workdir.mkdir(parents=True, exist_ok=True)
    host = f"127.0.0.1:{free_port()}"
    tokens = ExpiringTokens(TokenIssuer(workdir))
    server = RegistryServer(host, "http", "token", workdir=workdir)
    with contextlib.ExitStack() as stack:
        realm = stack.enter_context(_token_endpoint(tokens))
        config = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(workdir / "storage")},
                        "delete": {"enabled": True}},
            "http": {"addr": host, "secret": uuid.uuid4().hex},
            "auth": {"token": {"realm": realm, "service": SERVICE, "issuer": ISSUER,
                               "rootcertbundle": str(tokens.issuer.bundle)}},
        }  # fmt: skip
        (workdir / "config.yml").write_text(json.dumps(config))
        log = stack.enter_context(open(workdir / "registry.log", "wb"))
        proc = subprocess.Popen(
            [binary, "serve", str(workdir / "config.yml")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_ready(server, proc)
            with FaultProxy(int(host.rsplit(":", 1)[1])) as proxy:
                yield server, proxy, tokens
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
