"""Hand-made tar pieces for what Python's ``tarfile`` cannot write: malformed PAX records,
global headers, GNU sparse maps, names over 255 bytes, binary names, duplicate entries.

Everything returns bytes except ``TarStream``, which serves a tar described as a list of
parts (bytes, or ``Zeros(n)`` for long runs) as a file object without materialising it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

BLOCK = 512
END = bytes(2 * BLOCK)


def octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def header(
    name: bytes,
    flag: bytes = b"0",
    size: int = 0,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: int = 1_700_000_000,
    link: bytes = b"",
    major: int = 0,
    minor: int = 0,
    gnu: bool = False,
    fields: dict[int, bytes] | None = None,
) -> bytes:
    """One header block with a valid checksum (ustar, or the GNU magic with ``gnu``)."""
    h = bytearray(BLOCK)
    h[0 : len(name)] = name
    h[100:108] = octal(mode, 8)
    h[108:116] = octal(uid, 8)
    h[116:124] = octal(gid, 8)
    h[124:136] = octal(size, 12) if size < 8**11 else b"\x80" + size.to_bytes(11, "big")
    h[136:148] = octal(mtime, 12)
    h[156:157] = flag
    h[157 : 157 + len(link)] = link
    h[257:265] = b"ustar  \0" if gnu else b"ustar\x0000"
    h[329:337] = octal(major, 8)
    h[337:345] = octal(minor, 8)
    for offset, value in (fields or {}).items():
        h[offset : offset + len(value)] = value
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def entry(name: bytes, data: bytes = b"", flag: bytes = b"0", **kw) -> bytes:
    return header(name, flag, size=len(data), **kw) + pad(data)


def pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(str(length).encode()) + len(body) != length:
        length += 1
    return str(length).encode() + body


def pax(records: list[tuple[bytes, bytes]], flag: bytes = b"x") -> bytes:
    """A PAX extended (``x``) or global (``g``) header with its records."""
    return pax_raw(b"".join(pax_record(k, v) for k, v in records), flag)


def pax_raw(body: bytes, flag: bytes = b"x") -> bytes:
    return entry(b"PaxHeader", body, flag)


def long_name(name: bytes) -> bytes:
    """A GNU ``L`` header carrying ``name`` for the next entry."""
    return entry(b"././@LongLink", name + b"\0", b"L", gnu=True)


@dataclass(frozen=True)
class Zeros:
    size: int


class TarStream(io.RawIOBase):
    """A read-only stream over parts (bytes or Zeros), never holding a Zeros run in memory."""

    def __init__(self, parts: list[bytes | Zeros]) -> None:
        self._parts = list(parts)
        self._index = 0
        self._offset = 0
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._index < len(self._parts):
            part = self._parts[self._index]
            size = part.size if isinstance(part, Zeros) else len(part)
            if self._offset < size:
                n = min(len(buffer), size - self._offset)
                if isinstance(part, Zeros):
                    buffer[:n] = bytes(n)
                else:
                    buffer[:n] = part[self._offset : self._offset + n]
                self._offset += n
                self.served += n
                return n
            self._index += 1
            self._offset = 0
        return 0


def sparse_pax_1_0(name: bytes, real_size: int, segments: list[tuple[int, bytes]]) -> list:
    """A GNU sparse 1.0 entry (PAX ``GNU.sparse.*``) whose holes are never materialised:
    parts for ``TarStream``. ``segments`` are (offset, data), in order."""
    sparse_map = b"%d\n" % len(segments) + b"".join(
        b"%d\n%d\n" % (off, len(data)) for off, data in segments
    )
    stored = pad(sparse_map) + b"".join(data for _, data in segments)
    records = [
        (b"GNU.sparse.major", b"1"),
        (b"GNU.sparse.minor", b"0"),
        (b"GNU.sparse.name", name),
        (b"GNU.sparse.realsize", b"%d" % real_size),
    ]
    return [
        pax(records),
        header(b"GNUSparseFile.0/" + name[-80:], size=len(stored)),
        pad(stored),
    ]
