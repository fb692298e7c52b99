"""Starting the service and the workers (what ``rconv serve`` and ``rconv worker`` call).

``serve``: the state directory (task index; with the embedded broker, its SQLite files in WAL
mode so the service and the workers read and write at once), the tracker thread, the local
workers (one ``rconv worker`` child process with ``--workers`` pool processes, the very
command other machines run), then uvicorn until SIGINT/SIGTERM. ``worker``: a Celery worker
(prefork pool: a conversion runs in a pool process, so a crash or a kill of one conversion
leaves the worker to requeue it).
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import sys
import warnings
from pathlib import Path

from convert.serve.config import ServeConfig
from convert.serve.engine import QUEUE, make_app, queue_depth, redelivers, result_backend_for
from convert.serve.local import LocalWorker
from convert.serve.store import TaskStore

log = logging.getLogger("rconv.serve")
LOG_FORMAT = "%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s"


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=LOG_FORMAT)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per registry request
    logging.getLogger("rconv").setLevel(logging.INFO)  # a line per task and per restart


def _wal(broker: str, result_backend: str) -> None:
    """SQLite files of the embedded engine in WAL mode (readers never block the writer)."""
    for url, prefix in ((broker, "sqla+sqlite:///"), (result_backend, "db+sqlite:///")):
        if url.startswith(prefix):
            path = Path(url.removeprefix(prefix))
            path.parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(path) as db:
                db.execute("PRAGMA journal_mode=WAL")


def serve(config: ServeConfig, verbose: bool = False) -> None:
    import uvicorn

    from convert.serve.app import make_app as make_http
    from convert.serve.metrics import Metrics
    from convert.serve.service import Service
    from convert.serve.tracker import Tracker
    from registry.client import RegistryClient
    from registry.options import RegistryOptions

    _logging(verbose)
    host, port = config.host_port
    try:  # bound here, so that a port in use is one line before anything starts
        sock = socket.create_server((host, port))
    except OSError as exc:
        raise OSError(f"listen {config.listen}: {exc.strerror or exc}") from None
    config.state_dir.mkdir(parents=True, exist_ok=True)
    broker = config.broker_url
    backend = config.result_backend or result_backend_for(broker)
    _wal(broker, backend)
    engine = make_app(broker, backend, config.visibility_timeout)
    store = TaskStore(config.state_dir / "tasks.db")
    metrics = Metrics(store.counts, lambda: queue_depth(engine))
    rules = config.rules()
    # credentials from the Docker config (DOCKER_CONFIG, REGISTRY_AUTH_FILE), as for convert
    client = RegistryClient(
        RegistryOptions(plain_http=rules.options.plain_http, insecure=rules.options.insecure)
    )
    service = Service(rules, store, engine, lambda ref: client.resolve(ref).digest, config.retry)
    tracker = Tracker(engine, store, metrics, 0.25, config.retention_days * 86400)

    def resend() -> int:
        held = store.held()
        for task in held:
            service.send(task)
        return len(held)

    if not redelivers(broker):
        n = resend()  # tasks a local worker held when the service last stopped
        if n:
            log.warning("%d task(s) held by a worker when the service stopped sent again", n)
    worker = None
    if config.workers:
        argv = ["--debug"] if verbose else []
        argv += ["worker", "--broker", broker, "--result-backend", backend,
                 "--concurrency", str(config.workers),
                 "--visibility-timeout", str(config.visibility_timeout)]  # fmt: skip
        worker = LocalWorker(argv, None if redelivers(broker) else resend)
    tracker.start()
    http = make_http(service, metrics, config.auth_header, config.sync_timeout)
    print(
        f"rconv serve: listening on http://{config.listen} (broker {_safe(broker)}, "
        f"{config.workers} local worker process(es))",
        file=sys.stderr,
        flush=True,
    )
    try:
        server = uvicorn.Server(uvicorn.Config(http, log_level="warning", access_log=False))
        server.run(sockets=[sock])
    finally:
        if worker is not None:
            worker.stop()  # its running tasks finish first (warm shutdown) …
        tracker.stop()
        tracker.sync()  # … and are recorded as such
        client.close()
        store.close()


def _safe(url: str) -> str:
    """A broker URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest


def worker(
    broker: str,
    result_backend: str | None,
    concurrency: int,
    visibility_timeout: float,
    verbose: bool = False,
) -> None:
    _logging(verbose)
    backend = result_backend or result_backend_for(broker)
    _wal(broker, backend)
    app = make_app(broker, backend, visibility_timeout)
    # Celery warns about root, the usual user in a container; its messages here are JSON only
    warnings.filterwarnings("ignore", message="You're running the worker with superuser")
    app.worker_main(
        [
            *([] if verbose else ["--quiet"]),
            "worker",
            f"--concurrency={concurrency}",
            "--pool=prefork",
            f"--queues={QUEUE}",
            f"--hostname=rconv{os.getpid()}@%h",
            f"--loglevel={'INFO' if verbose else 'WARNING'}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )
