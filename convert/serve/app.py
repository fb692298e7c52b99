"""The HTTP API (Starlette, served by uvicorn): acceld's routes plus the registry's.

- ``POST /api/v1/conversions[?sync=true]``: ``{"source": REF}`` or a Harbor webhook
  (``PUSH_ARTIFACT``). 202 with the tasks (existing ones marked ``duplicate``) and the
  skipped images; with ``sync=true``, 200 once every task succeeded, 500 when one failed.
- ``POST /api/v1/notifications``: a distribution notification envelope; always 200 for a
  well-formed envelope, since the registry retries anything else forever.
- ``GET /api/v1/conversions``, ``GET /api/v1/conversions/{id}``: tasks with state, error,
  timings. ``GET /api/v1/health``: the index and the broker answer. ``GET /metrics``.

With an auth header configured every call must carry ``Authorization: <value>`` (compared in
constant time) or gets 401 and nothing is done. Errors are acceld's shape:
``{"code": "ERR_…", "message": one line}``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from convert.serve.engine import queue_depth
from convert.serve.metrics import CONTENT_TYPE, Metrics
from convert.serve.payload import PayloadError, Pushed, conversion_request, notification_envelope
from convert.serve.service import Outcome, Service
from convert.serve.store import FAILED, SUCCEEDED

Endpoint = Callable[[Request], Awaitable[Response]]
MAX_BODY = 1 << 20  # webhook bodies are a few KiB: a registry batches a few events at most


def error(status: int, code: str, message: str, **extra: object) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, **extra}, status_code=status)


def make_app(
    service: Service, metrics: Metrics, auth_header: str | None, sync_timeout: float
) -> Starlette:
    def guarded(name: str, endpoint: Endpoint) -> Endpoint:
        async def run(request: Request) -> Response:
            if auth_header is not None:
                given = request.headers.get("authorization", "")
                if not hmac.compare_digest(given.encode(), auth_header.encode()):
                    metrics.requests.labels(name, "unauthorized").inc()
                    return error(401, "ERR_UNAUTHORIZED", "missing or wrong Authorization header")
            response = await endpoint(request)
            metrics.requests.labels(name, str(response.status_code)).inc()
            return response

        return run

    async def accept(
        request: Request, parse: Callable[[object], list[Pushed]]
    ) -> Response | Outcome:
        """The request's images submitted, or the 400 answer to a body that is not valid."""
        body = bytearray()
        async for piece in request.stream():
            body += piece
            if len(body) > MAX_BODY:
                return error(413, "ERR_ILLEGAL_PARAMETER", f"the body exceeds {MAX_BODY} bytes")
        try:
            pushed = parse(json.loads(body))
        except json.JSONDecodeError as exc:
            return error(400, "ERR_ILLEGAL_PARAMETER", f"the body is not JSON: {exc}")
        except PayloadError as exc:
            return error(400, "ERR_ILLEGAL_PARAMETER", str(exc))
        return await run_in_threadpool(service.submit, pushed)

    async def create(request: Request) -> Response:
        outcome = await accept(request, conversion_request)
        if isinstance(outcome, Response):
            return outcome
        if outcome.errors and not outcome.tasks:
            return error(422, "ERR_SOURCE", "; ".join(outcome.errors), **outcome.to_json())
        if request.query_params.get("sync", "").lower() not in ("1", "true"):
            return JSONResponse(outcome.to_json(), status_code=202)
        duplicate = {t["id"]: t["duplicate"] for t in outcome.tasks}
        waited = await run_in_threadpool(service.wait, list(duplicate), sync_timeout)
        outcome.tasks = [{**t, "duplicate": duplicate[t["id"]]} for t in waited]
        failed = [t for t in outcome.tasks if t["state"] == FAILED]
        if failed:
            message = "; ".join(f"{t['source_tag']}: {t['error']}" for t in failed)
            return error(500, "ERR_CONVERT_FAILED", message, **outcome.to_json())
        done = all(t["state"] == SUCCEEDED for t in outcome.tasks)
        return JSONResponse(outcome.to_json(), status_code=200 if done else 202)

    async def notify(request: Request) -> Response:
        outcome = await accept(request, notification_envelope)
        return outcome if isinstance(outcome, Response) else JSONResponse(outcome.to_json())

    async def list_tasks(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(service.store.recent))

    async def get_task(request: Request) -> Response:
        task = await run_in_threadpool(service.store.get, request.path_params["task_id"])
        if task is None:
            return error(404, "ERR_NOT_FOUND", f"no task {request.path_params['task_id']}")
        return JSONResponse(task)

    async def health(request: Request) -> Response:
        depth = await run_in_threadpool(queue_depth, service.engine)
        if depth is None:
            return error(500, "ERR_UNHEALTHY", "the broker does not answer")
        counts = await run_in_threadpool(service.store.counts)
        return JSONResponse({"status": "ok", "queue_depth": depth, "tasks": counts})

    async def prometheus(request: Request) -> Response:
        return Response(await run_in_threadpool(metrics.render), media_type=CONTENT_TYPE)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        return error(
            status, "ERR_INVALID_ENDPOINT", f"{request.method} {request.url.path}: no such endpoint"
        )

    routes = [
        Route("/api/v1/conversions", guarded("conversions", create), methods=["POST"]),
        Route("/api/v1/conversions", guarded("list", list_tasks), methods=["GET"]),
        Route("/api/v1/conversions/{task_id}", guarded("task", get_task), methods=["GET"]),
        Route("/api/v1/notifications", guarded("notifications", notify), methods=["POST"]),
        Route("/api/v1/health", guarded("health", health), methods=["GET"]),
        Route("/metrics", guarded("metrics", prometheus), methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
