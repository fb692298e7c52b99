"""Media types of manifests, indexes, configs and layers (OCI image-spec, Docker v2 schema 2).

See ``../shared/spec/image.md`` §2 for the types a converted Nydus image uses. This module
classifies a media type and refuses, with a message saying why, what rconv cannot handle:
schema 1 manifests, foreign / non-distributable layers and unknown types.
"""

from __future__ import annotations

from .errors import Unsupported

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

NYDUS_BLOB = "application/vnd.oci.image.layer.nydus.blob.v1"
NYDUS_CONFIG = "application/vnd.nydus.image.config.v1+json"

IMAGE_MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
SCHEMA1 = (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED)
# What a registry GET for a manifest accepts; schema 1 is listed only so that a registry holding
# nothing else answers with it and the user gets our clear error rather than a 404.
MANIFEST_ACCEPT = (*IMAGE_MANIFESTS, *INDEXES, *SCHEMA1)

_COMPRESSION = {
    OCI_LAYER: "none",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    DOCKER_LAYER: "none",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_ZSTD: "zstd",
}
FOREIGN = (DOCKER_FOREIGN_GZIP, OCI_NONDIST, OCI_NONDIST_GZIP, OCI_NONDIST_ZSTD)


def is_index(media_type: str) -> bool:
    return media_type in INDEXES


def is_image(media_type: str) -> bool:
    return media_type in IMAGE_MANIFESTS


def check_manifest_type(media_type: str | None, what: str) -> str:
    """Return ``media_type`` if it is an image manifest or index type, else raise Unsupported."""
    if media_type in IMAGE_MANIFESTS or media_type in INDEXES:
        return media_type
    if media_type in SCHEMA1:
        raise Unsupported(
            f"{what} is a Docker schema 1 manifest ({media_type}), deprecated and not "
            "supported: re-push the image with a current docker, skopeo or crane"
        )
    raise Unsupported(
        f"{what} has media type {media_type!r}, which is neither an image manifest nor an "
        "index (supported: OCI and Docker v2 schema 2)"
    )


def is_foreign(media_type: str) -> bool:
    return media_type in FOREIGN


def check_distributable(media_type: str, what: str) -> None:
    """Refuse foreign / non-distributable layers: their bytes live outside the registry."""
    if media_type in FOREIGN:
        raise Unsupported(
            f"{what} is a foreign / non-distributable layer ({media_type}); its content is "
            "not in the registry and rconv does not fetch it from external URLs"
        )


def layer_compression(media_type: str, what: str = "layer") -> str:
    """``"gzip"``, ``"zstd"`` or ``"none"`` for a tar layer type; raise for anything else."""
    check_distributable(media_type, what)
    try:
        return _COMPRESSION[media_type]
    except KeyError:
        pass
    if media_type == NYDUS_BLOB:
        raise Unsupported(f"{what} is a Nydus data blob ({media_type}), not a tar layer")
    raise Unsupported(f"{what} has unknown layer media type {media_type!r}")


def layer_type(compression: str, *, oci: bool = True) -> str:
    """Media type of a tar layer with ``compression`` in the OCI or Docker family."""
    table = (
        {"none": OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}
        if oci
        else {"none": DOCKER_LAYER, "gzip": DOCKER_LAYER_GZIP, "zstd": DOCKER_LAYER_ZSTD}
    )
    try:
        return table[compression]
    except KeyError:
        raise Unsupported(f"unknown layer compression {compression!r}") from None
