"""How much of a tar stream Go's ``archive/tar`` reader consumes, and the SHA-256 of it.

Go tools (nydusify check, acceld, containerd's differ) compute a layer's diff_id while their
tar reader unpacks it: headers and data blocks are read in 512-byte units, entry data of
header-only types is skipped, and reading ends after two consecutive zero blocks. Bytes after
that marker never reach the hash. Written from Go's reader semantics, independently of Python's
``tarfile``, so that the two disagree where the real readers do.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import BinaryIO

from convert.check.streams import read_some

BLOCK = 512
HEADER_ONLY = set(b"123456")  # hard link, symlink, char, block, dir, fifo: size ignored


def _number(field: bytes) -> int:
    if field[0] & 0x80:  # base-256
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    text = field.split(b"\0", 1)[0].strip(b" \0")
    return int(text, 8) if text else 0


def _pax_size(records: bytes) -> int | None:
    size = None
    while records:
        length = int(records.split(b" ", 1)[0])
        key, _, value = records[:length].split(b" ", 1)[1].rstrip(b"\n").partition(b"=")
        if key == b"size":
            size = int(value)
        records = records[length:]
    return size


def go_tar_digest(f: BinaryIO) -> tuple[str, int]:
    """(sha256 of the bytes Go's reader consumes, their count); raises ValueError as Go errs."""
    h = hashlib.sha256()
    consumed = 0
    pax_size = None

    def take(n: int) -> bytes:
        nonlocal consumed
        data = read_some(f, n)
        h.update(data)
        consumed += len(data)
        return data

    while True:
        block = take(BLOCK)
        if not block:
            break  # io.EOF at a block boundary ends the archive too
        if len(block) < BLOCK:
            raise ValueError(f"truncated header at {consumed - len(block)}")
        if block == bytes(BLOCK):
            second = take(BLOCK)
            if second and second != bytes(BLOCK):
                raise ValueError(f"a lone zero block at {consumed - 2 * BLOCK}")
            break
        chksum = _number(block[148:156])
        if chksum != sum(block[:148]) + 8 * 32 + sum(block[156:]):
            raise ValueError(f"bad header checksum at {consumed - BLOCK}")
        kind = block[156]
        size = _number(block[124:136])
        if pax_size is not None and kind not in b"xg":
            size, pax_size = pax_size, None
        if kind in HEADER_ONLY:
            size = 0
        data = take(size + (-size % BLOCK))
        if len(data) < size + (-size % BLOCK):
            raise ValueError("truncated entry data")
        if kind == ord("x"):
            pax_size = _pax_size(data[:size])
    return "sha256:" + h.hexdigest(), consumed


def one_gzip_member(data: bytes) -> bytes:
    """The content of a gzip stream that is exactly one member with nothing after it."""
    d = zlib.decompressobj(wbits=31)
    raw = d.decompress(data) + d.flush()
    if not d.eof:
        raise ValueError("the gzip member is cut short")
    if d.unused_data:
        raise ValueError(f"{len(d.unused_data)} bytes follow the first gzip member")
    return raw
