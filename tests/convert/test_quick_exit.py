"""``rconv convert`` and ``build`` leave without the interpreter's teardown
(``convert.cli._exit_now``): the exit status and the buffered output must survive it."""

from __future__ import annotations

import os
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


def test_the_fork_servers_directory_does_not_outlive_the_command(tmp_path) -> None:
    """multiprocessing's own cleanup of it is part of the teardown that is skipped."""
    program = (
        "import multiprocessing, concurrent.futures\n"
        "from convert.cli import _exit_now\n"
        "if __name__ == '__main__':\n"
        "    ctx = multiprocessing.get_context('forkserver')\n"
        "    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:\n"
        "        pool.submit(abs, -1).result()\n"
        "    print(multiprocessing.current_process()._config['tempdir'])\n"
        "    _exit_now(0)\n"
    )
    script = tmp_path / "prog.py"
    script.write_text(program)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=REPO,
        env={**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(str(tmp / "pymp-"))
    assert list(tmp.iterdir()) == []
