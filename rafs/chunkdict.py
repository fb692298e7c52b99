"""Chunk dictionaries: chunks a build may reference instead of storing them again.

Implements ../shared/spec/image.md §14.2-§14.3 (which dictionary chunks are usable, keyed by
digest and uncompressed size) and §15.7 (a parent bootstrap's chunks serve the same purpose);
blob.md §5 (dedup rule). "No dictionary" is the do-nothing ``NoChunkDict``, so the blob writer
never branches on whether one was given.

The blob writer only reads a dictionary. Which chunks are added to it (a parent's, a
dictionary image's, those of layers already converted) is decided by the caller; adding
during a build is the caller's business too, so several writers may share one dictionary that
nobody modifies while they run.
"""

from __future__ import annotations

from typing import Protocol

from rafs.blob.ondisk import UNSHAREABLE
from rafs.errors import InvalidInput
from rafs.model import ZERO_DIGEST, Bootstrap, Chunk, Node, walk


class IncompatibleChunkDict(InvalidInput):
    """A dictionary or parent bootstrap that cannot be used with this build's options."""


class ChunkDict(Protocol):
    def get(self, digest: bytes, size: int) -> Chunk | None: ...

    def add(self, chunk: Chunk) -> None: ...


class NoChunkDict:
    """The absent dictionary: finds nothing, keeps nothing."""

    def get(self, digest: bytes, size: int) -> Chunk | None:
        return None

    def add(self, chunk: Chunk) -> None:
        pass

    def __len__(self) -> int:
        return 0


class MemoryChunkDict:
    """Chunks keyed by (digest, uncompressed size); the first chunk added for a key wins."""

    def __init__(self) -> None:
        self._chunks: dict[tuple[bytes, int], Chunk] = {}

    def get(self, digest: bytes, size: int) -> Chunk | None:
        return self._chunks.get((digest, size))

    def add(self, chunk: Chunk) -> None:
        self._chunks.setdefault((chunk.digest, chunk.uncompressed_size), chunk)

    def __len__(self) -> int:
        return len(self._chunks)

    def __contains__(self, key: tuple[bytes, int]) -> bool:
        return key in self._chunks


def chunk_dict_from_tree(
    root: Node, *, digester: str = "blake3", chunk_size: int | None = None
) -> MemoryChunkDict:
    """Every usable chunk of a parent or dictionary tree, in walk order (first wins).

    Raises IncompatibleChunkDict when a referenced blob uses another digester than the build
    (its ids could never match: upstream silently dedups nothing there, image.md §14.2) or,
    when ``chunk_size`` is given, another chunk size. Chunks of blobs carrying features that
    make them unshareable, and all-zero (tarfs) digests, are skipped.
    """
    result = MemoryChunkDict()
    checked: set[int] = set()
    for path, node in walk(root):
        for chunk in node.chunks:
            blob = chunk.blob
            if id(blob) not in checked:
                checked.add(id(blob))
                _check_blob(blob, digester, chunk_size, path)
            if blob.features & UNSHAREABLE:
                continue
            if chunk.digest == ZERO_DIGEST or chunk.uncompressed_size == 0:
                continue
            result.add(chunk)
    return result


def chunk_dict_from_bootstrap(
    boot: Bootstrap,
    *,
    version: int,
    chunk_size: int,
    digester: str,
    explicit_uid_gid: bool,
) -> MemoryChunkDict:
    """Dictionary from a parsed bootstrap; refuses a superblock that differs (image.md §14.2)."""
    wanted = {
        "RAFS version": (boot.version, version),
        "chunk size": (boot.chunk_size, chunk_size),
        "digester": (boot.digester, digester),
        "explicit uid/gid flag": (boot.explicit_uid_gid, explicit_uid_gid),
    }
    for what, (have, want) in wanted.items():
        if have != want:
            raise IncompatibleChunkDict(
                f"chunk dictionary has {what} {_show(have)}, the build uses {_show(want)}"
            )
    return chunk_dict_from_tree(boot.root, digester=digester, chunk_size=chunk_size)


def _check_blob(blob, digester: str, chunk_size: int | None, path: bytes) -> None:
    where = f"blob {blob.blob_id or '<unnamed>'} (used by {path.decode(errors='replace')})"
    if blob.digester != digester:
        raise IncompatibleChunkDict(
            f"{where} uses digester {blob.digester}, the build uses {digester}"
        )
    if chunk_size is not None and blob.chunk_size != chunk_size:
        raise IncompatibleChunkDict(
            f"{where} has chunk size {blob.chunk_size:#x}, the build uses {chunk_size:#x}"
        )


def _show(value: object) -> str:
    return f"{value:#x}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
