"""The source side of ``rconv check``: the root filesystem containerd builds from OCI layers.

Written apart from the converter on purpose (it shares no code with ``rafs/tarstream.py`` or
``rafs/overlay.py``), so that one misreading of the layering rules cannot hide itself on both
sides of the comparison. It is the most direct model of a containerd layer apply followed by an
overlayfs mount (image.md §15.1), with rconv's normative choices where containerd leaves
room (§15.2-§15.6, NOTES.md 7 and 9):

* The tree is a flat dict ``absolute path -> Inode`` plus a child index for subtree removal.
  Hard links are one ``Inode`` object under several paths. A lower symlink is never followed,
  so ``d/x`` over a lower symlink ``d`` makes ``d`` a directory; a parent symlink written by
  the same layer is followed inside the root, like containerd's fs.RootPath.
* Each layer is decompressed by its magic (gzip, zstd or none, like containerd's
  DecompressStream), read with Python's ``tarfile`` in stream mode and applied in two rounds
  (§15.4): round 1 applies the layer's OCI whiteouts (``.wh.X``, ``.wh..wh..opq``) to the
  tree of the layers below; round 2 applies every other entry in tar order. So a whiteout
  never removes an entry of its own layer, whatever the tar order.
* A missing parent directory is implicit: an existing directory keeps its metadata, anything
  else becomes 0755 root:root with no xattrs (§15.5, containerd). Whiteout markers create
  their parents the same way, unless a non-directory of the same layer is in the way.
* A hard link joins the inode its target has at that point of the layer, and the link entry's
  owner, permission bits (not on a symlink) and xattrs (added) land on that inode, as
  containerd's applier chowns, chmods and setxattrs every entry's path. A target the layer has
  not written: the link joins the inode the target had below the layer and changes nothing
  (§15.6; containerd refuses such a link).
* Symlinks are mode 0777 whatever the header says (Linux has no lchmod: that is what an
  unpacked layer shows). xattrs come from PAX ``SCHILY.xattr.*`` records as raw bytes;
  overlayfs-private ``trusted.overlay.*``/``user.overlay.*`` are not visible through a mount
  and are dropped. PAX global headers are ignored (containerd ignores them).
* Regular-file content is hashed (SHA-256) as it streams; no file is ever held whole.

Tars without the end-of-archive blocks (NOTES.md 9): ``tarfile`` in stream mode ends the
archive when the stream stops exactly at a header boundary, which is the "clean end" Go's
reader accepts too. Go (so containerd) also accepts a stream that stops inside the last entry's
padding, after its data, as umoci 0.4's ``insert`` writes layers: the padding is completed with
zeros here. A stream cut inside an entry's data or header is still an error. A 0-byte layer is
empty.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import zstandard

from convert.check.errors import SourceError
from convert.check.streams import READ, Hashing, Prefixed, decompressed, drain, read_some

WHITEOUT = b".wh."
OPAQUE = b".wh..wh..opq"
_HIDDEN_XATTRS = (b"trusted.overlay.", b"user.overlay.")
_SCHILY = "SCHILY.xattr."


@dataclass(eq=False)
class Inode:
    """One inode of a merged tree. ``mode`` carries the type bits."""

    mode: int
    uid: int = 0
    gid: int = 0
    size: int = 0  # regular files
    target: bytes = b""  # symlinks
    rdev: int = 0  # devices: os.makedev(major, minor)
    xattrs: dict[bytes, bytes] = field(default_factory=dict)
    digest: str = ""  # regular files: "sha256:<hex>" of the content

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


def new_directory(mode: int = 0o755) -> Inode:
    return Inode(stat.S_IFDIR | mode)


@dataclass
class _Entry:
    """One tar entry of a layer, read but not yet applied."""

    path: bytes
    kind: str  # "whiteout", "opaque", "link", "inode"
    inode: Inode | None = None
    link: bytes = b""  # hard-link target path


def join(parent: bytes, name: bytes) -> bytes:
    return b"/" + name if parent == b"/" else parent + b"/" + name


def parent_of(path: bytes) -> bytes:
    return path.rsplit(b"/", 1)[0] or b"/"


def normalise(name: str) -> bytes:
    """A tar member name as an absolute, cleaned path (``./`` and ``/`` prefixes dropped)."""
    parts: list[bytes] = []
    for part in name.encode("utf-8", "surrogateescape").split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            if not parts:
                raise SourceError(f"tar entry {name!r} escapes the root")
            parts.pop()
        else:
            parts.append(part)
    return b"/" + b"/".join(parts)


class SourceTree:
    """The merged tree: ``paths`` maps absolute paths to inodes; ``b"/"`` is the root."""

    def __init__(self) -> None:
        self.paths: dict[bytes, Inode] = {b"/": new_directory()}
        self._children: dict[bytes, set[bytes]] = {b"/": set()}
        # Directories whose metadata nydusify's reference would get wrong (image.md §15.5).
        self.implicit_over_lower: set[bytes] = set()

    def children(self, path: bytes) -> Iterable[bytes]:
        return self._children.get(path, ())

    def remove(self, path: bytes) -> None:
        """Remove ``path`` and everything below it (no-op when absent)."""
        if path == b"/" or path not in self.paths:
            return
        self._children[parent_of(path)].discard(path)
        stack = [path]
        while stack:
            p = stack.pop()
            del self.paths[p]
            self.implicit_over_lower.discard(p)
            stack.extend(self._children.pop(p, ()))

    def put(self, path: bytes, inode: Inode) -> None:
        """Place ``inode`` at ``path``, whose parent must be a directory; replaces nothing."""
        self.paths[path] = inode
        self._children[parent_of(path)].add(path)
        if inode.is_dir:
            self._children[path] = set()

    def apply(self, entries: list[_Entry]) -> None:
        """Apply one layer's entries: whiteouts onto the lower tree, then the rest in order."""
        lower = self.paths.copy() if any(e.kind == "link" for e in entries) else {}
        explicit_dirs = {e.path for e in entries if e.inode is not None and e.inode.is_dir}
        for e in entries:  # round 1: whiteouts only ever see the layers below
            if e.kind == "opaque":
                for child in list(self.children(parent_of(e.path))):
                    self.remove(child)
            elif e.kind == "whiteout":
                name = e.path.rsplit(b"/", 1)[1]
                self.remove(join(parent_of(e.path), name[len(WHITEOUT) :]))
        written: set[bytes] = set()  # non-directories this layer put in place
        own = {id(e.inode) for e in entries if e.kind == "inode"}  # inodes this layer made
        for e in entries:  # round 2
            marker = e.kind in ("whiteout", "opaque")
            path = self._follow(e.path, written)
            if not self._parents(path, written, explicit_dirs, marker) or marker:
                continue
            if path == b"/":
                if e.inode is None or not e.inode.is_dir:
                    raise SourceError("tar entry for the root is not a directory")
                _copy_meta(self.paths[b"/"], e.inode)
                self.implicit_over_lower.discard(b"/")
                continue
            if e.kind == "link":
                inode = self._link_target(e, written, lower, own)
            else:
                assert e.inode is not None
                inode = e.inode
                current = self.paths.get(path)
                if inode.is_dir and current is not None and current.is_dir:
                    _copy_meta(current, inode)  # a directory over a directory: merged
                    self.implicit_over_lower.discard(path)
                    continue
            self.remove(path)
            self.put(path, inode)
            if not inode.is_dir:
                written.add(path)

    def _follow(self, path: bytes, written: set[bytes]) -> bytes:
        """Resolve parent symlinks this layer wrote, inside the root, as containerd's applier
        does (fs.RootPath); symlinks of lower layers are never followed."""
        for _ in range(40):
            parts = path.split(b"/")[1:]
            for i in range(1, len(parts)):
                ancestor = b"/" + b"/".join(parts[:i])
                inode = self.paths.get(ancestor)
                if ancestor in written and inode is not None and stat.S_ISLNK(inode.mode):
                    base = b"" if inode.target.startswith(b"/") else parent_of(ancestor)
                    path = _clamp(base + b"/" + inode.target + b"/" + b"/".join(parts[i:]))
                    break
            else:
                return path
        raise SourceError(f"too many levels of symbolic links in {_show(path)}")

    def _parents(
        self, path: bytes, written: set[bytes], explicit: set[bytes], marker: bool
    ) -> bool:
        """Create the missing parents of ``path``; False when a marker has no effect."""
        ancestors = []
        p = parent_of(path)
        while p != b"/":
            ancestors.append(p)
            p = parent_of(p)
        for a in reversed(ancestors):
            current = self.paths.get(a)
            if current is not None and current.is_dir:
                if a not in explicit and _not_default(current):
                    self.implicit_over_lower.add(a)
                continue
            if current is not None:
                if marker and a in written:
                    return False  # a non-directory of this layer already hides the path
                self.remove(a)
            self.put(a, new_directory())
            written.discard(a)
        return True

    def _link_target(
        self, e: _Entry, written: set[bytes], lower: dict[bytes, Inode], own: set[int]
    ) -> Inode:
        names = f"hard link {_show(e.path)} -> {_show(e.link)}"
        target = self.paths.get(e.link) if e.link in written else None
        if target is not None and id(target) in own and e.inode is not None:
            meta = e.inode  # an inode of this layer: the link's metadata lands on it
            if not stat.S_ISLNK(target.mode):
                target.mode = stat.S_IFMT(target.mode) | stat.S_IMODE(meta.mode)
            target.uid, target.gid = meta.uid, meta.gid
            target.xattrs.update(meta.xattrs)
        if target is None:
            target = lower.get(e.link)
        if target is None:
            raise SourceError(f"{names}: target found neither in this layer nor below it")
        if target.is_dir:
            raise SourceError(f"{names}: target is a directory")
        return target

    def walk(self) -> Iterator[tuple[bytes, Inode]]:
        for path in sorted(self.paths):
            yield path, self.paths[path]


def _clamp(path: bytes) -> bytes:
    """Normalise an absolute path; '..' at the root stays at the root."""
    parts: list[bytes] = []
    for part in path.split(b"/"):
        if part == b"..":
            if parts:
                parts.pop()
        elif part not in (b"", b"."):
            parts.append(part)
    return b"/" + b"/".join(parts)


def _not_default(inode: Inode) -> bool:
    return stat.S_IMODE(inode.mode) != 0o755 or bool(inode.uid or inode.gid or inode.xattrs)


def _copy_meta(into: Inode, src: Inode) -> None:
    into.mode, into.uid, into.gid, into.xattrs = src.mode, src.uid, src.gid, dict(src.xattrs)


def _show(path: bytes) -> str:
    return repr(path.decode("utf-8", "backslashreplace"))


# ------------------------------------------------------------------------------ reading a layer


class _NoGlobals(dict):
    """tarfile's store for PAX global records: dropping them is how they are ignored."""

    def __setitem__(self, key, value) -> None:
        pass


_TYPES = {
    tarfile.DIRTYPE: stat.S_IFDIR,
    tarfile.SYMTYPE: stat.S_IFLNK,
    tarfile.CHRTYPE: stat.S_IFCHR,
    tarfile.BLKTYPE: stat.S_IFBLK,
    tarfile.FIFOTYPE: stat.S_IFIFO,
}


def read_layer(raw: BinaryIO, stop: threading.Event | None = None) -> tuple[list[_Entry], str]:
    """The entries of one (compressed or not) layer stream and its diff_id.

    ``stop``, when set by another thread, ends the read with SourceError.
    """
    data = Hashing(decompressed(raw)[0])
    padded = _BlockPadded(data)
    entries: list[_Entry] = []
    try:
        first = read_some(padded, tarfile.BLOCKSIZE)
        if first:  # tarfile refuses a 0-byte stream, which is an empty layer (image.md §12)
            last = None
            # Stream mode only calls read(); the stubs want a full file object.
            with tarfile.open(  # type: ignore[call-overload]
                fileobj=Prefixed(first, padded),
                mode="r|",
                encoding="utf-8",
                errors="surrogateescape",
                pax_headers=_NoGlobals(),
            ) as tar:
                for member in tar:
                    if stop is not None and stop.is_set():
                        raise SourceError("check cancelled")
                    entries.append(_entry(tar, member))
                    last = member
            _check_cut(padded.cut, last)
        drain(data)  # trailing blocks and bytes are part of the diff_id
        drain(raw)  # reach EOF of the stored stream, so that its digest is verified
    except (tarfile.TarError, EOFError, OSError, zstandard.ZstdError) as exc:
        raise SourceError(f"unreadable layer: {exc}") from None
    return entries, data.digest()


class _BlockPadded:
    """A stream whose last partial 512-byte block is completed with zeros; ``cut`` records
    where the real bytes ended when that happened."""

    def __init__(self, inner: Hashing) -> None:
        self.inner, self.pos, self.tail = inner, 0, b""
        self.cut: int | None = None

    def read(self, n: int = -1) -> bytes:
        if self.cut is None:
            data = self.inner.read(n)
            if data or n == 0:
                self.pos += len(data)
                return data
            self.cut = self.pos
            self.tail = bytes(-self.pos % tarfile.BLOCKSIZE)
        out, self.tail = (self.tail, b"") if n < 0 else (self.tail[:n], self.tail[n:])
        return out


def _check_cut(cut: int | None, last: tarfile.TarInfo | None) -> None:
    """Padding only completed the last entry's padding (Go's reader takes that as the end);
    anything else the zeros stood in for was data or a header: the stream is cut short."""
    if cut is None or cut % tarfile.BLOCKSIZE == 0:
        return
    data_end = padded_end = 0
    if last is not None:
        size = last.size if last.isreg() else 0
        data_end = last.offset_data + size
        padded_end = last.offset_data + -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    if not data_end <= cut <= padded_end:
        raise SourceError(f"unexpected end of data at byte {cut}")


def _entry(tar: tarfile.TarFile, m: tarfile.TarInfo) -> _Entry:
    path = normalise(m.name)
    base = path.rsplit(b"/", 1)[1]
    if base == OPAQUE:
        return _Entry(path, "opaque")
    if base.startswith(WHITEOUT):
        return _Entry(path, "whiteout")
    perms = m.mode & 0o7777
    inode = Inode(0, m.uid, m.gid)
    if m.islnk():
        inode.mode = perms  # the link entry's metadata, applied to the inode it joins
    elif m.isreg():
        inode.mode = stat.S_IFREG | perms
        src = tar.extractfile(m)
        assert src is not None
        digest = hashlib.sha256()
        while block := src.read(READ):
            digest.update(block)
            inode.size += len(block)
        inode.digest = "sha256:" + digest.hexdigest()
    elif m.type in _TYPES:
        kind = _TYPES[m.type]
        inode.mode = kind | (0o777 if kind == stat.S_IFLNK else perms)
        if kind == stat.S_IFLNK:
            inode.target = m.linkname.encode("utf-8", "surrogateescape")
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            inode.rdev = os.makedev(m.devmajor, m.devminor)
    else:
        raise SourceError(f"tar entry {_show(path)} has unsupported type {m.type!r}")
    for key, value in m.pax_headers.items():
        if key.startswith(_SCHILY):
            name = key[len(_SCHILY) :].encode("utf-8", "surrogateescape")
            if not name.startswith(_HIDDEN_XATTRS):
                inode.xattrs[name] = value.encode("utf-8", "surrogateescape")
    if m.islnk():
        return _Entry(path, "link", inode, link=normalise(m.linkname))
    return _Entry(path, "inode", inode)


def build_tree(
    layers: Iterable[tuple[str, Callable[[], BinaryIO]]],
    diff_ids: list[str] | None = None,
    stop: threading.Event | None = None,
) -> SourceTree:
    """Apply ``(name, opener)`` layers in order onto an empty root.

    With ``diff_ids``, each layer's computed diff_id is appended to it (for the caller's
    config check). A layer that cannot be read or applied raises SourceError naming it.
    """
    tree = SourceTree()
    for name, opener in layers:
        try:
            with opener() as raw:
                entries, diff_id = read_layer(raw, stop)
            tree.apply(entries)
        except SourceError as exc:
            raise SourceError(f"source layer {name}: {exc}") from None
        if diff_ids is not None:
            diff_ids.append(diff_id)
    return tree
