"""Version-neutral filesystem tree shared by every RAFS reader and writer.

A tree is a root directory ``Node``; directories map child names (bytes) to nodes.
Hard links are modelled by *identity*: every name of a link group refers to the same
``Node`` object, so nlink is "how many names point at this object" and the writers
group inodes with ``id(node)``. Regular-file content is a list of ``Chunk`` records
that point into a ``BlobInfo``; blob indexes exist only on disk (the writers number the
blobs they are given), so trees from different bootstraps can be combined freely.

Specs: ../shared/spec/rafs-v6.md §9-§12, rafs-v5.md §9-§11, blob.md §3-§5.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from rafs.errors import InvalidInput

# Enum values shared by the v6 blob table, the blob meta header and the TOC (blob.md §8).

DEFAULT_CHUNK_SIZE = 0x100000
MIN_CHUNK_SIZE = 0x1000  # chunk sizes are powers of two in this range (blob.md §2)
MAX_CHUNK_SIZE = 0x100_0000
ZERO_DIGEST = bytes(32)


@dataclass(eq=False)
class BlobInfo:
    """One data blob as the bootstrap's blob table describes it (blob.md §8.4).

    Compared by identity: two builds may produce blobs with the same id, and chunks keep
    a reference to the object they were written into. ``blob_id`` is filled in when the
    blob is finished (it is the SHA-256 of the whole file).
    """

    chunk_size: int = DEFAULT_CHUNK_SIZE
    compressor: str = "zstd"
    digester: str = "blake3"
    blob_id: str = ""
    chunk_count: int = 0
    compressed_size: int = 0
    uncompressed_size: int = 0
    features: int = 0
    ci_compressor: str = "none"
    ci_offset: int = 0
    ci_compressed_size: int = 0
    ci_uncompressed_size: int = 0
    toc_size: int = 0
    toc_digest: bytes = ZERO_DIGEST
    meta_digest: bytes = ZERO_DIGEST  # SEPARATE (zran) blobs: SHA-256 of the ref blob
    meta_size: int = 0  # SEPARATE (zran) blobs: size of the ref blob

    def __repr__(self) -> str:
        return f"BlobInfo({self.blob_id[:12] or '<unfinished>'}, chunks={self.chunk_count})"


FILE_TYPE_MASK = 0o170000  # the type bits of st_mode (stat.S_IFMT without the call)
NO_XATTRS: Mapping[bytes, bytes] = MappingProxyType({})


@dataclass(slots=True, unsafe_hash=True)
class Chunk:
    """One stored chunk as referenced by a file (one chunk may be shared by many files).

    Treat as immutable (``dataclasses.replace`` makes a changed copy). Not declared frozen: a
    frozen dataclass sets each field through ``object.__setattr__``, five times the cost of
    this class's ``__init__``, and a wide image makes a few of these per file.
    """

    blob: BlobInfo
    index: int  # chunk index inside its blob (ci index)
    digest: bytes  # digest of the uncompressed bytes, 32 bytes
    compressed_offset: int
    compressed_size: int
    uncompressed_offset: int
    uncompressed_size: int
    compressed: bool
    crc32: int | None = None  # CRC-32C of the uncompressed bytes, None when not recorded


@dataclass(eq=False, slots=True)
class Node:
    """One inode. ``mode`` carries the type bits; the other fields apply per type."""

    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    mtime_nsec: int = 0
    # Never changed in place: replaced whole. Most inodes have neither, so the defaults are
    # shared immutable empties rather than a new dict and list per node.
    xattrs: Mapping[bytes, bytes] = field(default_factory=lambda: NO_XATTRS)
    size: int = 0  # regular files only
    chunks: Sequence[Chunk] = ()  # regular files only
    target: bytes = b""  # symlinks only
    rdev: int = 0  # char/block devices: os.makedev(major, minor)
    children: dict[bytes, Node] | None = None  # directories only
    implicit: bool = False  # a directory synthesised for a missing parent (image.md §15.5)

    # The type tests are inlined (no stat.S_IFMT call): they run a few times per inode in
    # every pass over trees of 100k entries.
    @property
    def kind(self) -> int:
        return self.mode & FILE_TYPE_MASK

    @property
    def is_dir(self) -> bool:
        return self.mode & FILE_TYPE_MASK == stat.S_IFDIR

    @property
    def is_reg(self) -> bool:
        return self.mode & FILE_TYPE_MASK == stat.S_IFREG

    @property
    def is_symlink(self) -> bool:
        return self.mode & FILE_TYPE_MASK == stat.S_IFLNK

    @property
    def is_whiteout_device(self) -> bool:
        """overlayfs whiteout: a character device 0/0."""
        return self.mode & FILE_TYPE_MASK == stat.S_IFCHR and self.rdev == 0

    def copy_meta_from(self, other: Node) -> None:
        """Replace this node's metadata (not its children or content) with other's."""
        self.mode = other.mode
        self.uid, self.gid = other.uid, other.gid
        self.mtime, self.mtime_nsec = other.mtime, other.mtime_nsec
        self.xattrs = dict(other.xattrs)
        self.implicit = other.implicit


def new_dir(mode: int = 0o755, **meta) -> Node:
    return Node(mode=stat.S_IFDIR | (mode & 0o7777), children={}, **meta)


def new_root() -> Node:
    """The root every build starts from: 0755 root:root, mtime 0 (image.md §15.5)."""
    return new_dir(0o755, implicit=True)


def split_path(path: bytes) -> list[bytes]:
    """Normalise an absolute or relative path into components, rejecting escapes."""
    parts: list[bytes] = []
    for part in path.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            if not parts:
                raise InvalidInput(f"path escapes the root: {path.decode(errors='replace')!r}")
            parts.pop()
            continue
        if len(part) > 255:
            raise InvalidInput(f"name longer than 255 bytes in {path.decode(errors='replace')!r}")
        parts.append(part)
    return parts


def lookup(root: Node, path: bytes) -> Node | None:
    node = root
    for part in split_path(path):
        if node.children is None:
            return None
        nxt = node.children.get(part)
        if nxt is None:
            return None
        node = nxt
    return node


def walk(root: Node, prefix: bytes = b"/") -> Iterator[tuple[bytes, Node]]:
    """Depth-first pre-order over (path, node), children in byte order; root is b'/'.

    Iterative, so arbitrarily deep trees (hostile layers) cannot exhaust the Python stack.
    """
    stack: list[tuple[bytes, Node]] = [(prefix, root)]
    while stack:
        path, node = stack.pop()
        yield path, node
        if node.children is None:
            continue
        base = path if path.endswith(b"/") else path + b"/"
        stack.extend(
            (base + name, node.children[name]) for name in sorted(node.children, reverse=True)
        )


def nodes(root: Node) -> Iterator[Node]:
    """Every name's node (a hard-linked node once per name), in no particular order: for
    passes that need neither paths nor ``walk``'s sorting."""
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        if node.children is not None:
            stack.extend(node.children.values())


def count_names(root: Node) -> dict[int, int]:
    """Number of names per node object (id -> count): the nlink of a hard-link group."""
    counts: dict[int, int] = {}
    for node in nodes(root):
        counts[id(node)] = counts.get(id(node), 0) + 1
    return counts


@dataclass
class LayerTree:
    """What a layer source produces, before it is applied onto the tree below it.

    Whiteout markers are still ordinary entries here (``.wh.*`` files, 0/0 char devices,
    opaque xattrs); ``rafs.overlay`` interprets them. ``lower_links`` lists hard links whose
    target is not in this layer: (link path, target path), resolved against the lower tree
    (image.md §15.6).
    """

    root: Node
    lower_links: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass
class Bootstrap:
    """A parsed (or to-be-written) bootstrap: the tree plus what the superblock says."""

    root: Node
    blobs: list[BlobInfo]
    version: int = 6
    chunk_size: int = DEFAULT_CHUNK_SIZE
    compressor: str = "zstd"
    digester: str = "blake3"
    explicit_uid_gid: bool = True
    prefetch: list[bytes] = field(default_factory=list)  # absolute paths, pattern order
