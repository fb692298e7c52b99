"""``RegistryOptions(plain_http=True)``: plain http to every registry host, no TLS attempt.

A raw TCP listener on loopback stands in for a registry: it records the first bytes of every
connection and answers HTTP/1.1 requests, but never answers a TLS ClientHello (as a server
that ignores the handshake would, which used to cost the handshake timeout per host).
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from registry.client import RegistryClient
from registry.options import RegistryOptions
from registry.reference import parse_reference
from registry.remote import RemoteSink, open_remote
from registry.transfer import write

from .fakeregistry import FakeRegistry
from .images import random_image, validate

TLS_HANDSHAKE = b"\x16\x03"  # record type handshake, protocol major version 3


class PlainRegistry:
    """Answers ``GET /v2/`` and ``GET /v2/NAME/tags/list`` over plain HTTP/1.1."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.first_bytes: list[bytes] = []  # the first bytes of each connection, in order
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = conn.recv(65536)
            self.first_bytes.append(data[:32])
            if not data.startswith(b"GET "):
                self._closing.wait()  # a TLS ClientHello: never answered
                return
            while data:
                while b"\r\n\r\n" not in data:
                    more = conn.recv(65536)
                    if not more:
                        return
                    data += more
                head, data = data.split(b"\r\n\r\n", 1)
                path = head.split(b" ", 2)[1].decode()
                body = b"{}" if path == "/v2/" else json.dumps({"tags": ["v1"]}).encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                if not data:
                    data = conn.recv(65536)

    def close(self) -> None:
        self._closing.set()
        self.sock.close()
        for t in self._threads:
            t.join(timeout=2)


@pytest.fixture
def plain_registry():
    server = PlainRegistry()
    yield server
    server.close()


def client(tmp_path, **kw) -> RegistryClient:
    return RegistryClient(RegistryOptions(auth_file=str(tmp_path / "none.json"), **kw))


def test_plain_http_sends_http_first(plain_registry, tmp_path):
    ref = parse_reference(f"{plain_registry.host}/app/x")
    start = time.monotonic()
    # a TLS attempt would hang until the 5 s timeout: the listener never answers one
    with client(tmp_path, plain_http=True, timeout=5.0, retries=0) as c:
        assert c.list_tags(ref) == ["v1"]
    assert time.monotonic() - start < 2
    first = plain_registry.first_bytes  # the ping's connection, then the unread ping closed it
    assert first[0].startswith(b"GET /v2/ HTTP/1.1\r\n")
    assert not [b for b in first if not b.startswith(b"GET /v2/")]  # never a ClientHello


def test_without_plain_http_tls_is_tried_first(plain_registry, tmp_path):
    """The control: the same listener does see a ClientHello first when plain_http is off
    (here the handshake times out after 0.3 s, then a loopback host falls back to http)."""
    ref = parse_reference(f"{plain_registry.host}/app/x")
    with client(tmp_path, timeout=0.3, retries=0) as c:
        assert c.list_tags(ref) == ["v1"]
    first = plain_registry.first_bytes
    assert first[0].startswith(TLS_HANDSHAKE)
    assert first[1].startswith(b"GET /v2/ HTTP/1.1\r\n")


def test_plain_http_for_remote_hosts(tmp_path):
    """plain_http is not only for loopback: a remote name gets no https request either."""
    fake = FakeRegistry(host="reg.example")
    options = RegistryOptions(transport=fake.transport(), plain_http=True,
                              auth_file=str(tmp_path / "none.json"))  # fmt: skip
    with RegistryClient(options) as c:
        img = random_image(40)
        write(img, RemoteSink(c, parse_reference("reg.example/app/x:1")))
        assert validate(open_remote(c, parse_reference("reg.example/app/x:1")))
    assert {r.url.scheme for r in fake.requests} == {"http"}


def test_insecure_hosts_fall_back_to_http_alone() -> None:
    from registry.transport.ping import schemes

    options = RegistryOptions(insecure_hosts=frozenset({"cache.example:5000"}))
    assert schemes("cache.example:5000", options) == ["https", "http"]
    assert schemes("reg.example", options) == ["https"]
    assert schemes("reg.example", RegistryOptions(insecure=True)) == ["https", "http"]
