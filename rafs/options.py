"""The options that decide the bytes of blobs and bootstraps, declared once with their defaults.

Spec: ../shared/spec/blob.md §2 (chunk size), §3-§4 (digester, compressor), rafs-v5.md and
rafs-v6.md (version). Built once by the command line or an API caller and passed down as is;
a build cache keys its records by these (image.md §13.3).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rafs import codec
from rafs.errors import InvalidInput, Unsupported
from rafs.model import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, BlobInfo, Bootstrap, Node

FS_VERSIONS = (6, 5)


@dataclass(frozen=True)
class RafsOptions:
    fs_version: int = 6
    chunk_size: int = DEFAULT_CHUNK_SIZE
    compressor: str = "zstd"
    digester: str = "blake3"

    def __post_init__(self) -> None:
        if self.fs_version not in FS_VERSIONS:
            raise Unsupported(f"RAFS version {self.fs_version}")
        size = self.chunk_size
        if size & (size - 1) or not MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE:
            raise InvalidInput(f"chunk size {size:#x} is not a power of two in 4K…16M")
        codec.check_compressor(self.compressor)
        codec.check_digester(self.digester)

    def bootstrap(
        self, root: Node, blobs: list[BlobInfo], prefetch: Iterable[bytes] = ()
    ) -> Bootstrap:
        """A bootstrap of ``root`` written with these options."""
        return Bootstrap(
            root=root,
            blobs=blobs,
            version=self.fs_version,
            chunk_size=self.chunk_size,
            compressor=self.compressor,
            digester=self.digester,
            prefetch=list(prefetch),
        )
