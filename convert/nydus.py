"""The conventions of a Nydus image on the OCI side, declared once.

Spec: ../shared/spec/image.md §2 (media types: the blob and config ones live in
``registry.mediatype``), §3 (annotations), §5.1 (the bootstrap layer's entries), §9.3 (the
merge-platform index). The converter writes them and the checker reads them from here.
"""

# Annotations (§3).
A_BLOB = "containerd.io/snapshot/nydus-blob"
A_BOOTSTRAP = "containerd.io/snapshot/nydus-bootstrap"
A_FS_VERSION = "containerd.io/snapshot/nydus-fs-version"
A_SOURCE_DIGEST = "containerd.io/snapshot/nydus-source-digest"
A_SOURCE_REF = "containerd.io/snapshot/nydus-source-reference"
A_BUILDER = "containerd.io/snapshot/nydus-builder-version"
A_EMPTY_LAYER = "containerd.io/snapshot/nydus-empty-layer"
A_REF = "containerd.io/snapshot/nydus-ref"
# Build cache annotations (§13.1): the manifest's generation, the record's source chain.
A_CACHE_VERSION = "containerd.io/snapshot/nydus-cache-version"
A_SOURCE_CHAINID = "containerd.io/snapshot/nydus-source-chainid"
A_UNCOMPRESSED = "containerd.io/uncompressed"

# The bootstrap layer's tar entry (§5.1), and the legacy root name the snapshotter accepts.
BOOTSTRAP_NAME = "image/image.boot"
LEGACY_BOOTSTRAP_NAME = "image.boot"

# Index entries of Nydus manifests (§9.2, §9.3).
MANIFEST_ARTIFACT = "application/vnd.nydus.image.manifest.v1+json"
PLATFORM_FEATURE = "nydus.remoteimage.v1"
