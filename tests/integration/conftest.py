"""A real registry process for integration tests: Debian's ``docker-registry`` (distribution 2.8).

``registry_server`` (session scope) is an open registry on plain http; ``registry_factory``
starts variants: ``auth="htpasswd"`` (Basic), ``auth="token"`` (Bearer, with a token endpoint
served by this file and JWTs signed by a key generated here), ``tls=True`` (https with a CA
generated here). Each server yields a ``RegistryServer`` with ``.host`` ("127.0.0.1:PORT"),
credentials, the CA file, and helpers to build rconv clients. Storage, config and keys live in
a temporary directory. Without ``docker-registry`` the tests skip, and fail under CI=true.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import ssl
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from registry.client import RegistryClient
from registry.credentials import Credential
from registry.options import RegistryOptions
from tests.conftest import require, require_tool

USER, PASSWORD = "rconv", "pw-" + uuid.uuid4().hex[:12]
SERVICE, ISSUER = "rconv-test-registry", "rconv-test-issuer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RegistryServer:
    host: str
    scheme: str
    auth: str
    ca_file: str | None = None
    username: str | None = None
    password: str | None = None
    workdir: Path | None = None
    token_requests: list[str] = field(default_factory=list)

    def ref(self, name: str) -> str:
        return f"{self.host}/{name}"

    def options(self, **kw) -> RegistryOptions:
        creds = {}
        if self.username:
            creds[self.host] = Credential(self.username, self.password or "")
        kw.setdefault("auth_file", str(self.workdir / "no-auth.json"))
        return RegistryOptions(credentials=creds, ca_file=self.ca_file, **kw)

    def client(self, **kw) -> RegistryClient:
        return RegistryClient(self.options(**kw))


# ------------------------------------------------------------------ keys and certificates
# Made with the openssl CLI (installed with the registry), so no Python crypto package is needed.


def _openssl(*args: str, stdin: bytes | None = None, cwd: Path | None = None) -> bytes:
    proc = subprocess.run(
        [require_tool("openssl"), *args], input=stdin, capture_output=True, cwd=cwd, check=False
    )
    assert proc.returncode == 0, f"openssl {args[0]} failed: {proc.stderr.decode()}"
    return proc.stdout


_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def make_tls(workdir: Path) -> tuple[Path, Path, Path]:
    """(ca.crt, server.crt, server.key): a throw-away CA and a server certificate for
    127.0.0.1 signed by it."""
    ca, ca_key = workdir / "ca.crt", workdir / "ca.key"
    crt, key, csr = workdir / "server.crt", workdir / "server.key", workdir / "server.csr"
    _openssl("req", "-x509", *_EC, "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
             "-subj", "/CN=rconv test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    _openssl("req", *_EC, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext = workdir / "server.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(crt), "-days", "2", "-extfile", str(ext),
             cwd=workdir)  # fmt: skip
    return ca, crt, key


def _der_ecdsa_to_jws(der: bytes) -> bytes:
    """ECDSA signature: ASN.1 SEQUENCE { INTEGER r, INTEGER s } -> 32-byte r || 32-byte s."""

    def read_int(pos: int) -> tuple[int, int]:
        assert der[pos] == 0x02
        n = der[pos + 1]
        return int.from_bytes(der[pos + 2 : pos + 2 + n], "big"), pos + 2 + n

    assert der[0] == 0x30
    pos = 2 if der[1] < 0x80 else 2 + (der[1] & 0x7F)
    r, pos = read_int(pos)
    s, _ = read_int(pos)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


class TokenIssuer:
    """Signs distribution-spec bearer tokens (ES256 JWT with an x5c header)."""

    def __init__(self, workdir: Path) -> None:
        self.key, self.bundle = workdir / "token-signer.key", workdir / "token-signer.crt"
        _openssl("req", "-x509", *_EC, "-keyout", str(self.key), "-out", str(self.bundle),
                 "-days", "2", "-subj", "/CN=rconv token signer")  # fmt: skip
        self.der = _openssl("x509", "-in", str(self.bundle), "-outform", "DER")

    def token(self, scopes: list[str], lifetime: int = 300) -> str:
        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        access = []
        for s in scopes:
            kind, _, rest = s.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(self.der).decode()]}
        claims = {"iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + lifetime,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex,
                  "access": access}  # fmt: skip
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        der = _openssl("dgst", "-sha256", "-sign", str(self.key), stdin=signing_input.encode())
        return f"{signing_input}.{b64(_der_ecdsa_to_jws(der))}"


@contextlib.contextmanager
def token_server(issuer: TokenIssuer, log: list[str]) -> Iterator[str]:
    """An HTTP token endpoint (GET with Basic auth); yields its realm URL."""
    good = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            url = urlparse(self.path)
            query = parse_qs(url.query)
            log.append(self.path)
            if self.headers.get("Authorization") != good or query.get("service") != [SERVICE]:
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"token": issuer.token(query.get("scope", [])), "expires_in": 300})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

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


def _htpasswd(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            require(False, "the crypt module (bcrypt hashes for htpasswd) is unavailable")
    # cost 4: the registry checks the hash on every request, and cost 12 takes 0.25 s each
    hashed = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    require(hashed is not None and hashed.startswith("$2"), "libc crypt lacks bcrypt")
    path.write_text(f"{USER}:{hashed}\n")


# ------------------------------------------------------------------ the registry process


@contextlib.contextmanager
def start_registry(
    workdir: Path, auth: str = "none", tls: bool = False, extra: dict | None = None
) -> Iterator[RegistryServer]:
    """``extra``: top-level sections added to the registry's config (e.g. ``notifications``)."""
    binary = require_tool("docker-registry")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    host = f"127.0.0.1:{port}"
    server = RegistryServer(host, "https" if tls else "http", auth, workdir=workdir)
    config: dict = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(workdir / "storage")},
                    "delete": {"enabled": True}},
        "http": {"addr": host, "secret": uuid.uuid4().hex},
        **(extra or {}),
    }  # fmt: skip
    with contextlib.ExitStack() as stack:
        if tls:
            ca, crt, key = make_tls(workdir)
            config["http"]["tls"] = {"certificate": str(crt), "key": str(key)}
            server.ca_file = str(ca)
        if auth == "htpasswd":
            _htpasswd(workdir / "htpasswd")
            config["auth"] = {"htpasswd": {"realm": "rconv", "path": str(workdir / "htpasswd")}}
        elif auth == "token":
            issuer = TokenIssuer(workdir)
            realm = stack.enter_context(token_server(issuer, server.token_requests))
            config["auth"] = {"token": {"realm": realm, "service": SERVICE, "issuer": ISSUER,
                                        "rootcertbundle": str(issuer.bundle)}}  # fmt: skip
        if auth != "none":
            server.username, server.password = USER, PASSWORD
        (workdir / "config.yml").write_text(json.dumps(config))  # JSON is YAML
        log = open(workdir / "registry.log", "wb")
        stack.callback(log.close)
        proc = subprocess.Popen(
            [binary, "serve", str(workdir / "config.yml")],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_ready(server, proc)
            yield server
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(server: RegistryServer, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    port = int(server.host.rsplit(":", 1)[1])
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (server.workdir / "registry.log").read_text(errors="replace")
            raise RuntimeError(f"docker-registry exited with {proc.returncode}: {log[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                if server.scheme == "https":
                    ctx = ssl.create_default_context(cafile=server.ca_file)
                    ctx.wrap_socket(sock, server_hostname="127.0.0.1").close()
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("docker-registry did not start listening within 20 s")


@pytest.fixture(scope="session")
def registry_server(tmp_path_factory) -> Iterator[RegistryServer]:
    """An open (no auth) plain-http registry shared by the session."""
    with start_registry(tmp_path_factory.mktemp("registry-open")) as server:
        yield server


@pytest.fixture(scope="session")
def registry_factory(tmp_path_factory):
    """``registry_factory(auth="none"|"htpasswd"|"token", tls=False)``: one server per variant,
    started on first use and kept for the session."""
    servers: dict[tuple[str, bool], RegistryServer] = {}
    with contextlib.ExitStack() as stack:

        def get(auth: str = "none", tls: bool = False) -> RegistryServer:
            key = (auth, tls)
            if key not in servers:
                workdir = tmp_path_factory.mktemp(f"registry-{auth}-{'tls' if tls else 'plain'}")
                servers[key] = stack.enter_context(start_registry(workdir, auth, tls))
            return servers[key]

        yield get


@pytest.fixture(scope="module")
def skopeo(tmp_path_factory):
    """``skopeo ARGS`` (no signature policy, its own empty auth file); returns stdout."""
    binary = require_tool("skopeo")
    env = dict(os.environ, REGISTRY_AUTH_FILE=str(tmp_path_factory.mktemp("auth") / "a.json"))

    def run(*args: str) -> bytes:
        proc = subprocess.run(
            [binary, "--insecure-policy", *args],
            capture_output=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr.decode()
        return proc.stdout

    return run
