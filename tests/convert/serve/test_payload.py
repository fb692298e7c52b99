"""Webhook bodies (acceld, Harbor, distribution notifications) and the rules applied to them."""

from __future__ import annotations

import pytest

from convert.serve.payload import PayloadError, Pushed, conversion_request, notification_envelope
from convert.serve.rules import Rules
from convert.serve.task import ConversionTask, TaskOptions, idempotency_key
from registry.reference import parse_reference

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def harbor(*resources: dict, kind: str = "PUSH_ARTIFACT") -> dict:
    # the shape of Harbor's "Default" webhook payload for an artifact push
    return {
        "type": kind,
        "occur_at": 1700000000,
        "operator": "admin",
        "event_data": {
            "resources": list(resources),
            "repository": {"name": "app", "namespace": "library", "repo_full_name": "library/app"},
        },
    }


def event(action: str, media_type: str, tag: str | None = None, digest: str = D1) -> dict:
    target = {"mediaType": media_type, "digest": digest, "size": 500, "repository": "team/app",
              "url": f"http://reg.example:5000/v2/team/app/manifests/{digest}"}  # fmt: skip
    if tag:
        target["tag"] = tag
    return {"id": "e1", "timestamp": "2026-12-05T10:00:00Z", "action": action, "target": target,
            "request": {"host": "reg.example:5000", "method": "PUT"}}  # fmt: skip


def test_acceld_source():
    (p,) = conversion_request({"source": "reg.example/app:1"})
    assert str(p.ref) == "reg.example/app:1" and p.digest is None
    (p,) = conversion_request({"source": f"reg.example/app@{D1}"})
    assert p.digest == D1


def test_harbor_push_artifact():
    pushed = conversion_request(
        harbor(
            {"resource_url": "harbor.example/library/app:v1", "tag": "v1", "digest": D1},
            {"resource_url": f"harbor.example/library/app@{D2}", "tag": "v2", "digest": D2},
        )
    )
    assert [(str(p.ref), p.digest) for p in pushed] == [
        ("harbor.example/library/app:v1", D1),
        (f"harbor.example/library/app:v2@{D2}", D2),
    ]


def test_harbor_other_events_ignored():
    assert conversion_request(harbor({"resource_url": "h/x:1"}, kind="PULL_ARTIFACT")) == []


@pytest.mark.parametrize(
    "body, message",
    [
        ([], "JSON object"),
        ({"hello": 1}, "Harbor webhook"),
        ({"type": "PUSH_ARTIFACT", "event_data": {}}, "resources is not a list"),
        ({"source": "Bad Ref"}, "source"),
        (harbor({"resource_url": ""}), "resources[0].resource_url"),
    ],
)
def test_bad_requests(body, message):
    with pytest.raises(PayloadError, match=message.replace("[", r"\[").replace("]", r"\]")):
        conversion_request(body)


def test_envelope_keeps_tagged_manifest_pushes_only():
    manifest = "application/vnd.oci.image.manifest.v1+json"
    index = "application/vnd.oci.image.index.v1+json"
    body = {
        "events": [
            event("push", "application/octet-stream"),  # a blob
            event("push", manifest),  # an index child, pushed by digest
            event("pull", manifest, tag="1"),
            event("delete", manifest, tag="1"),
            event("push", manifest, tag="1"),
            event("push", index, tag="multi", digest=D2),
        ]
    }
    pushed = notification_envelope(body)
    assert [(str(p.ref), p.digest) for p in pushed] == [
        ("reg.example:5000/team/app:1", D1),
        ("reg.example:5000/team/app:multi", D2),
    ]
    assert pushed[0].pushed_at == "2026-12-05T10:00:00Z"


def test_envelope_host_from_request_when_no_url():
    e = event("push", "application/vnd.docker.distribution.manifest.v2+json", tag="2")
    del e["target"]["url"]
    (p,) = notification_envelope({"events": [e]})
    assert str(p.ref) == "reg.example:5000/team/app:2"
    with pytest.raises(PayloadError, match="events"):
        notification_envelope({"nothing": []})


def test_rules_skip_and_target():
    rules = Rules(build_cache_tag="nydus-cache")
    assert rules.skip_reason(Pushed(parse_reference("r.example/a:1-nydus"))) is not None
    assert rules.skip_reason(Pushed(parse_reference("r.example/a:nydus-cache"))) is not None
    assert rules.skip_reason(Pushed(parse_reference(f"r.example/a@{D1}", default_tag=False)))
    pushed = Pushed(parse_reference("r.example/a:1"))
    assert rules.skip_reason(pushed) is None
    task = rules.task(pushed, D1)
    assert task.source == f"r.example/a@{D1}" and task.target == "r.example/a:1-nydus"
    assert task.options.build_cache == "r.example/a:nydus-cache"
    assert ConversionTask.from_json(task.to_json()) == task


def test_idempotency_key():
    key = idempotency_key(D1, "r/a:1-nydus", TaskOptions())
    assert key == idempotency_key(D1, "r/a:1-nydus", TaskOptions())
    assert key != idempotency_key(D2, "r/a:1-nydus", TaskOptions())
    assert key != idempotency_key(D1, "r/a:2-nydus", TaskOptions())
    assert key != idempotency_key(D1, "r/a:1-nydus", TaskOptions(compressor="lz4_block"))
    a = Rules().task(Pushed(parse_reference("r.example/a:1")), D1)
    b = Rules().task(Pushed(parse_reference("r.example/a:1")), D1)
    assert a.id != b.id and a.key == b.key
