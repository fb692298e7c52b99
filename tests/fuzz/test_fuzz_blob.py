"""Fuzzing the blob readers: ``read_toc`` (and the section walk) and ``read_blob_meta``
(chunk-info arrays checked against blob-table fields). Only ``RafsError`` may escape and every
call ends within the time guard.

Inputs: mutations of v6 blobs written by rconv's blob writer (zstd, lz4 and uncompressed
chunks) with the trailing section header's checksum made valid again in most inputs, the
blob-table fields mutated along with the bytes, and mutations of the upstream blobs.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import seeds
from tests.fuzz.harness import TARGETS, budget, check, mutated

TOC, META = TARGETS["toc"], TARGETS["blob_meta"]


@budget(180)
@given(mutated(seeds.v6_blobs(), trailer=True, resize=False))
def test_mutated_toc(data: bytes) -> None:
    check(TOC, data)


@budget(220)
@given(mutated(seeds.blob_meta_inputs(), resize=False))
def test_mutated_blob_meta(data: bytes) -> None:
    check(META, data)


@budget(70)
@given(st.data())
def test_mutated_upstream_toc(upstream, data) -> None:
    check(TOC, data.draw(mutated(seeds.upstream_seeds(upstream)["toc"], trailer=True)))
