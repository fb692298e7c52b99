"""What the HTTP side does with a request: rules, idempotency, enqueueing, waiting.

Each pushed image is skipped by the rules, or becomes a task whose idempotency key (source
manifest digest + target + options) is looked up in the index first: a registry delivering
the same notification twice, or Harbor and the registry both calling, gives one task. The
digest comes from the payload (notifications and Harbor carry it) or from a HEAD on the
registry. A new task is recorded, then sent to the engine; the HTTP answer never waits for a
conversion unless asked (``?sync=true``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from celery import Celery

from convert.serve import store as st
from convert.serve.engine import TASK_NAME
from convert.serve.payload import Pushed
from convert.serve.rules import Rules, Skipped
from convert.serve.task import ConversionTask
from registry.errors import RegistryError
from registry.reference import Reference


@dataclass
class Outcome:
    tasks: list[dict] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "tasks": self.tasks,
            "skipped": [s.to_json() for s in self.skipped],
            "errors": self.errors,
        }


@dataclass
class Service:
    rules: Rules
    store: st.TaskStore
    engine: Celery
    resolve: Callable[[Reference], str]  # the manifest digest a reference names now
    retry: dict[str, float]
    poll: float = 0.2

    def submit(self, pushed: list[Pushed]) -> Outcome:
        out = Outcome()
        for item in pushed:
            reason = self.rules.skip_reason(item)
            if reason is not None:
                out.skipped.append(Skipped(str(item.ref), reason))
                continue
            try:
                digest = item.digest or self.resolve(item.ref)
                task = self.rules.task(item, digest)
            except RegistryError as exc:
                out.errors.append(f"{item.ref}: {exc}")
                continue
            record, new = self.store.add(task, item.pushed_at)
            if new:
                record = self._enqueue(task, record)
            out.tasks.append({**record, "duplicate": not new})
        return out

    def _enqueue(self, task: ConversionTask, record: dict) -> dict:
        try:
            self.send(task)
        except Exception as exc:  # the broker is down: the task is failed, not lost silently
            self.store.update(
                task.id, state=st.FAILED, error=f"broker: {exc}", finished=time.time()
            )
        return self.store.get(task.id) or record

    def send(self, task: ConversionTask) -> None:
        """Put ``task`` on the queue (again, for a task whose message was lost)."""
        self.engine.send_task(TASK_NAME, args=(task.to_json(), self.retry), task_id=task.id)

    def wait(self, task_ids: list[str], timeout: float) -> list[dict]:
        """The tasks once all are finished, or as they are when ``timeout`` runs out."""
        deadline = time.monotonic() + timeout
        while True:
            tasks = [t for t in map(self.store.get, task_ids) if t is not None]
            if all(t["state"] in st.FINAL for t in tasks) or time.monotonic() > deadline:
                return tasks
            time.sleep(self.poll)
