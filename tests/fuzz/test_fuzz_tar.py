"""Fuzzing the layer tar reader (``rafs.tarstream``) and the codec sniffing in front of it
(``rafs.layerstream``): only ``RafsError`` may escape, every call ends within the time guard.

Inputs: mutated tars (tarfile's three formats and hand-made sparse, long-name, global-header
entries), tars generated entry by entry from random headers and PAX records, mutated gzip /
zstd layers, and mutations of the upstream tar fixtures.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import seeds
from tests.fuzz.harness import TARGETS, Hang, budget, check, mutated, time_limit
from tests.tarmaker import END, entry, pax_raw, pax_record

TAR, LAYER = TARGETS["tar"], TARGETS["layer"]

PAX_KEYS = [b"path", b"linkpath", b"size", b"uid", b"gid", b"mtime", b"uname",
            b"SCHILY.xattr.user.a", b"SCHILY.xattr.system.x", b"GNU.sparse.major",
            b"GNU.sparse.minor", b"GNU.sparse.name", b"GNU.sparse.realsize", b"GNU.sparse.size",
            b"GNU.sparse.map", b"GNU.sparse.numblocks", b"GNU.sparse.offset",
            b"GNU.sparse.numbytes"]  # fmt: skip
NAMES = [b"a", b"a/b", b"./a/", b"../x", b"/abs", b"a/../../b", b".wh.a", b"a/.wh..wh..opq",
         b"\xff\xfe", b"n" * 256, b"", b".", b"a//b/./c"]  # fmt: skip


@st.composite
def pax_body(draw) -> bytes:
    records = [
        pax_record(draw(st.sampled_from(PAX_KEYS)), draw(st.binary(max_size=24)))
        for _ in range(draw(st.integers(0, 4)))
    ]
    raw = b"".join(records)
    if draw(st.integers(0, 4)) == 0:  # a damaged length, newline or missing '='
        raw = draw(st.sampled_from([b"5 a=b", b"99 k=v\n", b"x k=v\n", b"6 kv\n\n", b"7 a=\nb\n"]))
    return raw


@st.composite
def random_tar(draw) -> bytes:
    """A tar assembled from random but well-checksummed headers."""
    parts = []
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.booleans()):
            parts.append(pax_raw(draw(pax_body()), draw(st.sampled_from([b"x", b"g"]))))
        data = draw(st.binary(max_size=600))
        flag = draw(st.sampled_from(list(b"0123456789xgLKSAZ\0")))
        parts.append(
            entry(
                draw(st.sampled_from(NAMES)),
                data,
                bytes([flag]),
                mode=draw(st.integers(0, 0o7777)),
                uid=draw(st.integers(0, 8**7 - 1)),
                link=draw(st.sampled_from(NAMES))[:100],
                major=draw(st.integers(0, 8**7 - 1)),
                minor=draw(st.integers(0, 8**7 - 1)),
                gnu=draw(st.booleans()),
            )
        )
    tail = draw(st.sampled_from([END, b"", bytes(512), b"garbage"]))
    return b"".join(parts) + tail


@budget(320)
@given(mutated(seeds.tars(), tar_checksums=True))
def test_mutated_tars(data: bytes) -> None:
    check(TAR, data)


@budget(180)
@given(random_tar())
def test_random_tars(data: bytes) -> None:
    check(TAR, data)


@budget(70)
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    check(TAR, data)
    check(LAYER, data)


@budget(140)
@given(mutated(seeds.layers()))
def test_mutated_compressed_layers(data: bytes) -> None:
    check(LAYER, data)


@budget(110)
@given(st.data())
def test_mutated_upstream_tars(upstream, data) -> None:
    tars = seeds.upstream_seeds(upstream)["tar"]
    check(TAR, data.draw(mutated(tars, tar_checksums=True)))


# The harness itself: a foreign exception escapes, a hang is cut by the time guard.


def test_harness_reports_foreign_exceptions_and_hangs() -> None:
    def boom(data: bytes) -> None:
        raise KeyError("not a rafs error")

    with pytest.raises(KeyError):
        check(type(TAR)("boom", boom, TAR.allowed), b"")
    with pytest.raises(Hang), time_limit(0.05):
        while True:
            pass
