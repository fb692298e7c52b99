"""Zran: gzip checkpoints, ref blobs and reading chunks back (blob.md §6.3, §12; fixtures.md §8)."""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import os
import tarfile
import zlib
from pathlib import Path

import pytest

from rafs import codec
from rafs.blob.reader import parse_blob_meta_header
from rafs.errors import InvalidInput
from rafs.model import Node, walk
from rafs.zran.index import Boundary, ContextBuilder
from rafs.zran.layer import build_zran_layer
from rafs.zran.reader import ZranData, parse_ci, read_ref_meta

TARGZ = ["zran-single-stream.tar.gz", "zran-two-streams.tar.gz", "zran-zero-file.tar.gz",
         "bgzip.tar.gz"]  # fmt: skip


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _expected(raw_tar: bytes) -> dict[bytes, bytes]:
    with tarfile.open(fileobj=io.BytesIO(raw_tar)) as tar:
        return {
            m.name.removeprefix("./").encode(): tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar
            if m.isreg()
        }


def _roundtrip(data: bytes, chunk_size: int = 0x100000) -> dict[bytes, bytes]:
    """Index ``data``, then read every file back through the ref blob and the gzip bytes."""
    ref = io.BytesIO()
    layer = build_zran_layer(io.BytesIO(data), ref, None, chunk_size)
    info = layer.info
    assert info.blob_id == hashlib.sha256(data).hexdigest()
    assert info.compressed_size == len(data)
    assert layer.ref_size == len(ref.getvalue())
    assert info.meta_digest == hashlib.sha256(ref.getvalue()).digest()
    reader = ZranData(io.BytesIO(data), read_ref_meta(ref, info)) if info.chunk_count else None
    out = {}
    for path, node in walk(layer.tree.root):
        if isinstance(node, Node) and node.kind == 0o100000:
            content = b""
            for chunk in node.chunks:
                assert reader is not None
                piece = reader.chunk(chunk.index)
                assert hashlib.sha256(piece).digest() == chunk.digest
                content += piece
            out[path.lstrip(b"/")] = content
    return out


def test_upstream_blob_meta_fixture(upstream: Path) -> None:
    raw = (
        upstream
        / "zran"
        / ("233c72f2b6b698c07021c4da367cfe2dff4f049efbaa885ca0ff760ea297865a.blob.meta")
    ).read_bytes()
    header = parse_blob_meta_header(raw[-4096:])
    assert (header.features, header.ci_compressor, header.ci_entries) == (0xF, "none", 163)
    assert (header.ci_uncompressed_size, header.zran_offset, header.zran_size) == (
        660112, 3912, 656200)  # fmt: skip
    assert header.zran_count == 21
    meta = parse_ci(raw[: header.ci_uncompressed_size], header, "fixture")
    first = meta.entries[0]
    assert (first.uncompressed_offset, first.uncompressed_size) == (0, 1404)
    assert (first.compressed_offset, first.compressed_size, first.flags) == (184, 649, 0x3)
    assert (first.data >> 32, first.data & 0xFFFFFFFF) == (0, 1024)
    assert len(meta.contexts) == 21
    assert sum(len(c.window) for c in meta.contexts) == 656200 - 21 * 40


@pytest.mark.parametrize("name", TARGZ)
def test_upstream_targz_fixtures_read_back(upstream: Path, name: str) -> None:
    data = (upstream / "zran" / name).read_bytes()
    assert _roundtrip(data) == _expected(gzip.decompress(data))


def test_multi_member_and_small_chunks_read_back() -> None:
    files = {f"d/f{i}": hashlib.sha256(b"%d" % i).digest() * (300 * i + 1) for i in range(40)}
    files["zeros"] = bytes(3 << 20)
    raw = _tar(files)
    cut = [0, 100_000, 100_001, 700_000, len(raw)]
    members = b"".join(gzip.compress(raw[a:b], mtime=0) for a, b in zip(cut, cut[1:], strict=False))
    assert _roundtrip(members, chunk_size=0x1000) == _expected(raw)


def test_deterministic_and_deduplicated() -> None:
    same = bytes(range(256)) * 40
    data = gzip.compress(_tar({"a": same, "b": same, "c": b"x"}), mtime=0)
    refs = []
    for _ in range(2):
        ref = io.BytesIO()
        layer = build_zran_layer(io.BytesIO(data), ref, None, 0x100000)
        refs.append(ref.getvalue())
    assert refs[0] == refs[1]
    assert layer.info.chunk_count == 2  # "b" references the chunk of "a"


class _Trickle:
    """A stream answering every read with at most ``most`` bytes, the sizes cycling."""

    def __init__(self, data: bytes, most: int) -> None:
        self._f = io.BytesIO(data)
        self._sizes = itertools.cycle(range(1, most + 1))

    def read(self, n: int = -1) -> bytes:
        return self._f.read(min(n, next(self._sizes)) if n >= 0 else next(self._sizes))


def test_index_depends_on_the_stream_alone() -> None:
    """How the input arrives (a socket answers with what it has) moves no byte of the ref
    blob: inflate's steps, which place the chunks' compressed offsets, are cut at whole
    input buffers."""
    files = {f"f{i}": hashlib.sha256(b"%d" % i).digest() * (500 * i + 7) for i in range(60)}
    data = gzip.compress(_tar(files), compresslevel=1, mtime=0)
    refs = set()
    for raw in (io.BytesIO(data), _Trickle(data, 997), _Trickle(data, 4096)):
        ref = io.BytesIO()
        build_zran_layer(raw, ref, None, 0x1000)
        refs.add(ref.getvalue())
    assert len(refs) == 1


def test_verified_input_is_not_digested_again() -> None:
    data = gzip.compress(_tar({"a": b"1" * 5000}), mtime=0)
    named = "sha256:" + "ab" * 32  # a verified stream vouches for it; nothing compares
    layer = build_zran_layer(io.BytesIO(data), io.BytesIO(), named, 0x100000, verified=True)
    assert layer.digest == named and layer.info.blob_id == "ab" * 32
    with pytest.raises(InvalidInput, match="layer digest is sha256:"):
        build_zran_layer(io.BytesIO(data), io.BytesIO(), named, 0x100000)


class _Failing:
    """A source that breaks after ``after`` bytes, as a registry stream whose digest is wrong
    raises at its end."""

    def __init__(self, data: bytes, after: int) -> None:
        self._f = io.BytesIO(data[:after])

    def read(self, n: int = -1) -> bytes:
        got = self._f.read(n)
        if not got:
            raise ConnectionError("source broke")
        return got


def test_source_errors_reach_the_caller() -> None:
    data = gzip.compress(_tar({f"f{i}": os.urandom(50_000) for i in range(20)}), mtime=0)
    with pytest.raises(ConnectionError, match="source broke"):
        build_zran_layer(_Failing(data, len(data) // 2), io.BytesIO(), None, 0x100000)
    with pytest.raises(InvalidInput, match="truncated"):
        build_zran_layer(io.BytesIO(data[: len(data) // 2]), io.BytesIO(), None, 0x100000)


def test_not_gzip_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not a gzip stream"):
        build_zran_layer(io.BytesIO(codec.compress("zstd", _tar({"a": b"1"}))[0]),
                         io.BytesIO(), None, 0x100000)  # fmt: skip


def test_corrupt_gzip_is_refused() -> None:
    data = bytearray(gzip.compress(_tar({"a": bytes(range(256)) * 100}), mtime=0))
    data[40] ^= 0xFF
    with pytest.raises((InvalidInput, zlib.error)):
        build_zran_layer(io.BytesIO(bytes(data)), io.BytesIO(), None, 0x100000)


class _FakeIndex:
    """Boundaries every ``step`` uncompressed bytes, compressed at ratio 4:1."""

    def __init__(self, step: int) -> None:
        self.step = step

    def latest_boundary(self, out_pos: int) -> Boundary:
        at = out_pos // self.step * self.step
        return Boundary(at // 4, at, 0, 0, (), 0, 0)

    def in_at(self, out_pos: int) -> int:
        return out_pos // 4

    def in_after(self, out_pos: int) -> int:
        return out_pos // 4


@pytest.mark.parametrize(("step", "expected"), [(64 << 10, 8), (3 << 20, 3)])
def test_context_spacing_is_upstreams(step: int, expected: int) -> None:
    """A context is opened at a chunk start once the current one spans 512 KiB compressed or
    its span plus a chunk reaches 2 MiB, and only at a boundary passed since (upstream's
    ``ZranGenerator::begin_read``)."""
    builder = ContextBuilder(_FakeIndex(step), 1 << 20)  # type: ignore[arg-type]
    for k in range(8):  # eight 1 MiB chunks back to back
        builder.begin(k << 20)
        builder.end((k + 1) << 20)
    starts = [c.out_offset for c in builder.contexts]
    assert len(starts) == expected
    for a, b in zip(starts, starts[1:], strict=False):
        assert b - a >= 1 << 20  # never closer than the 2 MiB - chunk rule allows
    assert all(s % step == 0 for s in starts)  # always at a boundary


def test_a_member_ending_exactly_with_a_file_reads_back() -> None:
    """A chunk ending where a gzip member ends: the checkpoint's span takes the member's
    trailer, which the reader (like nydusd's) must step over."""
    data = hashlib.sha256(b"x").digest() * 2048  # 64 KiB: the tar pads nothing after it
    raw = _tar({"a": data, "b": b"tail" * 100})
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        member = tar.getmember("a")
    for cut in (member.offset_data, member.offset_data + member.size):
        members = gzip.compress(raw[:cut], mtime=0) + gzip.compress(raw[cut:], mtime=0)
        assert _roundtrip(members) == _expected(raw)
