"""Fixtures shared by the convert tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli import REPO


@pytest.fixture(scope="module")
def sample_layout(tmp_path_factory) -> Path:
    """The testdata sample image as an OCI layout (tag ``1``)."""
    out = tmp_path_factory.mktemp("sample") / "layout"
    subprocess.run(
        [sys.executable, str(REPO / "testdata/make_sample.py"), "--oci", str(out)], check=True
    )
    return out
