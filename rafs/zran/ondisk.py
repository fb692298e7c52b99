"""The ZRan context table and dictionaries in a blob's chunk-info area, and zran ci entries.

Spec: ../shared/spec/blob.md §12 (40-byte contexts, then the dictionaries), §8.1 (the header's
``s_ci_zran_offset/size/count`` locate them inside the uncompressed ci), §8.3 (ci v2 entries
with the zran flag: ``data = context index << 32 | offset inside the context's output``).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from rafs.blob.ondisk import CI_COMPRESSED, CI_V2, CI_ZRAN
from rafs.errors import InvalidImage
from rafs.zran.index import Context

# in_offset, out_offset, dict_offset, in_len, out_len, dict_size, ctx_byte, ctx_bits, reserved
CONTEXT = struct.Struct("<QQQIIIBBxx")
assert CONTEXT.size == 40


def encode_contexts(contexts: Sequence[Context]) -> bytes:
    """Context table then the dictionaries, in context order (dict offsets relative to the
    start of the dictionaries)."""
    table = bytearray()
    dict_off = 0
    for c in contexts:
        table += CONTEXT.pack(
            c.in_offset, c.out_offset, dict_off, c.in_len, c.out_len, len(c.window), c.byte, c.bits
        )
        dict_off += len(c.window)
    return bytes(table) + b"".join(c.window for c in contexts)


def decode_contexts(area: bytes, count: int) -> list[Context]:
    """The contexts (with their windows) of a zran area of ``count`` contexts."""
    table = count * CONTEXT.size
    if len(area) < table:
        raise InvalidImage(f"zran area of {len(area)} bytes cannot hold {count} contexts")
    dicts = memoryview(area)[table:]
    out = []
    for k, (in_off, out_off, d_off, in_len, out_len, d_size, byte, bits) in enumerate(
        CONTEXT.iter_unpack(area[:table])
    ):
        if d_off + d_size > len(dicts) or d_size > 1 << 15 or bits > 7:
            raise InvalidImage(f"zran context {k} has a bad dictionary or bit count")
        window = bytes(dicts[d_off : d_off + d_size])
        out.append(Context(in_off, out_off, in_len, out_len, bits, byte, window))
    return out


def encode_ci(
    uncompressed_offset: int,
    uncompressed_size: int,
    compressed_offset: int,
    compressed_size: int,
    context: int,
    offset: int,
) -> bytes:
    """One ci v2 entry of a zran chunk."""
    flags = CI_COMPRESSED | CI_ZRAN
    uncomp = (uncompressed_offset >> 12) | (uncompressed_size - 1) << 32 | flags << 56
    comp = compressed_offset | compressed_size << 40
    return CI_V2.pack(uncomp, comp, context << 32 | offset)
