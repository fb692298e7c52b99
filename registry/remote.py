"""The registry medium: images and indexes read lazily from a registry, and a registry sink.

Reading fetches the manifest once (checked against its digest), blobs on demand as verified
streams. Writing goes through ``transfer.write`` (layers in parallel, config, manifests, tag
last); a blob that the source image holds in another repository of the same registry is
mounted instead of uploaded.
"""

from __future__ import annotations

from typing import BinaryIO

from . import mediatype as mt
from .client import RegistryClient
from .errors import InvalidReference
from .model import Descriptor, Image, Index, Opener, manifest_media_type
from .reference import Reference


class RemoteImage(Image):
    ranged = True

    def __init__(
        self, client: RegistryClient, ref: Reference, raw: bytes, descriptor: Descriptor
    ) -> None:
        super().__init__(descriptor, str(ref))
        self.client, self.origin, self._bytes = client, ref, raw

    def raw_manifest(self) -> bytes:
        return self._bytes

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        return self.client.open_blob(self.origin, descriptor.digest, descriptor.size)

    def read_range(self, descriptor: Descriptor, offset: int, length: int) -> bytes:
        """Part of a blob (e.g. one Nydus chunk) with an HTTP Range request."""
        return self.client.read_range(self.origin, descriptor.digest, offset, length)

    def stat_blob(self, digest: str) -> int | None:
        return self.client.stat_blob(self.origin, digest)


class RemoteIndex(Index):
    def __init__(
        self, client: RegistryClient, ref: Reference, raw: bytes, descriptor: Descriptor
    ) -> None:
        super().__init__(descriptor, str(ref))
        self.client, self.origin, self._bytes = client, ref, raw

    def raw_manifest(self) -> bytes:
        return self._bytes

    def child(self, descriptor: Descriptor) -> Image | Index:
        ref = self.origin.with_digest(descriptor.digest)
        raw, _ = self.client.get_manifest(ref)
        return _wrap(self.client, ref, raw, descriptor)


def _wrap(client: RegistryClient, ref: Reference, raw: bytes, desc: Descriptor) -> Image | Index:
    if mt.is_index(desc.media_type):
        return RemoteIndex(client, ref, raw, desc)
    return RemoteImage(client, ref, raw, desc)


def open_remote(client: RegistryClient, ref: Reference) -> Image | Index:
    """The image or index ``ref`` names."""
    raw, content_type = client.get_manifest(ref)
    media_type = manifest_media_type(raw, content_type or None, str(ref))
    return _wrap(client, ref, raw, Descriptor.of(media_type, raw))


class RemoteSink:
    """Writes into the repository of ``ref``; the top manifest goes under ``ref``'s tag, or
    by digest when ``ref`` has only a digest (which must then be the image's)."""

    def __init__(self, client: RegistryClient, ref: Reference) -> None:
        self.client, self.ref, self.jobs = client, ref, client.options.jobs

    def put_blob(self, desc: Descriptor, opener: Opener, origin: Reference | None) -> None:
        self.client.upload_blob(self.ref, desc.digest, desc.size, opener, mount_from=origin)

    def put_manifest(self, obj: Image | Index, tag: str | None, top: bool) -> None:
        ref = self.ref.with_digest(obj.digest)
        if top:
            if self.ref.digest and self.ref.digest != obj.digest:
                raise InvalidReference(
                    f"cannot push {obj.digest} to {self.ref}: the reference names another digest"
                )
            tag = tag or self.ref.tag
            if tag:
                ref = self.ref.with_tag(tag)
        self.client.put_manifest(ref, obj.raw_manifest(), obj.media_type)
