"""The service's index of the tasks it accepted (SQLite in the state directory).

Celery owns the queue and each task's state while it runs; this index is what the service
needs on top: listing tasks (``GET /api/v1/conversions``) and refusing a second task for the
same idempotency key. A key whose last task failed may be queued again (the same image pushed
again is a new request); any other state returns the existing task. ``tracker`` copies the
engine's states in; ``add`` is atomic, so two deliveries of one webhook at once give one task.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from convert.serve.task import ConversionTask

STATES = ("queued", "running", "retrying", "succeeded", "failed")
QUEUED, RUNNING, RETRYING, SUCCEEDED, FAILED = STATES
FINAL = (SUCCEEDED, FAILED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, key TEXT NOT NULL, source TEXT NOT NULL, source_tag TEXT NOT NULL,
    source_digest TEXT NOT NULL, target TEXT NOT NULL, pushed_at TEXT, created REAL NOT NULL,
    state TEXT NOT NULL, started REAL, finished REAL, attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT, pid INTEGER, error TEXT, result TEXT, task TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_key ON tasks (key, created);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks (state);
"""
_FIELDS = ("state", "started", "finished", "attempts", "worker", "pid", "error", "result")


class TaskStore:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, task: ConversionTask, pushed_at: str | None = None) -> tuple[dict, bool]:
        """(the task for ``task.key``, True when it is ``task``, newly added)."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM tasks WHERE key = ? AND state != ? ORDER BY created DESC LIMIT 1",
                (task.key, FAILED),
            ).fetchone()
            if row is not None:
                return _public(row), False
            self._db.execute(
                "INSERT INTO tasks (id, key, source, source_tag, source_digest, target, pushed_at,"
                " created, state, task) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (task.id, task.key, task.source, task.source_tag, task.source_digest,
                 task.target, pushed_at, time.time(), QUEUED, json.dumps(task.to_json())),
            )  # fmt: skip
            return self._get(task.id), True  # type: ignore[return-value]

    def update(self, task_id: str, **fields: Any) -> None:
        if "result" in fields and fields["result"] is not None:
            fields["result"] = json.dumps(fields["result"])
        names = [name for name in fields if name in _FIELDS]
        with self._lock:
            self._db.execute(
                f"UPDATE tasks SET {', '.join(f'{n} = ?' for n in names)} WHERE id = ?",
                (*(fields[n] for n in names), task_id),
            )

    def get(self, task_id: str) -> dict | None:
        with self._lock:
            return self._get(task_id)

    def _get(self, task_id: str) -> dict | None:
        row = self._db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return _public(row) if row is not None else None

    def recent(self, limit: int = 1000) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM tasks ORDER BY created DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_public(row) for row in rows]

    def unfinished(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM tasks WHERE state NOT IN (?, ?)", FINAL
            ).fetchall()
        return [_public(row) for row in rows]

    def held(self) -> list[ConversionTask]:
        """Tasks a worker took and has not finished (running, or waiting to retry)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT task FROM tasks WHERE state IN (?, ?)", (RUNNING, RETRYING)
            ).fetchall()
        return [ConversionTask.from_json(json.loads(row[0])) for row in rows]

    def prune(self, finished_before: float) -> int:
        """Forget finished tasks older than that; how many were forgotten."""
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM tasks WHERE state IN (?, ?) AND finished < ?",
                (*FINAL, finished_before),
            )
            return cursor.rowcount

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").fetchall()
        counts = dict.fromkeys(STATES, 0)
        counts.update({state: n for state, n in rows})
        return counts


def _public(row: sqlite3.Row) -> dict[str, Any]:
    """A task as the API shows it: what, where to, state, error, timings."""
    task = dict(row)
    del task["task"]  # what the worker reads; the API shows its fields
    task["result"] = json.loads(task["result"]) if task["result"] else None
    created, started, finished = task["created"], task["started"], task["finished"]
    task["timings"] = {
        "queued_seconds": _span(created, started),
        "run_seconds": _span(started, finished),
        "total_seconds": _span(created, finished),
    }
    return task


def _span(start: float | None, end: float | None) -> float | None:
    return round(end - start, 3) if start is not None and end is not None else None
