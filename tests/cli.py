"""Run the rconv command line as a user would: a separate process, output captured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def rconv(*args: object, check: bool = True) -> subprocess.CompletedProcess:
    """``rconv ARGS``; with ``check`` the command must succeed (stderr shown otherwise)."""
    result = subprocess.run(
        [sys.executable, "-m", "convert", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result
