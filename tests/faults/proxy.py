"""A fault-injecting HTTP/1.1 proxy for tests, listening on loopback only.

It sits in front of one upstream (the real registry process) and forwards every request on a
fresh upstream connection, streaming bodies in 64 KiB pieces (memory stays bounded whatever
the blob size). Rules pick requests by method, path regex and occurrence, and replace the
normal forwarding with a fault:

* ``Fault.http(503)``, ``Fault.http(429, retry_after=1)``: answer without forwarding;
* ``Fault.reset(after=N)``: forward, send the response head and N body bytes, then reset
  the connection (RST); ``after=None`` resets before any response byte;
* ``Fault.reset_request(after=N)``: reset after reading N bytes of the request body (the
  request never reaches the registry);
* ``Fault.truncate(after=N)``: like reset, but a clean close (FIN): the body is shorter than
  its correct Content-Length;
* ``Fault.trickle(piece, delay)``: forward the response body ``piece`` bytes at a time with
  ``delay`` seconds between pieces;
* ``Fault.stall(forward=False)``: never answer (hold the connection open until the proxy
  closes or ``stall_limit`` passes); with ``forward=True`` the registry does the work first;
* ``Fault.stall_body(after=N)``: send the response head and N body bytes, then stall;
* ``Fault.slow(seconds)``: wait, then forward normally (to stretch a phase);
* ``Fault.lose_response()``: forward the request, let the registry act, then reset before
  the answer reaches the client (the "did my PUT land?" case).

Every wait is bounded (socket timeouts, ``stall_limit``), ``close()`` ends every connection,
so a test always finishes by itself. ``log`` records (method, path, status or fault name).
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

PIECE = 64 << 10
HEAD_LIMIT = 64 << 10
IO_TIMEOUT = 30.0


@dataclass(frozen=True)
class Fault:
    kind: str
    status: int = 0
    after: int | None = None
    piece: int = 0
    delay: float = 0.0
    retry_after: float | None = None
    forward: bool = False

    @classmethod
    def http(cls, status: int, retry_after: float | None = None) -> Fault:
        return cls("status", status=status, retry_after=retry_after)

    @classmethod
    def reset(cls, after: int | None = 0) -> Fault:
        return cls("reset", after=after)

    @classmethod
    def reset_request(cls, after: int = 0) -> Fault:
        return cls("reset_request", after=after)

    @classmethod
    def truncate(cls, after: int = 0) -> Fault:
        return cls("truncate", after=after)

    @classmethod
    def trickle(cls, piece: int, delay: float) -> Fault:
        return cls("trickle", piece=piece, delay=delay)

    @classmethod
    def stall(cls, forward: bool = False) -> Fault:
        return cls("stall", forward=forward)

    @classmethod
    def stall_body(cls, after: int) -> Fault:
        return cls("stall_body", after=after)

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        return cls("delay", delay=seconds)

    @classmethod
    def lose_response(cls) -> Fault:
        return cls("lose_response")

    def __str__(self) -> str:
        if self.kind == "status":
            return f"HTTP {self.status}" + (" Retry-After" if self.retry_after else "")
        return self.kind + (f"@{self.after}" if self.after else "")


@dataclass
class Rule:
    fault: Fault
    method: str | None = None
    path: str = ""
    nth: tuple[int, ...] | None = (1,)  # which matching requests (1-based); None: all
    seen: int = 0
    fired: int = 0

    def applies(self, method: str, path: str) -> bool:
        if self.method not in (None, method) or not re.search(self.path, path):
            return False
        self.seen += 1
        if self.nth is None or self.seen in self.nth:
            self.fired += 1
            return True
        return False


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


class _Stream:
    """A socket with a read buffer: lines, exact counts, and pieces."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        data = self.sock.recv(PIECE)
        if not data:
            return False
        self.buf += data
        return True

    def head(self) -> bytes | None:
        """Bytes up to and including the blank line; None on a clean EOF before any byte."""
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > HEAD_LIMIT or self.buf[:1] not in b"ACDGHOPT":
                # not an HTTP method (e.g. a TLS hello from a client probing https): drop it
                raise ValueError("not an HTTP request")
            if not self._fill():
                if self.buf:
                    raise ValueError("connection closed inside a header block")
                return None
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return head + b"\r\n\r\n"

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if len(self.buf) > HEAD_LIMIT or not self._fill():
                raise ValueError("bad chunk line")
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line + b"\r\n"

    def piece(self, limit: int) -> bytes:
        if not self.buf and not self._fill():
            return b""
        out, self.buf = self.buf[:limit], self.buf[limit:]
        return out


def _parse_headers(lines: list[bytes]) -> list[tuple[str, str]]:
    out = []
    for line in lines:
        name, _, value = line.decode("latin-1").partition(":")
        out.append((name.strip(), value.strip()))
    return out


def _body_pieces(stream: _Stream, headers: list[tuple[str, str]], until_eof: bool):
    """Raw body bytes (chunked framing kept as is) in pieces, following the framing."""
    values = {k.lower(): v for k, v in headers}
    if "chunked" in values.get("transfer-encoding", "").lower():
        while True:
            line = stream.line()
            yield line
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the blank line
                    trailer = stream.line()
                    yield trailer
                    if trailer == b"\r\n":
                        return
            left = size + 2
            while left:
                data = stream.piece(min(left, PIECE))
                if not data:
                    raise ValueError("connection closed inside a chunk")
                left -= len(data)
                yield data
    elif "content-length" in values:
        left = int(values["content-length"])
        while left:
            data = stream.piece(min(left, PIECE))
            if not data:
                raise ValueError("connection closed inside a body")
            left -= len(data)
            yield data
    elif until_eof:
        while data := stream.piece(PIECE):
            yield data


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class FaultProxy:
    """``FaultProxy(upstream_port)``: listens on 127.0.0.1; ``host`` is "127.0.0.1:PORT"."""

    def __init__(self, upstream_port: int, stall_limit: float = 30.0) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.stall_limit = stall_limit
        self.rules: list[Rule] = []
        self.log: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._clients: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    # ----------------------------------------------------------------- script

    def add(
        self,
        fault: Fault,
        method: str | None = None,
        path: str = "",
        nth: int | tuple[int, ...] | None = 1,
    ) -> Rule:
        """Apply ``fault`` to the ``nth`` request (1-based; a tuple, or None for every one)
        whose method and path (regex, searched) match."""
        rule = Rule(fault, method, path, (nth,) if isinstance(nth, int) else nth)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.log.clear()

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for rule in self.rules:
                if rule.applies(method, path):
                    return rule.fault
        return None

    def _record(self, req: Request, what: str) -> None:
        with self._lock:
            self.log.append((req.method, req.target.split("?", 1)[0], what))

    # ----------------------------------------------------------------- life cycle

    def close(self) -> None:
        self._closing.set()
        self._listener.close()
        with self._lock:
            clients = list(self._clients)
        for sock in clients:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._acceptor.join(5)
        for thread in list(self._threads):
            thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(IO_TIMEOUT)
            with self._lock:
                self._clients.add(sock)
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    # ----------------------------------------------------------------- one client

    def _serve(self, sock: socket.socket) -> None:
        client = _Stream(sock)
        try:
            while not self._closing.is_set():
                head = client.head()
                if head is None:
                    break
                lines = head.split(b"\r\n")[:-2]
                parts = lines[0].decode("latin-1").split(" ")
                if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                    break  # not HTTP (e.g. a TLS hello): just close
                req = Request(*parts, _parse_headers(lines[1:]))
                if not self._one(client, req):
                    break
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._clients.discard(sock)
            try:
                sock.close()
            except OSError:
                pass

    def _one(self, client: _Stream, req: Request) -> bool:
        """Handle one request; False when the client connection is finished."""
        path = req.target.split("?", 1)[0]
        fault = self._fault_for(req.method, path)
        sock = client.sock
        if fault is not None and fault.kind == "status":
            for _ in _body_pieces(client, req.headers, until_eof=False):
                pass
            self._record(req, str(fault))
            extra = f"Retry-After: {fault.retry_after:g}\r\n" if fault.retry_after else ""
            body = b'{"errors":[{"code":"UNAVAILABLE","message":"injected fault"}]}'
            sock.sendall(
                f"HTTP/1.1 {fault.status} Injected\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n{extra}\r\n".encode()
                + body
            )
            return True
        if fault is not None and fault.kind == "stall" and not fault.forward:
            self._record(req, "stall")
            self._closing.wait(self.stall_limit)
            return False
        if fault is not None and fault.kind == "reset" and fault.after is None:
            self._record(req, "reset")
            _reset(sock)
            return False

        if fault is not None and fault.kind == "delay" and self._closing.wait(fault.delay):
            return False
        upstream = socket.create_connection(self.upstream, timeout=IO_TIMEOUT)
        try:
            return self._forward(client, req, fault, upstream)
        finally:
            upstream.close()

    def _forward(self, client: _Stream, req: Request, fault: Fault | None, up: socket.socket):
        sock = client.sock
        headers = [(k, v) for k, v in req.headers if k.lower() != "connection"]
        headers.append(("Connection", "close"))
        head = f"{req.method} {req.target} {req.version}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        up.sendall(head.encode("latin-1"))
        sent = 0
        cut_request = fault.after if fault is not None and fault.kind == "reset_request" else None
        for data in _body_pieces(client, req.headers, until_eof=False):
            if cut_request is not None and sent + len(data) > cut_request:
                up.sendall(data[: cut_request - sent])
                self._record(req, str(fault))
                _reset(up)
                _reset(sock)
                return False
            up.sendall(data)
            sent += len(data)

        upstream = _Stream(up)
        resp_head = upstream.head()
        if resp_head is None:
            raise ValueError("upstream closed without answering")
        lines = resp_head.split(b"\r\n")[:-2]
        status = int(lines[0].split(b" ", 2)[1])
        resp_headers = [(k, v) for k, v in _parse_headers(lines[1:]) if k.lower() != "connection"]
        if fault is not None and fault.kind == "lose_response":
            for _ in _body_pieces(upstream, resp_headers, until_eof=True):
                pass
            self._record(req, f"lose_response({status})")
            _reset(sock)
            return False
        if fault is not None and fault.kind == "stall":
            self._record(req, f"stall({status})")
            self._closing.wait(self.stall_limit)
            return False
        bodyless = req.method == "HEAD" or status in (204, 304) or 100 <= status < 200
        framed = any(k.lower() in ("content-length", "transfer-encoding") for k, _ in resp_headers)
        keep = bodyless or framed
        if not keep:
            resp_headers.append(("Connection", "close"))
        out = lines[0].decode("latin-1") + "\r\n"
        out += "".join(f"{k}: {v}\r\n" for k, v in resp_headers) + "\r\n"
        sock.sendall(out.encode("latin-1"))
        self._record(req, str(fault) if fault else str(status))
        if bodyless:
            return True
        delivered = 0
        cutting = fault is not None and fault.kind in ("reset", "truncate", "stall_body")
        cut = fault.after if cutting else None  # type: ignore[union-attr]
        for data in _body_pieces(upstream, resp_headers, until_eof=True):
            if cut is not None and delivered + len(data) >= cut:
                sock.sendall(data[: cut - delivered])
                if fault.kind == "reset":  # type: ignore[union-attr]
                    _reset(sock)
                elif fault.kind == "truncate":  # type: ignore[union-attr]
                    sock.shutdown(socket.SHUT_WR)
                else:
                    self._closing.wait(self.stall_limit)
                return False
            if fault is not None and fault.kind == "trickle":
                for i in range(0, len(data), fault.piece):
                    if self._closing.wait(fault.delay):
                        return False
                    sock.sendall(data[i : i + fault.piece])
            else:
                sock.sendall(data)
            delivered += len(data)
        return keep


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
