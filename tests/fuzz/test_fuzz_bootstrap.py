"""Fuzzing the bootstrap readers: ``rafs.v6.reader.parse``, ``rafs.v5.reader.read_bootstrap``
(with digest verification) and the version dispatch of ``rafs.bootstrap``. Only ``RafsError``
may escape and every call ends within the time guard.

Inputs: mutations of bootstraps written by rconv's own v6 and v5 writers (several compressors
and digesters, every entry type, multi-chunk files, hard links, a prefetch table) and of the
upstream fixtures.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import seeds
from tests.fuzz.harness import TARGETS, budget, check, mutated

V6, V5, ANY = TARGETS["v6"], TARGETS["v5"], TARGETS["bootstrap"]


@budget(270)
@given(mutated(seeds.bootstraps(6)))
def test_mutated_v6(data: bytes) -> None:
    check(V6, data)


@budget(270)
@given(mutated(seeds.bootstraps(5)))
def test_mutated_v5(data: bytes) -> None:
    check(V5, data)


@budget(70)
@given(mutated(seeds.bootstraps(5) + seeds.bootstraps(6)))
def test_mutated_any_version(data: bytes) -> None:
    check(ANY, data)


@budget(110)
@given(st.data())
def test_mutated_upstream_v6(upstream, data) -> None:
    check(V6, data.draw(mutated(seeds.upstream_seeds(upstream)["v6"])))


@budget(110)
@given(st.data())
def test_mutated_upstream_v5(upstream, data) -> None:
    check(V5, data.draw(mutated(seeds.upstream_seeds(upstream)["v5"])))
