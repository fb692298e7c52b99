"""The `serve` and `worker` commands: registered, loaded lazily (`rconv convert` must not pay
for the task engine, the web stack and the metrics: issue 13's start-up), and bad settings
refused in one line."""

from __future__ import annotations

import subprocess
import sys

from tests.cli import rconv

HEAVY = ("celery", "kombu", "sqlalchemy", "starlette", "uvicorn", "prometheus_client", "redis")


def test_cli_does_not_import_the_service_stack():
    code = f"import sys, convert.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_serve_and_worker_are_commands():
    out = subprocess.run(
        [sys.executable, "-m", "convert", "--help"], capture_output=True, text=True, check=True
    )
    assert "serve" in out.stdout and "worker" in out.stdout


def test_bad_settings_are_one_line(tmp_path):
    config = tmp_path / "serve.toml"
    config.write_text("[rules]\ntag_suffix = '-nydus'\n")  # acceld's name, not ours
    out = rconv("serve", "--config", config, "--state-dir", tmp_path, check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"rconv: error: {config}: unknown setting(s) tag_suffix"
    ]
    out = rconv("worker", "--broker", "amqp://nowhere//", check=False)
    assert out.returncode == 1 and out.stderr.startswith("rconv: error: broker amqp://")


def test_flags_win_over_the_settings_file(tmp_path):
    """A port already taken shows which listen address won, in one line, and nothing runs."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "serve.toml"
        config.write_text('listen = "127.0.0.1:1"\nworkers = 3\n')
        out = rconv(
            "serve", "--config", config, "--listen", f"127.0.0.1:{port}", "--workers", "0",
            "--state-dir", tmp_path / "state", check=False,
        )  # fmt: skip
    assert out.returncode == 1, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"rconv: error: listen 127.0.0.1:{port}: Address already in use")
    assert not (tmp_path / "state").exists()  # nothing started
