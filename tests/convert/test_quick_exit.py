"""``rconv convert`` and ``build`` leave without the interpreter's teardown
(``convert.cli._exit_now``): the exit status and the buffered output must survive it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.cli import REPO


@pytest.mark.parametrize(
    ("status", "code", "err"), [(None, 0, ""), (0, 0, ""), (3, 3, ""), ("boom", 1, "boom\n")]
)
def test_status_and_buffered_output_survive(status, code: int, err: str) -> None:
    program = (
        "import sys; from convert.cli import _exit_now\n"
        "sys.stdout.write('x' * 100000); sys.stderr.write('partial')\n"  # both still buffered
        f"_exit_now({status!r})\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == code
    assert result.stdout == "x" * 100000
    assert result.stderr == "partial" + err
