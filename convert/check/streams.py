"""Small stream helpers shared by the check's layer readers: put-back, hashing, and
decompression chosen by magic bytes (gzip, zstd or none), as containerd's DecompressStream
does (image.md §15.2 rule 1)."""

from __future__ import annotations

import gzip
import hashlib
from typing import Any

import zstandard

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
READ = 1 << 20


class Prefixed:
    """A stream with some already-read bytes put back in front."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self.head, self.rest = head, rest

    def read(self, n: int = -1) -> bytes:
        if not self.head:
            return self.rest.read(n)
        if 0 <= n < len(self.head):
            out, self.head = self.head[:n], self.head[n:]
            return out
        out, self.head = self.head, b""
        return out + self.rest.read(-1 if n < 0 else n - len(out))


class Hashing:
    """Counts and SHA-256-hashes what is read through it."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.hash, self.size = inner, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.hash.update(data)
        self.size += len(data)
        return data

    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def read_some(f: Any, n: int) -> bytes:
    """Up to ``n`` bytes, fewer only at EOF."""
    out = b""
    while len(out) < n:
        part = f.read(n - len(out))
        if not part:
            break
        out += part
    return out


def drain(f: Any) -> None:
    while f.read(READ):
        pass


def decompressed(raw: Any) -> tuple[Any, str]:
    """(uncompressed stream, "gzip" | "zstd" | "none") chosen by the first bytes of ``raw``."""
    head = read_some(raw, 4)
    stream = Prefixed(head, raw)
    if head[:2] == GZIP_MAGIC:
        # The stubs want a full file object; a stream with read() is all either reader uses.
        return gzip.GzipFile(fileobj=stream, mode="rb"), "gzip"  # type: ignore[call-overload]
    if head == ZSTD_MAGIC:
        reader = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)  # type: ignore[arg-type]
        return reader, "zstd"
    return stream, "none"
