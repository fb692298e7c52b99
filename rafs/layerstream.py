"""Open a layer blob as an uncompressed tar stream, choosing the codec by magic bytes.

Implements ../shared/spec/image.md §15.2 rule 1: gzip (``1f 8b``), zstd (``28 b5 2f fd``) or
plain tar, whatever the declared media type says; a 0-byte stream is an empty layer. Everything
streams: nothing is held beyond one read buffer, and ``max_bytes`` bounds the decompressed size
(a decompression-bomb guard).

Truncation is an error for both codecs. zlib reports it itself (a member without its trailer);
python-zstandard's stream reader silently stops at a cut frame, so the compressed bytes are
walked frame by frame (RFC 8878 §3.1) on their way in, which costs a few operations per
128 KiB block. Without that a layer cut at a tar entry boundary would pass as a shorter layer
(tars without end blocks are accepted, NOTES.md 9).
"""

from __future__ import annotations

import io
import zlib
from typing import BinaryIO

import zstandard

from rafs.errors import InvalidInput, Unsupported
from rafs.streams import Readable

try:  # ISA-L inflates gzip about 2.5x faster than zlib with the same API; zlib where absent
    from isal import isal_zlib as _inflate

    # isal's stub declares ``error`` as an instance; it is the exception class.
    _INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error, _inflate.error)  # type: ignore[assignment]
except ImportError:  # pragma: no cover - isal is a dependency; this keeps odd platforms working
    _inflate = zlib  # type: ignore[misc]  # same API, another module
    _INFLATE_ERRORS = (zlib.error,)

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
READ_SIZE = 1 << 20
_GZIP_FEED = 256 << 10

# Recognised only to give a clear error instead of "corrupt tar header".
_UNSUPPORTED_MAGIC = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x04\x22\x4d\x18": "lz4 frame"}


def open_layer(raw: Readable, max_bytes: int | None = None) -> BinaryIO:
    """Return a reader of the uncompressed tar inside ``raw`` (gzip, zstd or plain).

    ``read(n)`` returns at most ``n`` bytes and ``b""`` at the end. Corrupt or truncated
    compressed data, and more than ``max_bytes`` of output, raise InvalidInput.
    """
    head = _read_up_to(raw, 6)
    if head.startswith(GZIP_MAGIC):
        return _Limited(_GzipReader(raw, head), max_bytes, "gzip")  # type: ignore[return-value]
    if head.startswith(ZSTD_MAGIC) or _is_skippable(head):
        source = _ZstdFrameCheck(_Prefixed(head, raw))
        reader = zstandard.ZstdDecompressor().stream_reader(
            source,  # type: ignore[arg-type]  # the stub wants IO[bytes]; read() is all it uses
            read_size=READ_SIZE,
            read_across_frames=True,
            closefd=False,
        )
        return _Limited(_ZstdReader(reader, source), max_bytes, "zstd")  # type: ignore[return-value]
    for magic, name in _UNSUPPORTED_MAGIC.items():
        if head.startswith(magic):
            raise Unsupported(f"{name}-compressed layers are not supported")
    return _Limited(_Prefixed(head, raw), max_bytes, "tar")  # type: ignore[return-value]


def _is_skippable(head: bytes) -> bool:
    # A zstd stream may open with a skippable frame (magic 0x184D2A5?, RFC 8878 §3.1.2);
    # containerd detects those as zstd too.
    return len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == b"\x2a\x4d\x18"


def _read_up_to(raw: Readable, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = raw.read(n - len(data))
        if not more:
            break
        data += more
    return data


class _Reader(io.RawIOBase):
    """Base: subclasses implement ``read``; readinto/readall come for free."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        parts = []
        while data := self.read(READ_SIZE):
            parts.append(data)
        return b"".join(parts)


class _Prefixed(_Reader):
    """``raw`` with the sniffed bytes put back in front."""

    def __init__(self, head: bytes, raw: Readable) -> None:
        self._head = head
        self._raw = raw

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self.readall()
        if self._head:
            data, self._head = self._head[:n], self._head[n:]
            return data
        return self._raw.read(n)


class _Limited(_Reader):
    """Counts output bytes and enforces ``max_bytes``."""

    def __init__(self, inner: _Reader, max_bytes: int | None, codec: str) -> None:
        self._inner = inner
        self._left = max_bytes
        self.codec = codec

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self.readall()
        data = self._inner.read(n)
        if self._left is not None:
            self._left -= len(data)
            if self._left < 0:
                raise InvalidInput("layer decompresses to more bytes than the configured limit")
        return data


class _GzipReader(_Reader):
    """Multi-member gzip via zlib; zero padding after the last member is tolerated."""

    def __init__(self, raw: Readable, head: bytes) -> None:
        self._raw = raw
        self._buf = head  # compressed input; bytes before _pos were given to zlib
        self._pos = 0
        self._member = _inflate.decompressobj(31)
        self._done = False

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self.readall()
        while not self._done and n:
            if self._pos == len(self._buf):
                self._buf, self._pos = self._raw.read(READ_SIZE), 0
                if not self._buf:
                    raise InvalidInput("corrupt gzip data: stream truncated")
            # Feed a bounded slice so zlib's copy of the unconsumed input stays small.
            feed = memoryview(self._buf)[self._pos : self._pos + _GZIP_FEED]
            member = self._member
            try:
                out = member.decompress(feed, n)
            except _INFLATE_ERRORS as exc:
                raise InvalidInput(f"corrupt gzip data: {exc}") from None
            if member.eof:
                self._pos += len(feed) - len(member.unused_data)
                self._next_member()
            else:
                self._pos += len(feed) - len(member.unconsumed_tail)
            if out:
                return out
        return b""

    def _next_member(self) -> None:
        # gzip(1) accepts zero padding after the last member; anything else must be a member.
        rest = self._buf[self._pos :].lstrip(b"\0")
        while len(rest) < 2:
            more = self._raw.read(READ_SIZE)
            if not more:
                if rest:
                    break
                self._done = True
                return
            rest = (rest + more).lstrip(b"\0")
        if not rest.startswith(GZIP_MAGIC):
            raise InvalidInput("corrupt gzip data: trailing garbage after the last member")
        self._buf, self._pos = rest, 0
        self._member = _inflate.decompressobj(31)


class _ZstdReader(_Reader):
    def __init__(self, reader, check: _ZstdFrameCheck) -> None:
        self._reader = reader
        self._check = check

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            return self.readall()
        try:
            data = self._reader.read(n)
        except zstandard.ZstdError as exc:
            raise InvalidInput(f"corrupt zstd data: {exc}") from None
        if not data and n:
            self._check.finish()
        return data


class _ZstdFrameCheck(_Reader):
    """Pass-through source that walks zstd frame and block headers to detect truncation."""

    def __init__(self, raw: _Reader) -> None:
        self._raw = raw
        self._offset = 0  # compressed bytes seen
        self._skip = 0  # bytes to pass over before the next header
        self._need = 4  # size of the header being collected
        self._hdr = b""
        self._state = "magic"
        self._frames = 0
        self._checksum = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._feed(data)
        return data

    def finish(self) -> None:
        if self._state != "magic" or self._hdr or self._skip:
            raise InvalidInput("corrupt zstd data: stream truncated inside a frame")

    def _feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            take = min(self._need - len(self._hdr), end - pos)
            self._hdr += data[pos : pos + take]
            pos += take
            if len(self._hdr) == self._need:
                hdr, self._hdr = self._hdr, b""
                self._header(hdr, self._offset + pos - len(hdr))
        self._offset += end

    def _header(self, hdr: bytes, at: int) -> None:
        state = self._state
        if state == "magic":
            if hdr == ZSTD_MAGIC:
                self._state, self._need = "fhd", 1
            elif hdr[0] & 0xF0 == 0x50 and hdr[1:] == b"\x2a\x4d\x18":
                self._state, self._need = "skippable", 4
            else:
                raise InvalidInput(f"corrupt zstd data: no frame magic at offset {at}")
        elif state == "skippable":
            self._skip = int.from_bytes(hdr, "little")
            self._state, self._need = "magic", 4
        elif state == "fhd":
            fhd = hdr[0]
            single = fhd & 0x20
            fcs = (1 if single else 0, 2, 4, 8)[fhd >> 6]
            rest = (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + fcs
            self._checksum = 4 if fhd & 0x04 else 0
            self._skip = rest
            self._state, self._need = "block", 3
        elif state == "block":
            word = int.from_bytes(hdr, "little")
            kind, size = (word >> 1) & 3, word >> 3
            if kind == 3:
                raise InvalidInput(f"corrupt zstd data: reserved block type at offset {at}")
            self._skip = 1 if kind == 1 else size
            if word & 1:  # last block of the frame
                self._skip += self._checksum
                self._state, self._need = "magic", 4
                self._frames += 1
