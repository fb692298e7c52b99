"""Content digests (OCI image-spec "Digests"): parse, compute, and verify while streaming.

Only the registered algorithms sha256 and sha512 are accepted. ``VerifyingReader`` is how every
medium hands out blob bytes: it hashes and counts as the consumer reads and raises
``DigestMismatch`` at EOF (or as soon as the size is exceeded), so nothing is buffered.
"""

from __future__ import annotations

import hashlib
import io
import re
from typing import BinaryIO

from .errors import DigestMismatch, InvalidReference

_HEX_LEN = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")
COPY_CHUNK = 1 << 20


def check_digest(digest: str) -> str:
    """Return ``digest`` if it is a well-formed sha256/sha512 digest, else raise."""
    m = _DIGEST_RE.match(digest) if isinstance(digest, str) else None
    if m is None:
        raise InvalidReference(f"invalid digest {digest!r}: expected ALGORITHM:HEX")
    algo, hexpart = m.groups()
    want = _HEX_LEN.get(algo)
    if want is None:
        raise InvalidReference(f"unsupported digest algorithm {algo!r} in {digest!r}")
    if len(hexpart) != want or not re.fullmatch(r"[0-9a-f]+", hexpart):
        raise InvalidReference(f"invalid {algo} digest {digest!r}: need {want} lowercase hex")
    return digest


def hasher(digest: str):
    """A fresh hashlib object for the algorithm of ``digest``."""
    return hashlib.new(check_digest(digest).split(":", 1)[0])


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


class VerifyingReader(io.RawIOBase):
    """Read-through wrapper that checks size and digest of a stream at EOF.

    ``what`` names the object in error messages (e.g. ``"blob sha256:… of repo/x"``).
    ``size`` may be None when unknown (then only the digest is checked).
    """

    def __init__(
        self, raw: BinaryIO | io.RawIOBase, digest: str, size: int | None, what: str
    ) -> None:
        super().__init__()
        self._raw = raw
        self._digest = digest
        self._hash = hasher(digest)
        self._size = size
        self._seen = 0
        self._what = what
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self._raw.read(len(b))
        n = len(data)
        if n == 0:
            self._finish()
            return 0
        self._seen += n
        if self._size is not None and self._seen > self._size:
            raise DigestMismatch(f"{self._what}: more than the announced {self._size} bytes")
        self._hash.update(data)
        b[:n] = data
        return n

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        if self._size is not None and self._seen != self._size:
            raise DigestMismatch(f"{self._what}: got {self._seen} bytes, announced {self._size}")
        got = f"{self._digest.split(':', 1)[0]}:{self._hash.hexdigest()}"
        if got != self._digest:
            raise DigestMismatch(f"{self._what}: content digest is {got}, expected {self._digest}")

    @property
    def verified(self) -> bool:
        return self._done

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def verifying(raw: BinaryIO | io.RawIOBase, digest: str, size: int | None, what: str) -> BinaryIO:
    """Buffered ``VerifyingReader`` over ``raw``."""
    return io.BufferedReader(VerifyingReader(raw, digest, size, what), COPY_CHUNK)


def read_verified(raw: BinaryIO, digest: str, size: int | None, what: str, limit: int) -> bytes:
    """Read a small object (manifest, config) whole, verified, refusing more than ``limit``."""
    if size is not None and size > limit:
        raise DigestMismatch(f"{what}: {size} bytes is over the {limit}-byte limit")
    with verifying(raw, digest, size, what) as f:
        data = f.read(limit + 1)
        if len(data) > limit:
            raise DigestMismatch(f"{what}: over the {limit}-byte limit")
        f.read()  # reach EOF so the digest is checked
    return data
