"""The external chunk dictionary of a conversion (``--chunk-dict``): its chunks, its blobs and
the manifest layers that carry them (image.md §14).

``registry:REF`` is a Nydus image: its bootstrap is extracted and its blob layers are pushed
(mounted) with the converted image. ``bootstrap:PATH`` is a local bootstrap whose blobs are
known only by id, so they must already be in the target repository. No dictionary is the
do-nothing ``NoChunkDict``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from convert import image as img
from convert.errors import ImageError
from convert.nydus import A_BLOB
from convert.platforms import host_platform
from rafs.bootstrap import read_bootstrap
from rafs.chunkdict import ChunkDict, NoChunkDict, chunk_dict_from_bootstrap
from rafs.errors import RafsError
from rafs.model import BlobInfo, Bootstrap, Chunk, walk
from rafs.options import RafsOptions
from registry import mediatype as mt
from registry.build import Blob
from registry.client import RegistryClient
from registry.medium import open_image, parse_spec
from registry.model import Descriptor, Image


class ChunkDictSource:
    def __init__(self) -> None:
        self.chunks: ChunkDict = NoChunkDict()
        self.blobs: list[BlobInfo] = []
        self.layers: dict[str, Blob] = {}  # blob id -> layer to push with the image
        self.by_ref: dict[tuple[str, int], Chunk] = {}  # (blob id, chunk index) -> chunk
        self.identity = ""  # what the dictionary is, for the build cache generation

    @classmethod
    def load(
        cls, spec: str | None, opts: RafsOptions, client: RegistryClient, work: Path
    ) -> ChunkDictSource:
        self = cls()
        if not spec:
            return self
        kind, _, rest = spec.partition(":")
        if kind == "bootstrap" and rest.startswith(("registry:", "local:")):
            kind, _, rest = rest.partition(":")  # nydusify's bootstrap:registry:REF form
        if kind in ("bootstrap", "local"):
            bs = _read(Path(rest), f"chunk dict {rest}")
            with open(rest, "rb") as f:
                self.identity = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
            source_image: Image | None = None
        else:
            ref = rest if kind == "registry" else spec
            found = open_image(ref, client=client, platform=host_platform())
            if not isinstance(found, Image) or not img.is_nydus(found):
                raise ImageError(f"chunk dict {ref}: not a Nydus image (no bootstrap layer)")
            source_image = found
            self.identity = found.digest
            img.extract_bootstrap(source_image, work / "dict.boot")
            bs = _read(work / "dict.boot", f"chunk dict {ref}")
        self.chunks = chunk_dict_from_bootstrap(
            bs,
            version=opts.fs_version,
            chunk_size=opts.chunk_size,
            digester=opts.digester,
            explicit_uid_gid=True,
        )
        self.blobs = list(bs.blobs)
        for _, node in walk(bs.root):
            for chunk in node.chunks:
                self.by_ref.setdefault((chunk.blob.blob_id, chunk.index), chunk)
        if source_image is not None:
            for desc in source_image.layer_descriptors[:-1]:
                self.layers[desc.digest.removeprefix("sha256:")] = Blob(
                    mt.NYDUS_BLOB, desc.digest, desc.size, _opener(source_image, desc),
                    {A_BLOB: "true"},
                )  # fmt: skip
        return self

    def chunk_at(self, blob_id: str, index: int) -> Chunk:
        """A dictionary chunk by blob id and index (KeyError when the dictionary has none)."""
        return self.by_ref[(blob_id, index)]

    def layer_for(self, blob: BlobInfo, target: str, client: RegistryClient) -> Blob:
        """The manifest layer of a dict blob; a local dictionary's blobs must already be in
        the target repository, since only their ids are known."""
        layer = self.layers.get(blob.blob_id)
        if layer is not None:
            return layer
        digest = "sha256:" + blob.blob_id
        spec = parse_spec(target)
        size = client.stat_blob(spec.ref, digest) if spec.ref is not None else None
        if size is None:
            raise ImageError(
                f"chunk dict blob {blob.blob_id} is not in {target}'s repository: copy the "
                "dictionary image there, or give it as registry:REF"
            )

        def unavailable():
            raise ImageError(f"chunk dict blob {blob.blob_id} vanished from {target}")

        return Blob(mt.NYDUS_BLOB, digest, size, unavailable, {A_BLOB: "true"})


def _read(path: Path, what: str) -> Bootstrap:
    try:
        with open(path, "rb") as f:
            return read_bootstrap(f)
    except OSError as exc:
        raise ImageError(f"{what}: {exc.strerror}") from exc
    except RafsError as exc:
        raise ImageError(f"{what}: {exc}") from exc


def _opener(image: Image, desc: Descriptor):
    return lambda: image.open_blob(desc)
