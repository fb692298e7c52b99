"""rafs.layerstream: codec chosen by magic, streaming, and corrupt/truncated/bomb input."""

from __future__ import annotations

import gzip
import io
import os

import pytest
import zstandard

from rafs.errors import InvalidInput, Unsupported
from rafs.layerstream import open_layer

PAYLOAD = os.urandom(300_000) + b"\0" * 3_000_000 + b"tail"


def read_all(blob: bytes, size: int = 65536, **kw) -> bytes:
    reader = open_layer(io.BytesIO(blob), **kw)
    parts = []
    while data := reader.read(size):
        assert len(data) <= size
        parts.append(data)
    assert reader.read(size) == b""
    return b"".join(parts)


def zstd(data: bytes, **kw) -> bytes:
    return zstandard.ZstdCompressor(**kw).compress(data)


def test_every_codec_in_small_and_large_reads():
    for blob in (PAYLOAD, gzip.compress(PAYLOAD), zstd(PAYLOAD, write_checksum=True)):
        assert read_all(blob, 511) == PAYLOAD
        assert read_all(blob, 1 << 20) == PAYLOAD
        assert open_layer(io.BytesIO(blob)).read() == PAYLOAD  # read(-1): everything


def test_tiny_reads():
    small = b"tiny payload " * 10
    for blob in (small, gzip.compress(small), zstd(small)):
        assert read_all(blob, 1) == small


def test_empty_stream_is_an_empty_layer():
    assert read_all(b"") == b""


def test_short_plain_streams_are_not_mistaken_for_codecs():
    assert read_all(b"\x1f") == b"\x1f"
    assert read_all(b"ab") == b"ab"


def test_readinto():
    reader = open_layer(io.BytesIO(gzip.compress(b"abcdef")))
    buf = bytearray(4)
    assert reader.readinto(buf) == 4 and buf == b"abcd"


def test_multi_member_gzip_and_zero_padding():
    blob = gzip.compress(b"first ") + gzip.compress(b"second") + b"\0" * 1000
    assert read_all(blob) == b"first second"


def test_multi_frame_zstd_and_skippable_frame():
    skippable = b"\x50\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"hello"
    blob = zstd(b"one ") + skippable + zstd(b"two", write_content_size=False)
    assert read_all(blob) == b"one two"


CORRUPT = {
    "gzip-cut-trailer": (lambda: gzip.compress(PAYLOAD)[:-4], "gzip.*truncated"),
    "gzip-cut-early": (lambda: gzip.compress(PAYLOAD)[:5000], "gzip.*truncated"),
    "gzip-garbage": (lambda: gzip.compress(b"x") + b"garbage", "gzip.*trailing garbage"),
    "gzip-zeros-then-byte": (lambda: gzip.compress(b"x") + b"\0\0\x01", "gzip.*trailing garbage"),
    "gzip-bad-deflate": (lambda: gzip.compress(b"x")[:10] + b"\xff" * 40, "corrupt gzip"),
    "zstd-cut-end": (lambda: zstd(PAYLOAD)[:-3], "zstd.*truncated"),
    "zstd-cut-early": (lambda: zstd(PAYLOAD)[:5000], "zstd.*truncated"),
    "zstd-garbage": (lambda: zstd(b"x") + b"garbage!", "corrupt zstd"),
    "zstd-bad-block": (lambda: zstd(b"x" * 1000)[:8] + b"\xff" * 30, "corrupt zstd"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_or_truncated_input(case):
    make, message = CORRUPT[case]
    with pytest.raises(InvalidInput, match=message):
        read_all(make())


def test_gzip_crc_mismatch():
    blob = bytearray(gzip.compress(b"some data"))
    blob[-8] ^= 1
    with pytest.raises(InvalidInput, match="corrupt gzip"):
        read_all(bytes(blob))


def test_zstd_checksum_mismatch():
    blob = bytearray(zstd(b"some data" * 100, write_checksum=True))
    blob[-1] ^= 1
    with pytest.raises(InvalidInput, match="corrupt zstd"):
        read_all(bytes(blob))


@pytest.mark.parametrize("codec", [gzip.compress, zstd, bytes])
def test_decompressed_size_limit(codec):
    blob = codec(b"\0" * (8 << 20))
    assert len(read_all(blob, max_bytes=8 << 20)) == 8 << 20
    with pytest.raises(InvalidInput, match="limit"):
        read_all(blob, max_bytes=1 << 20)


def test_gzip_bomb_is_stopped_early():
    # ~10 MiB of compressed zeros expand to 10 GiB; the limit trips after ~1 MiB of output.
    member = gzip.compress(b"\0" * (64 << 20), 9)
    reader = open_layer(io.BytesIO(member * 160), max_bytes=1 << 20)
    with pytest.raises(InvalidInput, match="limit"):
        while reader.read(1 << 16):
            pass


@pytest.mark.parametrize("magic, name", [(b"BZh91AY&SY", "bzip2"), (b"\xfd7zXZ\x00\x00", "xz")])
def test_unsupported_codecs_are_named(magic, name):
    with pytest.raises(Unsupported, match=name):
        open_layer(io.BytesIO(magic + bytes(100)))
