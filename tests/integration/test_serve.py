"""``rconv serve`` end to end, real processes only: Debian's ``docker-registry`` notifying the
service, the service, and its workers, on the embedded SQLite broker and on ``redis-server``
with two ``rconv worker`` processes (issue 14's "Done when" list).

The tests share one deployment per broker and run in file order; the worker kills come last.
"""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from convert import api
from convert.nydus import A_SOURCE_DIGEST
from registry.errors import RegistryError
from registry.medium import write_image
from registry.reference import parse_reference
from tests.faults.proxy import Fault, FaultProxy
from tests.integration.servekit import AUTH, Deployment, app_image, broken_image, deploy

BURST = 30


@pytest.fixture(scope="module", params=["embedded", "redis"])
def svc(request, tmp_path_factory) -> Deployment:
    workdir = tmp_path_factory.mktemp(f"serve-{request.param}")
    with deploy(
        workdir, request.param, workers=2, retry_backoff="0.5", visibility_timeout="6"
    ) as dep:
        yield dep


def push(svc: Deployment, image, name: str) -> str:
    with svc.registry.client() as client:
        return write_image(image, svc.registry.ref(name), client=client).digest


def target_manifest(svc: Deployment, name: str) -> dict | None:
    with svc.registry.client() as client:
        try:
            raw, _ = client.get_manifest(parse_reference(svc.registry.ref(name)))
        except RegistryError:
            return None
    return json.loads(raw)


def envelope(svc: Deployment, name: str, tag: str, digest: str) -> dict:
    target = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
              "repository": name, "tag": tag,
              "url": f"http://{svc.registry.host}/v2/{name}/manifests/{digest}"}  # fmt: skip
    return {"events": [{"id": "x", "action": "push", "target": target}]}


def test_pushed_image_is_converted(svc):
    digest = push(svc, app_image(1), "app:1")
    task = svc.wait_task(svc.registry.ref("app:1"), ("succeeded",))
    assert task["source_digest"] == digest and task["error"] is None
    assert task["timings"]["total_seconds"] > 0 and task["result"]["bytes_stored"] > 0
    nydus = target_manifest(svc, "app:1-nydus")
    assert nydus is not None and nydus["annotations"][A_SOURCE_DIGEST] == digest
    checked = api.check(
        svc.registry.ref("app:1-nydus"), source=svc.registry.ref("app:1"),
        registry=svc.registry.options(plain_http=True),
    )  # fmt: skip
    assert checked.ok, "\n".join(checked.render())
    # Harbor's webhook for the same push, answered when done: the same task
    harbor = {"type": "PUSH_ARTIFACT", "event_data": {"resources": [
        {"resource_url": svc.registry.ref("app:1"), "tag": "1", "digest": digest}]}}  # fmt: skip
    r = svc.post("/api/v1/conversions?sync=true", harbor)
    assert r.status_code == 200, r.text
    (same,) = r.json()["tasks"]
    assert same["id"] == task["id"] and same["duplicate"]


def test_wrong_or_missing_auth_is_refused_and_queues_nothing(svc):
    before = svc.tasks()
    digest = "sha256:" + "5" * 64
    for auth in (None, "Bearer wrong", AUTH + "x"):
        calls = [("/api/v1/notifications", envelope(svc, "auth", "1", digest)),
                 ("/api/v1/conversions", {"source": svc.registry.ref("auth:1")})]  # fmt: skip
        for path, body in calls:
            r = svc.post(path, body, auth=auth)
            assert r.status_code == 401 and r.json()["code"] == "ERR_UNAUTHORIZED"
        assert svc.get("/api/v1/conversions", auth=auth).status_code == 401
    assert svc.tasks() == before
    assert svc.get("/api/v1/health").json()["queue_depth"] == 0


def test_duplicate_notification_converts_once(svc):
    digest = push(svc, app_image(2), "dup:1")
    first = svc.wait_task(svc.registry.ref("dup:1"), ("succeeded",))
    body = envelope(svc, "dup", "1", digest)
    for _ in range(2):  # the registry delivering the same event again
        r = svc.post("/api/v1/notifications", body)
        assert r.status_code == 200, r.text
        (again,) = r.json()["tasks"]
        assert again["id"] == first["id"] and again["duplicate"]
    time.sleep(0.5)
    (only,) = svc.tasks_for(svc.registry.ref("dup:1"))
    assert only["result"]["skipped"] is None  # converted, and once


def test_unconvertible_source_fails_with_its_error(svc):
    push(svc, broken_image(3), "broken:1")
    task = svc.wait_task(svc.registry.ref("broken:1"), ("failed",))
    error = task["error"]
    assert error and "\n" not in error and "Traceback" not in error, error
    assert "layer" in error, error
    assert task["attempts"] == 1  # bad bytes are not retried
    assert target_manifest(svc, "broken:1-nydus") is None
    assert svc.get("/api/v1/health").status_code == 200
    push(svc, app_image(4), "after-broken:1")
    svc.wait_task(svc.registry.ref("after-broken:1"), ("succeeded",))


def test_burst_of_pushes_all_converted_once(svc):
    names = [f"burst:{i}" for i in range(BURST)]
    with ThreadPoolExecutor(4) as pool:
        pushed = pool.map(lambda n: push(svc, app_image(100 + int(n[6:])), n), names)
        digests = dict(zip(names, pushed, strict=True))
    for name in names:
        svc.wait_task(svc.registry.ref(name), ("succeeded",), timeout=180)
    tasks = [t for t in svc.tasks() if t["source_tag"].split("/", 1)[1] in digests]
    assert len(tasks) == BURST and len({t["id"] for t in tasks}) == BURST
    for t in tasks:
        name = t["source_tag"].split("/", 1)[1]
        assert t["source_digest"] == digests[name]
        nydus = target_manifest(svc, f"{name}-nydus")
        assert nydus is not None and nydus["annotations"][A_SOURCE_DIGEST] == digests[name]
    metrics = svc.get("/metrics").text
    succeeded = [
        line for line in metrics.splitlines() if line.startswith('rconv_tasks{state="succeeded"}')
    ]
    assert succeeded and float(succeeded[0].split()[-1]) >= BURST


def proxied(svc: Deployment) -> FaultProxy:
    return FaultProxy(int(svc.registry.host.rsplit(":", 1)[1]))


def submit_by_digest(svc: Deployment, proxy: FaultProxy, name: str, seed: int) -> str:
    """Push an image by digest (a push the notifications leave alone) and ask, as Harbor
    would, for its conversion read through ``proxy`` under tag 1; returns its source tag."""
    image = app_image(seed)
    digest = push(svc, image, f"{name}@{image.digest}")
    resource = {"resource_url": f"{proxy.host}/{name}@{digest}", "tag": "1", "digest": digest}
    r = svc.post(
        "/api/v1/conversions", {"type": "PUSH_ARTIFACT", "event_data": {"resources": [resource]}}
    )
    assert r.status_code == 202, r.text
    return f"{proxy.host}/{name}:1"


def test_temporary_failure_is_retried_and_recorded(svc):
    with proxied(svc) as proxy:
        # the first attempt's source manifest reads (the client's own retries included) get 503
        proxy.add(Fault.http(503), "GET", r"^/v2/flaky/manifests/sha256:", nth=tuple(range(1, 7)))
        source = submit_by_digest(svc, proxy, "flaky", 8)
        done = svc.wait_task(source, ("succeeded",), timeout=60)
    assert done["attempts"] == 2, done
    (error,) = done["result"]["errors"]
    assert "503" in error and "\n" not in error, error


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def kill_mid_task(svc: Deployment, name: str, seed: int, kill) -> tuple[dict, dict]:
    """Start a conversion whose source blobs take 1 s each to read (through a proxy), call
    ``kill(pid of the pool process converting)`` while it runs, and wait for the task to
    succeed anyway; (the task when killed, the task done)."""
    with proxied(svc) as proxy:
        proxy.add(Fault.slow(1.0), "GET", r"^/v2/.+/blobs/sha256:", nth=None)
        source = submit_by_digest(svc, proxy, name, seed)
        running = svc.wait_task(source, ("running",), timeout=30)
        kill(running["pid"])
        assert target_manifest(svc, f"{name}:1-nydus") is None  # nothing partial under the tag
        done = svc.wait_task(source, ("succeeded",), timeout=90)
    assert done["id"] == running["id"] and len(svc.tasks_for(source)) == 1
    nydus = target_manifest(svc, f"{name}:1-nydus")
    assert nydus is not None and nydus["annotations"][A_SOURCE_DIGEST] == done["source_digest"]
    return running, done


def test_pool_process_killed_mid_task_is_requeued(svc):
    running, done = kill_mid_task(svc, "slow", 7, lambda pid: os.kill(pid, signal.SIGKILL))
    assert done["pid"] != running["pid"]


def test_whole_worker_killed_mid_task_is_still_converted(svc):
    """Embedded: the service starts its worker again and sends the task again (the SQL
    transport cannot redeliver). Redis: the worker's process group dies, as with its machine,
    and the other worker gets the message after the visibility timeout (6 s here)."""
    killed: list[int] = []

    def kill(pid: int) -> None:
        main = parent(pid)
        killed.extend((pid, main))
        if svc.broker == "embedded":
            os.kill(main, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
        else:
            os.killpg(main, signal.SIGKILL)

    running, done = kill_mid_task(svc, "slower", 9, kill)
    assert done["pid"] not in killed
    assert svc.get("/api/v1/health").status_code == 200
