"""The task engine: one Celery app, configured the same way in the service and the workers.

Brokers: Redis (``redis://HOST:PORT/DB``) for several machines, or the embedded default,
SQLite through kombu's SQLAlchemy transport (``sqla+sqlite:///STATE/broker.db``) with the
SQLAlchemy result backend beside it, so that ``rconv serve`` needs no server. The result
backend is derived from the broker (the same Redis; ``results.db`` next to the SQLite broker)
unless given.

Delivery (Celery's own guarantees, chosen here): tasks are acknowledged late, after the
conversion has pushed (``task_acks_late``); a pool process killed mid-task gets its message
requeued (``task_reject_on_worker_lost``); each pool process reserves one task at a time
(``worker_prefetch_multiplier=1``); with Redis, a message a whole worker took and never
acknowledged (the machine died) is delivered again after ``visibility_timeout`` (the SQL
transport has none: see ``local``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Transport as SqlTransport

from convert.errors import ConvertError

QUEUE = "rconv"
TASK_NAME = "rconv.convert"
DEFAULT_VISIBILITY_TIMEOUT = 3600.0


class BrokerError(ConvertError):
    """A broker or result backend URL that cannot be used."""


class SqliteTransport(SqlTransport):
    """kombu's SQLAlchemy transport, polling five times a second instead of once. It hands
    every transport option to ``create_engine``, so ``polling_interval`` cannot be one."""

    polling_interval = 0.2


TRANSPORT_ALIASES.setdefault("rconvsql", f"{__name__}:SqliteTransport")
# kombu's SQL transport declares its relation with ``noload``, which SQLAlchemy 2.1 deprecates
warnings.filterwarnings("ignore", message=r"The ``noload`` loader strategy is deprecated")
_SQL = "sqla+sqlite:///"


def embedded_broker(state_dir: Path) -> str:
    return f"sqla+sqlite:///{state_dir.resolve() / 'broker.db'}"


def result_backend_for(broker: str) -> str:
    """The result store that goes with ``broker``."""
    if broker.startswith(("redis://", "rediss://")):
        return broker
    if broker.startswith(_SQL):
        path = Path(broker.removeprefix(_SQL))
        return f"db+sqlite:///{path.with_name('results.db')}"
    raise BrokerError(
        f"broker {broker}: give a redis:// or sqla+sqlite:/// URL (or a result backend)"
    )


def make_app(
    broker: str,
    result_backend: str | None = None,
    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT,
) -> Celery:
    backend = result_backend or result_backend_for(broker)
    transport: dict[str, Any] = {}
    if broker.startswith(_SQL):
        broker = "rconvsql+" + broker.removeprefix("sqla+")
    else:
        transport = {
            "visibility_timeout": visibility_timeout,
            # how often a Redis consumer looks for messages past their visibility timeout
            "unacked_restore_interval": max(1, min(10, int(visibility_timeout // 4))),
            "unacked_restore_throttle": 1,
        }
    app = Celery("rconv", broker=broker, backend=backend)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue=QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # how long a pool process's death waits for a result it may have sent first (10 s by
        # default): a redelivered task that already pushed finds its target and stops early
        worker_lost_wait=2.0,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        # the service copies a result within a second; Redis drops it a day later (the SQL
        # backend keeps it: nothing runs Celery's periodic cleanup)
        result_expires=86400,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
    )

    app.task(name=TASK_NAME, bind=True)(_convert)
    return app


def _convert(self, task: dict, retry: dict, errors: list | None = None) -> dict:
    """The task (one callable whatever the app, so Celery sees one task of that name)."""
    from convert.serve.worker import execute

    return execute(self, task, retry, errors or [])


def redelivers(broker: str) -> bool:
    """Whether the broker delivers again a message whose consumer died without acknowledging
    it (Redis's visibility timeout). kombu's SQL transport does not."""
    return broker.startswith(("redis://", "rediss://"))


def queue_depth(app: Celery) -> int | None:
    """Messages waiting in the queue (None when the broker cannot say now)."""
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1)
            try:
                ok = conn.default_channel.queue_declare(QUEUE, passive=True)
            except conn.channel_errors:  # Redis: an empty queue does not exist
                return 0
            return int(ok.message_count)
    except Exception:  # a broker that is down makes the gauge absent, not the scrape fail
        return None
