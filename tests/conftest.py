"""Shared pytest fixtures.

Upstream fixtures are read in place from ../shared/fixtures/nydus (never copied into the repo).
Where that folder is absent the tests that need it skip with a reason, except under CI=true,
where they fail: CI must never pass by skipping them. The same rule applies to external tools.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UPSTREAM_FIXTURES = REPO.parent / "shared" / "fixtures" / "nydus"
IN_CI = os.environ.get("CI") == "true"


def require(condition: bool, reason: str) -> None:
    """Skip when a prerequisite is missing; fail instead under CI=true."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"missing in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def upstream() -> Path:
    """Directory of the upstream nydus fixtures (shared/fixtures/nydus)."""
    require(UPSTREAM_FIXTURES.is_dir(), f"upstream fixtures not found at {UPSTREAM_FIXTURES}")
    return UPSTREAM_FIXTURES


def require_tool(name: str) -> str:
    path = shutil.which(name)
    require(path is not None, f"{name} is not installed")
    return path  # type: ignore[return-value]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Whole directories of end-to-end tests are marked ``integration`` here (real registries,
    the fault proxy, fuzz budgets), as is any test using a registry fixture; modules and tests
    that run the CLI in a subprocess or build huge trees carry the mark themselves. What is
    left, ``pytest -m "not integration"``, runs in seconds."""
    for item in items:
        parts = item.path.parts
        fixtures = getattr(item, "fixturenames", ())
        if {"integration", "faults", "fuzz"} & set(parts) or "registry_server" in fixtures:
            item.add_marker(pytest.mark.integration)
