"""rconv's modules byte-compiled before a benchmark runs them, as an install leaves them.

pip byte-compiles every module it installs; an editable install leaves the checkout's
sources, and where ``PYTHONDONTWRITEBYTECODE`` is set every rconv command compiled its
modules again: ~60 ms of each start-up (measured: ``import convert.cli, convert.pipeline``
217 -> 156 ms) that an installed rconv never pays. A stale file is harmless: Python checks
each against its source and compiles the source again when it changed.
"""

from __future__ import annotations

import compileall
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("convert", "rafs", "registry")


def byte_compile() -> None:
    for package in PACKAGES:
        if not compileall.compile_dir(REPO_ROOT / package, quiet=1):
            raise SystemExit(f"byte-compiling {package} failed")
