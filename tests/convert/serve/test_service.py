"""The HTTP side in process, on a real embedded broker (SQLite) with no worker: auth,
idempotency, what gets queued; the settings file; the engine states the tracker reads."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

with warnings.catch_warnings():  # Starlette 1.x would rather have httpx2; httpx is what we have
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from convert.serve.app import make_app as make_http
from convert.serve.config import ConfigError, load_config
from convert.serve.engine import embedded_broker, make_app, queue_depth
from convert.serve.metrics import Metrics
from convert.serve.rules import Rules
from convert.serve.service import Service
from convert.serve.store import TaskStore
from convert.serve.tracker import fields_from

# kombu's SQL transport uses a loader strategy SQLAlchemy 2.1 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy")
D1 = "sha256:" + "1" * 64
AUTH = "Bearer s3cret"


@pytest.fixture
def api(tmp_path: Path):
    engine = make_app(embedded_broker(tmp_path))
    store = TaskStore(tmp_path / "tasks.db")
    metrics = Metrics(store.counts, lambda: queue_depth(engine))

    def resolve(ref):
        raise AssertionError(f"{ref}: the payloads here carry their digest")

    service = Service(Rules(), store, engine, resolve, {"max": 0, "backoff": 1})
    with TestClient(make_http(service, metrics, AUTH, sync_timeout=1)) as client:
        client.engine, client.store = engine, store  # type: ignore[attr-defined]
        yield client
    store.close()


def envelope(tag: str, digest: str = D1) -> dict:
    media_type = "application/vnd.oci.image.manifest.v1+json"
    target = {"mediaType": media_type, "digest": digest, "repository": "team/app", "tag": tag,
              "url": "http://r.example:5000/v2/x"}  # fmt: skip
    return {"events": [{"action": "push", "target": target}]}


@pytest.mark.parametrize("header", [None, "Bearer wrong", "bearer s3cret"])
def test_unauthenticated_calls_do_nothing(api, header):
    headers = {"Authorization": header} if header else {}
    for path, body in (("/api/v1/notifications", envelope("1")),
                       ("/api/v1/conversions", {"source": f"r.example/a:1@{D1}"})):  # fmt: skip
        r = api.post(path, json=body, headers=headers)
        assert r.status_code == 401 and r.json()["code"] == "ERR_UNAUTHORIZED"
    for path in ("/api/v1/conversions", "/api/v1/health", "/metrics"):
        assert api.get(path, headers=headers).status_code == 401
    assert api.store.recent() == [] and queue_depth(api.engine) == 0


def test_duplicate_notification_queues_once(api):
    h = {"Authorization": AUTH}
    first = api.post("/api/v1/notifications", json=envelope("1"), headers=h).json()
    again = api.post("/api/v1/notifications", json=envelope("1"), headers=h).json()
    (a,), (b,) = first["tasks"], again["tasks"]
    assert a["id"] == b["id"] and not a["duplicate"] and b["duplicate"]
    assert a["target"] == "r.example:5000/team/app:1-nydus" and a["state"] == "queued"
    assert queue_depth(api.engine) == 1
    other = api.post("/api/v1/notifications", json=envelope("2"), headers=h).json()
    assert not other["tasks"][0]["duplicate"] and queue_depth(api.engine) == 2
    own = api.post("/api/v1/notifications", json=envelope("1-nydus"), headers=h).json()
    assert own["tasks"] == [] and "already converted" in own["skipped"][0]["reason"]
    listed = api.get("/api/v1/conversions", headers=h).json()
    assert {t["id"] for t in listed} == {a["id"], other["tasks"][0]["id"]}
    assert api.get(f"/api/v1/conversions/{a['id']}", headers=h).json()["source_digest"] == D1
    assert api.get("/api/v1/conversions/nope", headers=h).status_code == 404
    health = api.get("/api/v1/health", headers=h).json()
    assert health["queue_depth"] == 2 and health["tasks"]["queued"] == 2
    text = api.get("/metrics", headers=h).text
    assert 'rconv_tasks{state="queued"} 2.0' in text and "rconv_queue_depth 2.0" in text


def test_bad_bodies(api):
    h = {"Authorization": AUTH}
    r = api.post("/api/v1/conversions", content=b"{not json", headers=h)
    assert r.status_code == 400 and "not JSON" in r.json()["message"]
    r = api.post("/api/v1/notifications", json={"events": "x"}, headers=h)
    assert r.status_code == 400
    assert api.get("/api/v1/nothing", headers=h).json()["code"] == "ERR_INVALID_ENDPOINT"


def test_sync_call_times_out_while_queued(api):
    r = api.post(
        "/api/v1/conversions?sync=true", json={"source": f"r.example/a:1@{D1}"},
        headers={"Authorization": AUTH},
    )  # fmt: skip
    assert r.status_code == 202 and r.json()["tasks"][0]["state"] == "queued"


def test_engine_states():
    assert fields_from({"status": "PENDING", "result": None}) is None
    running = fields_from({"status": "STARTED", "result": {"pid": 7, "attempt": 2, "started": 1.0}})
    assert running == {"state": "running", "pid": 7, "attempts": 2, "started": 1.0}
    failed = fields_from({"status": "FAILED", "result": {"error": "bad layer", "finished": 2.0}})
    assert failed is not None and failed["state"] == "failed" and failed["error"] == "bad layer"
    retry = fields_from({"status": "RETRY", "result": RuntimeError("503 from registry")})
    assert retry == {"state": "retrying", "error": "503 from registry"}


def test_config_file_and_flags(tmp_path: Path):
    path = tmp_path / "serve.toml"
    path.write_text(
        'listen = "0.0.0.0:9000"\nworkers = 0\n[rules]\ntarget_suffix = "-n"\n'
        'platforms = ["linux/arm64"]\n[convert]\nfs_version = 5\nchunk_size = "0x10000"\n'
    )
    config = load_config(path, {"workers": 3, "listen": None})
    assert config.host_port == ("0.0.0.0", 9000) and config.workers == 3
    rules = config.rules()
    assert rules.target_suffix == "-n" and rules.options.fs_version == 5
    assert rules.options.chunk_size == 0x10000 and rules.options.platforms == ("linux/arm64",)
    path.write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="unknown setting.*colour"):
        load_config(path, {})
    with pytest.raises(ConfigError, match="conversion options"):
        load_config(None, {"compressor": "gzip9"})
    with pytest.raises(ConfigError, match="HOST:PORT"):
        load_config(None, {"listen": "nowhere"})


def test_index_held_tasks_and_retention(tmp_path: Path):
    from convert.serve.payload import Pushed
    from registry.reference import parse_reference

    store = TaskStore(tmp_path / "tasks.db")
    a, b = (Rules().task(Pushed(parse_reference(f"r.example/a:{i}")), D1) for i in (1, 2))
    store.add(a)
    store.add(b)
    store.update(a.id, state="running", started=1.0)
    store.update(b.id, state="succeeded", finished=10.0)
    assert store.held() == [a]  # what a dead worker's broker would not deliver again
    assert store.prune(finished_before=5.0) == 0 and store.prune(finished_before=11.0) == 1
    assert [t["id"] for t in store.recent()] == [a.id]
    store.close()


def test_task_whose_worker_keeps_dying_is_failed(tmp_path: Path):
    """A delivery that starts while the last one never finished counts a lost worker; the
    third such start fails the task instead of converting (and dying) again."""
    from convert.serve.engine import TASK_NAME
    from convert.serve.payload import Pushed
    from registry.reference import parse_reference

    engine = make_app(embedded_broker(tmp_path))
    task = Rules().task(Pushed(parse_reference("127.0.0.1:9/a:1")), D1)
    engine.backend.store_result(task.id, {"pid": 1, "lost": 2}, "STARTED")
    engine.tasks[TASK_NAME].apply(args=(task.to_json(), {"max": 0}), task_id=task.id)
    meta = engine.backend.get_task_meta(task.id)
    assert meta["status"] == "FAILED"
    assert meta["result"]["error"].startswith("the worker converting it died 3 times")
