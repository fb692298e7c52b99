"""The body of a conversion task, as a worker runs it: one call of ``convert.api.convert``.

Before converting, two cheap reads keep redeliveries idempotent: a target whose manifest
already records this source digest (``nydus-source-digest``) was converted by an earlier
delivery that died before acknowledging, so it is not converted again; a source that is
already a Nydus image is skipped (acceld's rule). Errors are one line. Failures that may pass
(a registry answering 5xx, a network error) are retried by Celery with exponential backoff,
at most ``retry["max"]`` times; any other failure is final at once, since converting the same
bytes again fails the same way. A task whose worker died under it three times (a source that
exhausts memory) is failed instead of delivered forever. The conversion itself does not know
it runs here.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from typing import Any

from celery import Task
from celery.exceptions import Ignore

from convert import api
from convert.image import is_nydus
from convert.nydus import A_SOURCE_DIGEST
from convert.serve.task import ConversionTask
from registry.client import RegistryClient
from registry.digest import digest_of
from registry.errors import RegistryError
from registry.medium import open_image
from registry.model import Image
from registry.reference import parse_reference

log = logging.getLogger("rconv.worker")
FAILED = "FAILED"  # a custom state: final, with our meta (Celery's FAILURE wants an exception)
USER_ERRORS = (api.ConvertError, api.RafsError, api.RegistryError, OSError)
MAX_LOST = 3  # deliveries whose worker died mid-task before the task is failed


def execute(celery_task: Task, data: dict, retry: dict, errors: list[str]) -> dict[str, Any]:
    task = ConversionTask.from_json(data)
    attempt = celery_task.request.retries + 1
    started = time.time()
    where = {"worker": socket.gethostname(), "pid": os.getpid(), "attempt": attempt}
    lost = _lost_before(celery_task)
    if lost >= MAX_LOST:  # a task that kills its worker (out of memory) must not loop forever
        message = f"the worker converting it died {lost} times (killed, or out of memory?)"
        meta = {**where, "started": started, "finished": time.time(), "error": message}
        celery_task.update_state(state=FAILED, meta={**meta, "errors": [*errors, message]})
        raise Ignore()
    celery_task.update_state(state="STARTED", meta={**where, "started": started, "lost": lost})
    log.info(
        "task %s: converting %s -> %s (attempt %d)", task.id, task.source, task.target, attempt
    )
    try:
        result = _convert(task, task.registry_options())
    except Exception as exc:  # every failure is recorded; only user errors are expected
        message = str(exc) or exc.__class__.__name__
        if not isinstance(exc, USER_ERRORS):
            log.exception("task %s: internal error", task.id)
            message = f"internal error: {exc.__class__.__name__}: {message}"
        errors = [*errors, message]
        log.warning("task %s: attempt %d failed: %s", task.id, attempt, message)
        if _temporary(exc) and attempt <= int(retry.get("max", 0)):
            delay = min(float(retry.get("backoff", 2.0)) * 2 ** (attempt - 1), 300.0)
            raise celery_task.retry(
                args=(data, retry),
                kwargs={"errors": errors},
                countdown=delay,
                exc=RuntimeError(message),
            ) from None
        meta = {**where, "started": started, "finished": time.time(), "error": message}
        celery_task.update_state(state=FAILED, meta={**meta, "errors": errors})
        raise Ignore() from None
    log.info("task %s: %s", task.id, result.get("skipped") or f"pushed {result['target_digest']}")
    return {**where, **result, "started": started, "finished": time.time(), "errors": errors}


def _lost_before(celery_task: Task) -> int:
    """How many deliveries of this task started and never finished (their worker died)."""
    meta = celery_task.backend.get_task_meta(celery_task.request.id)
    info = meta.get("result")
    if meta.get("status") != "STARTED" or not isinstance(info, dict):
        return 0
    return int(info.get("lost", 0)) + 1


def _temporary(exc: BaseException) -> bool:
    if isinstance(exc, RegistryError):
        return exc.temporary
    return isinstance(exc, ConnectionError | TimeoutError)


def _convert(task: ConversionTask, registry: api.RegistryOptions) -> dict[str, Any]:
    with RegistryClient(registry) as client:
        done = _converted_digest(task, client)
        if done is not None:
            return {
                "target_digest": done,
                "skipped": "converted before (target records the source)",
            }
        if _is_nydus(task, client):
            return {"target_digest": None, "skipped": "already a Nydus image"}
    report = api.convert(task.convert_options(), registry=registry)
    layers = [layer for p in report.platforms for layer in p.layers]
    return {
        "target_digest": report.target_digest,
        "skipped": None,
        "seconds": report.seconds,
        "bytes_in": sum(layer.bytes_in for layer in layers),
        "bytes_stored": sum(layer.blob_size for layer in layers),
        "cache_hits": sum(p.cache.get("hits", 0) for p in report.platforms),
        "cache_misses": sum(p.cache.get("misses", 0) for p in report.platforms),
    }


def _converted_digest(task: ConversionTask, client: RegistryClient) -> str | None:
    """The target's digest when it already is the conversion of this source."""
    try:
        raw, _ = client.get_manifest(parse_reference(task.target))
    except RegistryError:
        return None  # absent (or unreadable: converting will tell)
    annotations = json.loads(raw).get("annotations") or {}
    if annotations.get(A_SOURCE_DIGEST) != task.source_digest:
        return None
    return digest_of(raw)


def _is_nydus(task: ConversionTask, client: RegistryClient) -> bool:
    obj = open_image(task.source, client=client)
    children = [obj] if isinstance(obj, Image) else list(obj.children())
    return bool(children) and all(isinstance(c, Image) and is_nydus(c) for c in children)
