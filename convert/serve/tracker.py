"""Follows the engine's view of each unfinished task into the service's index.

A thread reads every unfinished task's state from Celery's result backend a few times a
second and records it in ``store`` (workers write states there: ``STARTED`` with their host
and pid, ``RETRY`` with the error, ``SUCCESS`` with the result, our final ``FAILED`` with the
one-line error). A task seen finishing is counted once in the metrics. Finished tasks older
than the retention (7 days by default; acceld keeps them a day) leave the index.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import Celery

from convert.serve import store as st
from convert.serve.metrics import Metrics
from convert.serve.worker import FAILED

log = logging.getLogger("rconv.serve")


def fields_from(meta: dict[str, Any]) -> dict[str, Any] | None:
    """Store fields for a backend answer, or None when nothing is known yet (PENDING)."""
    status, info = meta.get("status"), meta.get("result")
    detail = info if isinstance(info, dict) else {}
    where = {k: detail[k] for k in ("worker", "pid", "started") if k in detail}
    if "attempt" in detail:
        where["attempts"] = detail["attempt"]
    if status == "STARTED":
        return {"state": st.RUNNING, **where}
    if status == "RETRY":
        return {"state": st.RETRYING, "error": str(info)}
    if status == "SUCCESS":
        return {"state": st.SUCCEEDED, **where, "finished": detail.get("finished"),
                "result": detail, "error": None}  # fmt: skip
    if status == FAILED:
        return {"state": st.FAILED, **where, "finished": detail.get("finished"),
                "error": detail.get("error")}  # fmt: skip
    if status in ("FAILURE", "REVOKED"):  # the engine's own verdict (not raised by our task)
        return {"state": st.FAILED, "error": str(info) or status}
    return None


class Tracker:
    """Also forgets finished tasks older than ``retention`` seconds, once a minute."""

    def __init__(
        self, app: Celery, store: st.TaskStore, metrics: Metrics, interval: float, retention: float
    ) -> None:
        self.app, self.store, self.metrics, self.interval = app, store, metrics, interval
        self.retention = retention
        self._pruned = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rconv-tracker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync()
            except Exception:  # a backend hiccup must not end the tracking
                log.exception("reading task states failed; trying again")

    def sync(self) -> None:
        now = time.time()
        if now - self._pruned > 60:
            self._pruned = now
            self.store.prune(now - self.retention)
        for task in self.store.unfinished():
            fields = fields_from(self.app.backend.get_task_meta(task["id"]))
            if fields is None:
                continue
            if fields["state"] in st.FINAL and not fields.get("finished"):
                fields["finished"] = now  # the engine's own verdicts carry no time of ours
            changed = {k: v for k, v in fields.items() if task.get(k) != v}
            if not changed:
                continue
            self.store.update(task["id"], **changed)
            if fields["state"] in st.FINAL:
                done = self.store.get(task["id"])
                if done is not None:
                    self.metrics.task_finished(done)
