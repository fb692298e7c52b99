"""Webhook bodies → the images they ask to convert (pure parsing, no I/O).

Three shapes are accepted:

- acceld's own request, ``{"source": "REF"}`` (one image);
- Harbor's webhook (goharbor/harbor ``notifier/model``, as acceld ports it): ``type`` must be
  ``PUSH_ARTIFACT``; each ``event_data.resources[]`` names an image by ``resource_url``
  (``host/project/repo:tag`` or ``…@sha256:…``) and may carry its ``digest`` and ``tag``;
  other event types are ignored, as acceld does;
- the CNCF distribution registry's notification envelope
  (``application/vnd.docker.distribution.events.v1+json``, ``{"events": [...]}``): a
  ``push`` of a manifest or index that carries a ``tag``; blob events, pulls, deletes, mounts
  and pushes by digest alone (the children of an index) are ignored.

Each request becomes a ``Pushed`` (reference with tag, and the digest when the payload says
it). Malformed bodies raise ``PayloadError`` with a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from registry import mediatype as mt
from registry.errors import RegistryError
from registry.reference import Reference, parse_reference

HARBOR_PUSH = "PUSH_ARTIFACT"
EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
_MANIFEST_TYPES = frozenset((*mt.IMAGE_MANIFESTS, *mt.INDEXES))


class PayloadError(ValueError):
    """A webhook body that is not one of the accepted shapes."""


@dataclass(frozen=True)
class Pushed:
    """An image the payload names: ``ref`` (tagged when the push had a tag), and the
    manifest digest when the payload carries it (else the service resolves it)."""

    ref: Reference
    digest: str | None = None
    pushed_at: str | None = None  # the registry's event timestamp, when it gives one


def _reference(text: Any, what: str) -> Reference:
    if not isinstance(text, str) or not text:
        raise PayloadError(f"{what}: no image reference")
    try:
        return parse_reference(text, default_tag=False)
    except RegistryError as exc:
        raise PayloadError(f"{what}: {exc}") from None


def _digest(value: Any) -> str | None:
    return value if isinstance(value, str) and value.startswith("sha256:") else None


def conversion_request(body: Any) -> list[Pushed]:
    """What ``POST /api/v1/conversions`` asks for: ``{"source": REF}`` or a Harbor webhook."""
    if not isinstance(body, dict):
        raise PayloadError("the body must be a JSON object")
    if "source" in body:
        ref = _reference(body["source"], "source")
        return [Pushed(ref, ref.digest)]
    if "type" not in body:
        raise PayloadError('expected {"source": REF} or a Harbor webhook ("type", "event_data")')
    if body["type"] != HARBOR_PUSH:
        return []
    data = body.get("event_data")
    resources = data.get("resources") if isinstance(data, dict) else None
    if not isinstance(resources, list):
        raise PayloadError("Harbor webhook: event_data.resources is not a list")
    out = []
    for i, res in enumerate(resources):
        if not isinstance(res, dict):
            raise PayloadError(f"Harbor webhook: resources[{i}] is not an object")
        ref = _reference(res.get("resource_url"), f"Harbor webhook: resources[{i}].resource_url")
        tag = res.get("tag")
        if ref.tag is None and isinstance(tag, str) and tag and not tag.startswith("sha256:"):
            ref = Reference(ref.registry, ref.repository, tag, ref.digest)
        out.append(Pushed(ref, ref.digest or _digest(res.get("digest"))))
    return out


def notification_envelope(body: Any) -> list[Pushed]:
    """The tagged manifest pushes of a distribution notification envelope."""
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        raise PayloadError('notification envelope: expected {"events": [...]}')
    out = []
    for i, event in enumerate(body["events"]):
        if not isinstance(event, dict) or event.get("action") != "push":
            continue
        target = event.get("target")
        if not isinstance(target, dict) or target.get("mediaType") not in _MANIFEST_TYPES:
            continue  # a blob, or a manifest type that is not an image
        tag, repository = target.get("tag"), target.get("repository")
        if not tag or not repository:
            continue  # pushed by digest: the child of an index, converted through it
        host = _host(event, target)
        if host is None:
            raise PayloadError(f"notification envelope: events[{i}] names no registry host")
        ref = _reference(f"{host}/{repository}:{tag}", f"notification envelope: events[{i}]")
        stamp = event.get("timestamp")
        out.append(Pushed(ref, _digest(target.get("digest")), stamp if stamp else None))
    return out


def _host(event: dict, target: dict) -> str | None:
    """The registry as its clients name it: the host of the target URL (the registry's own
    ``http.host`` when configured), else the request's Host header."""
    url = target.get("url")
    if isinstance(url, str) and url:
        netloc = urlsplit(url).netloc
        if netloc:
            return netloc
    request = event.get("request")
    host = request.get("host") if isinstance(request, dict) else None
    return host if isinstance(host, str) and host else None
