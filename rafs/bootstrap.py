"""Version dispatch for bootstraps: detect v5/v6 from the first bytes, read and write either.

Spec: ../shared/spec/rafs-v6.md §22.4 (how nydus-snapshotter tells the versions apart),
rafs-v5.md §1 (v5 magic and version).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterator
from typing import BinaryIO

from rafs.errors import InvalidImage
from rafs.model import Bootstrap
from rafs.v6.writer import bootstrap_parts as parts_v6

# The readers and the v5 writer are imported where they are used: a v6 conversion needs
# neither, and they were ~25 ms of every `rconv convert`'s start-up.

V5_MAGIC = 0x52414653
V5_VERSION = 0x500
V6_MAGIC = 0xE0F5E1E2
HEAD_SIZE = 1028  # enough to see the EROFS magic at 1024


def detect_version(head: bytes) -> int:
    """5 or 6 from the first bytes of a bootstrap; InvalidImage if neither."""
    if len(head) >= 8 and struct.unpack_from("<II", head) == (V5_MAGIC, V5_VERSION):
        return 5
    if len(head) >= 1028 and struct.unpack_from("<I", head, 1024)[0] == V6_MAGIC:
        return 6
    raise InvalidImage("not a RAFS bootstrap (neither the v5 nor the v6 magic is present)")


def read_bootstrap(f: BinaryIO) -> Bootstrap:
    data = f.read()
    version = detect_version(data[:HEAD_SIZE])
    if version == 6:
        from rafs.v6.reader import parse

        return parse(data).bootstrap
    from rafs.v5.reader import read_bootstrap as read_v5

    return read_v5(io.BytesIO(data))


def write_bootstrap(
    out: BinaryIO, bs: Bootstrap, await_blobs: Callable[[], None] | None = None
) -> None:
    """Write ``bs`` in its version. ``await_blobs`` is called before any BlobInfo field is
    read, so that the blobs may still be finishing while the tree is laid out (v6 lays it
    out first; v5 calls it at once)."""
    for part in bootstrap_parts(bs, await_blobs)[1]:
        out.write(part)


def bootstrap_parts(
    bs: Bootstrap, await_blobs: Callable[[], None] | None = None, release_tree: bool = False
) -> tuple[int, Iterator[bytes | bytearray]]:
    """The bootstrap's size and its bytes in consecutive parts, the later ones made as they
    are asked for (v6: the chunk table), so that a consumer compressing one part overlaps
    the making of the next. ``await_blobs`` as for ``write_bootstrap``. ``release_tree``
    (v6): the tree is emptied as it is written, for a caller done with it."""
    if bs.version == 6:
        return parts_v6(bs, await_blobs, release_tree)
    if bs.version == 5:
        from rafs.v5.writer import write_bootstrap as write_v5

        if await_blobs is not None:
            await_blobs()
        out = io.BytesIO()
        write_v5(out, bs)
        data = out.getvalue()
        return len(data), iter([data])
    raise ValueError(f"unknown RAFS version {bs.version}")
