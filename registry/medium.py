"""Image specs and the two calls every caller uses: ``open_image`` and ``write_image``.

Specs (skopeo's transport syntax): ``REF`` or ``docker://REF`` (a registry), ``oci:DIR[:TAG]``
(an OCI layout directory), ``oci-archive:FILE[:TAG]`` (an OCI layout in a tar, as BuildKit,
buildah and skopeo write it), ``docker-archive:FILE[:REF]`` (a ``docker save`` tar). Copying
between media is ``write_image(open_image(src), dst)`` and keeps every digest, because the
model carries manifests as their original bytes and blobs are copied untouched.
"""

from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass

from . import transfer
from .archive import ArchiveSink, open_archive
from .client import RegistryClient
from .errors import InvalidReference, Unsupported
from .layout import LayoutSink, open_layout
from .model import Descriptor, Image, Index, Platform
from .ociarchive import OciArchiveSink, open_oci_archive
from .options import RegistryOptions
from .reference import Reference, parse_reference
from .remote import RemoteSink, open_remote
from .tarlayout import TarSink

LOCAL_KINDS = ("oci-archive", "oci", "docker-archive")  # oci-archive: before oci:
SPEC_FORMS = "REF, docker://REF, oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:REF]"


@dataclass(frozen=True)
class Spec:
    """A parsed image spec: ``kind`` is ``registry``, ``oci``, ``oci-archive`` or
    ``docker-archive``."""

    kind: str
    path: str | None = None
    tag: str | None = None
    ref: Reference | None = None

    def __str__(self) -> str:
        if self.kind == "registry":
            return str(self.ref)
        return f"{self.kind}:{self.path}" + (f":{self.tag}" if self.tag else "")


def parse_spec(text: str) -> Spec:
    """Parse an image spec; the path ends at the first ``:`` after the prefix."""
    for kind in LOCAL_KINDS:
        if text.startswith(kind + ":"):
            path, _, tag = text[len(kind) + 1 :].partition(":")
            if not path:
                raise InvalidReference(f"invalid spec {text!r}: no path after {kind}:")
            if kind == "docker-archive" and tag:
                ref = parse_reference(tag)
                return Spec(kind, path, tag, ref)
            if tag and not _is_layout_tag(tag):
                raise InvalidReference(f"invalid spec {text!r}: bad tag {tag!r}")
            return Spec(kind, path, tag or None)
    if text.startswith("docker://"):
        text = text.removeprefix("docker://")
    elif "://" in text or text.split(":", 1)[0] in ("docker-daemon", "dir"):
        raise InvalidReference(f"invalid spec {text!r}: use {SPEC_FORMS}")
    return Spec("registry", ref=parse_reference(text))


def _is_layout_tag(tag: str) -> bool:
    # OCI ref.name grammar: alphanumerics joined by - . _ : / @ +
    return all(c.isalnum() or c in "-._:/@+" for c in tag) and tag[0].isalnum()


_default: RegistryClient | None = None
_default_lock = threading.Lock()


def default_client() -> RegistryClient:
    """A process-wide client with default options, closed at exit."""
    global _default
    with _default_lock:
        if _default is None:
            _default = RegistryClient(RegistryOptions())
            atexit.register(_default.close)
        return _default


def open_image(
    spec: str | Spec,
    *,
    client: RegistryClient | None = None,
    platform: Platform | str | None = None,
) -> Image | Index:
    """Open an image or index from any medium; with ``platform``, always an Image."""
    s = parse_spec(spec) if isinstance(spec, str) else spec
    obj: Image | Index
    if s.kind == "registry":
        assert s.ref is not None
        obj = open_remote(client or default_client(), s.ref)
    elif s.kind == "oci":
        obj = open_layout(s.path, s.tag)  # type: ignore[arg-type]
    elif s.kind == "oci-archive":
        obj = open_oci_archive(s.path, s.tag)  # type: ignore[arg-type]
    else:
        obj = open_archive(s.path, s.tag)  # type: ignore[arg-type]
    if platform is not None and isinstance(obj, Index):
        obj = obj.image_for(Platform.parse(platform) if isinstance(platform, str) else platform)
    return obj


def write_image(
    obj: Image | Index,
    spec: str | Spec,
    *,
    client: RegistryClient | None = None,
    jobs: int | None = None,
) -> Descriptor:
    """Write ``obj`` (and all it references) to a medium; returns the top descriptor."""
    s = parse_spec(spec) if isinstance(spec, str) else spec
    if s.kind == "registry":
        assert s.ref is not None
        c = client or default_client()
        sink = RemoteSink(c, s.ref)
        if jobs:
            sink.jobs = jobs
        return transfer.write(obj, sink)
    if s.kind == "oci":
        return transfer.write(obj, LayoutSink(s.path, jobs or 4), s.tag)  # type: ignore[arg-type]
    if s.kind == "oci-archive":
        return _write_tar(obj, OciArchiveSink(s.path), s.tag)  # type: ignore[arg-type]
    if isinstance(obj, Index):
        raise Unsupported(
            f"{s}: a docker-archive holds single-platform images; pass platform= to open_image"
        )
    return _write_tar(obj, ArchiveSink(s.path, s.ref), None)  # type: ignore[arg-type]


def _write_tar(obj: Image | Index, sink: TarSink, tag: str | None) -> Descriptor:
    """Write into an archive sink: renamed into place when complete, dropped on failure."""
    try:
        desc = transfer.write(obj, sink, tag)
    except BaseException:
        sink.close(ok=False)
        raise
    sink.close()
    return desc


def copy_image(
    src: str | Spec,
    dst: str | Spec,
    *,
    client: RegistryClient | None = None,
    platform: Platform | str | None = None,
    jobs: int | None = None,
) -> Descriptor:
    """``write_image(open_image(src), dst)``: digests are kept."""
    return write_image(
        open_image(src, client=client, platform=platform), dst, client=client, jobs=jobs
    )
