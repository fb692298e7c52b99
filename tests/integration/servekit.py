"""Real processes for the service tests and the burst bench: ``redis-server`` on a free port,
``docker-registry`` notifying ``rconv serve``, the service and its workers as subprocesses,
and small images sharing a base layer.

``deploy(workdir, broker="embedded"|"redis", workers=N)`` yields a ``Deployment``: the
registry, the service URL, HTTP helpers carrying the auth header, and the worker processes
(with Redis: N ``rconv worker`` processes of one pool process each, in their own process
groups, and a service with no local worker; embedded: the service's own worker with N pool
processes). Logs go to files in ``workdir``; ``logs()`` returns their tails for assertions.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import random
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from registry import mediatype as mt
from registry.build import Blob, build_image
from registry.model import Image
from tests.conftest import require_tool
from tests.integration.conftest import RegistryServer, free_port, start_registry

AUTH = "Bearer rconv-test-" + uuid.uuid4().hex[:12]
REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ images


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gz_layer(tar: bytes) -> tuple[Blob, str]:
    gz = gzip.compress(tar, compresslevel=1, mtime=0)
    return Blob.from_bytes(gz, mt.OCI_LAYER_GZIP), "sha256:" + hashlib.sha256(tar).hexdigest()


def random_files(seed: int, count: int, size: int, prefix: str) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {f"{prefix}/f{i}": rng.randbytes(size) for i in range(count)}


_BASE = gz_layer(tar_of(random_files(0, 8, 16 << 10, "usr/lib")))  # shared by every app image


def app_image(seed: int) -> Image:
    """A two-layer image: the shared base, and a small layer of its own."""
    top = gz_layer(tar_of(random_files(seed, 3, 4 << 10, f"app{seed}")))
    return image_of([_BASE, top], seed)


def broken_image(seed: int) -> Image:
    """Declares a gzip layer whose bytes are not gzip: a source that cannot be converted."""
    junk = random.Random(seed).randbytes(3000)
    return image_of([(Blob.from_bytes(junk, mt.OCI_LAYER_GZIP), "sha256:" + "0" * 64)], seed)


def image_of(layers: list[tuple[Blob, str]], seed: int) -> Image:
    config = {"architecture": "amd64", "os": "linux", "config": {"Env": [f"SEED={seed}"]},
              "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]}}  # fmt: skip
    return build_image(config, [blob for blob, _ in layers])


# ------------------------------------------------------------------ processes


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not within {timeout} s")


def _stop(proc: subprocess.Popen, group: bool = False) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
        proc.wait()


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A throw-away ``redis-server`` (no persistence) on a free loopback port; its URL."""
    binary = require_tool("redis-server")
    port = free_port()
    log = open(workdir / "redis.log", "wb")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip

    def ready() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    try:
        _wait(ready, 20, "redis-server answering PING")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(proc)
        log.close()


def notifications(url: str) -> dict[str, Any]:
    """The registry config section sending manifest pushes to ``url`` (blob events and pulls
    are filtered out by the registry itself)."""
    endpoint = {
        "name": "rconv", "url": url, "headers": {"Authorization": [AUTH]},
        "timeout": "5s", "threshold": 10, "backoff": "200ms",
        "ignoredmediatypes": ["application/octet-stream"], "ignore": {"actions": ["pull"]},
    }  # fmt: skip
    return {"notifications": {"endpoints": [endpoint]}}


def rconv_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "convert", *args]


@dataclass
class Deployment:
    registry: RegistryServer
    url: str
    workdir: Path
    broker: str  # "embedded" or the Redis URL
    serve: subprocess.Popen
    workers: list[subprocess.Popen] = field(default_factory=list)
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))

    def get(self, path: str, auth: str | None = AUTH) -> httpx.Response:
        return self.http.get(self.url + path, headers={"Authorization": auth} if auth else {})

    def post(self, path: str, body: Any, auth: str | None = AUTH, **kw) -> httpx.Response:
        headers = {"Authorization": auth} if auth else {}
        return self.http.post(self.url + path, json=body, headers=headers, **kw)

    def tasks(self) -> list[dict]:
        r = self.get("/api/v1/conversions")
        assert r.status_code == 200, r.text
        return r.json()

    def tasks_for(self, source_tag: str) -> list[dict]:
        return [t for t in self.tasks() if t["source_tag"] == source_tag]

    def wait_task(self, source_tag: str, states: tuple[str, ...], timeout: float = 60) -> dict:
        found: list[dict] = []

        def done() -> bool:
            found[:] = [t for t in self.tasks_for(source_tag) if t["state"] in states]
            return bool(found)

        try:
            _wait(done, timeout, f"a task for {source_tag} in {states}")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: {self.tasks_for(source_tag)}\n{self.logs()}") from None
        return found[0]

    def logs(self) -> str:
        out = []
        for path in sorted(self.workdir.glob("*.log")):
            out.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(out)


@contextlib.contextmanager
def deploy(
    workdir: Path, broker: str = "embedded", workers: int = 2, **flags: str
) -> Iterator[Deployment]:
    """Registry → ``rconv serve`` → workers, all real processes; see the module docstring.
    ``flags``: more ``rconv serve`` flags (``retry_backoff="0.5"``)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, REGISTRY_AUTH_FILE=str(workdir / "no-auth.json"))
    (workdir / "no-auth.json").write_text("{}")
    with contextlib.ExitStack() as stack:
        registry = stack.enter_context(
            start_registry(workdir / "registry", extra=notifications(f"{url}/api/v1/notifications"))
        )
        broker_url = stack.enter_context(redis_server(workdir)) if broker == "redis" else None
        args = ["serve", "--listen", f"127.0.0.1:{port}", "--state-dir", str(workdir / "state"),
                "--auth-header", AUTH, "--plain-http",
                "--workers", "0" if broker_url else str(workers)]  # fmt: skip
        if broker_url:
            args += ["--broker", broker_url]
        for name, value in flags.items():
            args += [f"--{name.replace('_', '-')}", value]

        def start(name: str, argv: list[str], group: bool = False) -> subprocess.Popen:
            log = stack.enter_context(open(workdir / f"{name}.log", "wb"))
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=REPO, start_new_session=group,
            )  # fmt: skip
            stack.callback(_stop, proc, group)
            return proc

        serve = start("serve", rconv_cmd("--debug", *args))
        dep = Deployment(registry, url, workdir, broker_url or "embedded", serve)
        stack.callback(dep.http.close)
        if broker_url:
            visibility = flags.get("visibility_timeout", "3600")
            for i in range(workers):
                argv = rconv_cmd("--debug", "worker", "--broker", broker_url, "--concurrency", "1",
                                 "--visibility-timeout", visibility)  # fmt: skip
                dep.workers.append(start(f"worker{i}", argv, group=True))

        def healthy() -> bool:
            assert serve.poll() is None, dep.logs()
            try:
                return dep.get("/api/v1/health").status_code == 200
            except httpx.TransportError:
                return False

        _wait(healthy, 30, "rconv serve answering /api/v1/health")
        yield dep
