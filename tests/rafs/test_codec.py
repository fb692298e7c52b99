"""Chunk codecs: stored forms, fallback rule, decoding errors, digests, CRC and enum maps."""

from __future__ import annotations

import gzip
import hashlib
import os

import lz4.block
import pytest
import zstandard

from rafs import codec
from rafs.errors import InvalidImage, Unsupported

TEXT = b"the quick brown fox jumps over the lazy dog\n" * 500


def test_crc32c_check_value():
    assert codec.crc32c(b"123456789") == 0xE3069283
    assert codec.crc32c(b"") == 0


def test_digests_of_empty_input():
    assert codec.digest("blake3", b"").hex().startswith("af1349b9f5f9a1a6")
    assert codec.digest("sha256", b"") == hashlib.sha256(b"").digest()
    with pytest.raises(Unsupported):
        codec.digest("md5", b"")


def test_zstd_frame_shape():
    stored, compressed = codec.compress("zstd", TEXT)
    assert compressed and len(stored) < len(TEXT)
    assert stored[:4] == b"\x28\xb5\x2f\xfd"
    params = zstandard.get_frame_parameters(stored)
    assert params.content_size == len(TEXT)
    assert not params.has_checksum
    assert params.dict_id == 0
    assert stored[4] & 0x20  # single segment
    assert codec.decompress("zstd", stored, len(TEXT)) == TEXT


def test_lz4_is_a_raw_block_without_size_prefix():
    stored, compressed = codec.compress("lz4_block", TEXT)
    assert compressed
    assert stored == lz4.block.compress(TEXT, store_size=True)[4:]
    assert lz4.block.decompress(stored, uncompressed_size=len(TEXT)) == TEXT
    assert codec.decompress("lz4_block", stored, len(TEXT)) == TEXT


@pytest.mark.parametrize("name", ["none", "lz4_block", "zstd"])
def test_fallback_stores_raw(name):
    noise = os.urandom(5000)
    assert codec.compress(name, noise) == (noise, False)
    assert codec.compress(name, b"") == (b"", False)
    assert codec.compress(name, b"x") == (b"x", False)


@pytest.mark.parametrize("name", ["none", "lz4_block", "zstd"])
def test_compress_many_equals_compress_piece_by_piece(name):
    pieces = [TEXT, os.urandom(5000), b"x", TEXT * 40, b"ab" * 3000]
    assert codec.compress_many(name, pieces) == [codec.compress(name, p) for p in pieces]
    assert codec.compress_many(name, []) == []


def test_cannot_write_gzip():
    with pytest.raises(Unsupported):
        codec.compress("gzip", TEXT)
    with pytest.raises(Unsupported):
        codec.check_compressor("gzip")


def test_gzip_decodes(upstream):
    data = (upstream / "zran" / "zlib_sample.txt.gz").read_bytes()
    expected = b"This is a test file for zlib.\n"
    assert codec.decompress("gzip", data, len(expected)) == expected
    with pytest.raises(InvalidImage):
        codec.decompress("gzip", data, len(expected) - 1)
    assert codec.decompress("gzip", gzip.compress(TEXT), len(TEXT)) == TEXT


@pytest.mark.parametrize("name", ["lz4_block", "zstd"])
def test_wrong_length_is_invalid(name):
    stored, _ = codec.compress(name, TEXT)
    for size in (len(TEXT) - 1, len(TEXT) + 1):
        with pytest.raises(InvalidImage):
            codec.decompress(name, stored, size)


@pytest.mark.parametrize("name", ["lz4_block", "zstd", "gzip"])
def test_corrupt_data_is_invalid(name):
    # Damaged literals can decode "successfully" (no zstd checksum): the chunk id catches those.
    # Broken framing and truncation must fail here.
    stored = gzip.compress(TEXT) if name == "gzip" else codec.compress(name, TEXT)[0]
    garbage = hashlib.sha256(b"seed").digest() * (len(stored) // 32 + 1)
    with pytest.raises(InvalidImage):
        codec.decompress(name, garbage[: len(stored)], len(TEXT))
    with pytest.raises(InvalidImage):
        codec.decompress(name, stored[: len(stored) // 2], len(TEXT))


def test_zstd_declared_size_checked_before_decoding():
    huge = zstandard.ZstdCompressor().compress(bytes(1 << 20))
    with pytest.raises(InvalidImage, match="declares"):
        codec.decompress("zstd", huge, 10)


def test_raw_length_checked():
    assert codec.decompress("none", b"abc", 3) == b"abc"
    with pytest.raises(InvalidImage):
        codec.decompress("none", b"abc", 4)


def test_enum_maps():
    for name, value in codec.COMPRESSOR_ENUM.items():
        assert codec.compressor_from_enum(codec.compressor_to_enum(name)) == name
        assert value == ("none", "lz4_block", "gzip", "zstd").index(name)
    assert codec.digester_from_enum(1) == "sha256"
    assert codec.DIGESTER_ENUM["blake3"] == 0
    with pytest.raises(InvalidImage):
        codec.compressor_from_enum(7)
    assert codec.toc_flag("zstd") == 2 and codec.toc_flag("lz4_block") == 4
    assert codec.compressor_from_toc_flags(0x1) == "none"
    with pytest.raises(Unsupported):
        codec.toc_flag("gzip")
