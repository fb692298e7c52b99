"""Fuzzing the registry parsers: manifests, indexes and configs read through the image model
as a converter reads them, image references and specs, and ``WWW-Authenticate`` challenges.
Only ``RegistryError`` may escape and every call ends within the time guard.

Inputs: valid OCI and Docker manifests, an index and a config with JSON values replaced or
removed at random paths (or their bytes mutated), mutated references and random text.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import seeds
from tests.fuzz.harness import TARGETS, budget, check, json_mutated, mutated

REF_ALPHABET = st.sampled_from(list("abcAZ09:/@._-+[]:% \t\n\u00e9") + ["sha256:", "//", ".."])


@budget(220)
@given(json_mutated(seeds.manifests()))
def test_mutated_manifests(data: bytes) -> None:
    check(TARGETS["manifest"], data)


@budget(140)
@given(json_mutated(seeds.indexes()))
def test_mutated_indexes(data: bytes) -> None:
    check(TARGETS["index"], data)


@budget(140)
@given(json_mutated(seeds.configs()))
def test_mutated_configs(data: bytes) -> None:
    check(TARGETS["config"], data)


@budget(180)
@given(
    st.one_of(
        mutated(seeds.references()),
        st.lists(REF_ALPHABET, max_size=30).map(lambda parts: "".join(parts).encode()),
    )
)
def test_references_and_specs(data: bytes) -> None:
    check(TARGETS["reference"], data)


@budget(90)
@given(st.one_of(mutated(seeds.challenges()), st.text(max_size=80).map(str.encode)))
def test_challenges(data: bytes) -> None:
    check(TARGETS["challenge"], data)
