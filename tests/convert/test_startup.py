"""What `rconv convert` does before its first layer: the fork server starts early and is the
one the workers come from; the command line does not load httpx's own CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
        text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def module_loaded(name: str) -> bool:  # run in a worker
    return name in sys.modules


def test_workers_come_from_the_server_started_early():
    out = _run(
        """
        import os
        from concurrent.futures import ProcessPoolExecutor
        from convert.forkserver import start_early, worker_context
        from tests.convert.test_startup import module_loaded

        def children():
            tasks = f"/proc/{os.getpid()}/task"
            found = set()
            for task in os.listdir(tasks):
                with open(f"{tasks}/{task}/children") as f:
                    found.update(int(pid) for pid in f.read().split())
            return found

        if __name__ == "__main__":
            before = children()
            start_early()
            started = children() - before  # the fork server (and its resource tracker)
            with ProcessPoolExecutor(2, mp_context=worker_context()) as pool:
                parents = {pool.submit(os.getppid).result() for _ in range(4)}
                # imported once in the server, not by each worker at its first chunk's CRC
                crc = pool.submit(module_loaded, "crc32c").result()
            print(len(parents), parents <= started, crc)
        """
    )
    assert out == "1 True True"


def test_command_line_does_not_load_httpx_cli():
    out = _run(
        """
        import sys
        import convert.cli
        import httpx

        print(sys.modules["httpx._main"], "pygments" in sys.modules, callable(httpx.main))
        print("importlib.metadata" in sys.modules)  # crc32c reads its metadata: imported late
        import convert.pipeline  # what a v6 conversion without --oci-ref does not need:
        late = ("rafs.v5.reader", "rafs.v6.reader", "rafs.v5.writer", "rafs.zran.layer")
        print([name for name in late if name in sys.modules])
        """
    )
    assert out == "None False True\nFalse\n[]"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_signal_while_the_command_line_loads_leaves_no_server_dir(tmp_path, signum):
    """The fork server starts before the command line loads; a signal in between ends the
    process as its default action does, and the server's socket directory (multiprocessing's
    ``pymp-*`` in TMPDIR) goes with it. Loading is held here until the signal arrives."""
    code = """
        import sys, time

        class HoldLoading:
            def find_spec(self, name, path=None, target=None):
                if name == "convert.cli":
                    print("loading", flush=True)
                    time.sleep(60)
                return None

        sys.meta_path.insert(0, HoldLoading())
        sys.argv = ["rconv", "convert", "--source", "a/b:1", "--target", "a/b:2"]
        from convert.__main__ import main
        main()
        """
    work = tmp_path / "tmp"
    work.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(work)},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "loading\n"
        assert [p.name[:5] for p in work.iterdir()] == ["pymp-"]  # the server is up
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signum
    assert "Traceback" not in err, err
    assert list(work.iterdir()) == []
