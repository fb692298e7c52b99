"""Tree builder: turns the entries of an (uncompressed) layer tar into a ``LayerTree``.

Implements ../shared/spec/image.md §15.2 rules 2, 5, 6, 8 and 9 (paths made relative and
cleaned, xattr namespaces, entry types, duplicates, implicit parents), §15.5 (implicit and root
directories) and §15.6 (hard links inside a layer), rafs-v5.md §15 (building the tree from a tar
stream, with the upstream defects fixed) and NOTES.md items 3 (xattr namespaces) and 9
(whiteouts beneath a file of the same layer). Whiteout markers stay ordinary entries;
``rafs.overlay`` interprets them. The entries come from ``rafs.tarheaders`` (header parsing,
PAX/GNU extensions, sparse files).

File data is never buffered: each regular file is handed to ``add_file(reader, size)`` as a
reader bounded to that entry (sparse files as their dense expansion, holes generated on the fly).
The reader's ``read(n)`` returns exactly ``min(n, remaining)`` bytes and raises InvalidInput if
the stream ends early. Whatever the callback leaves unread is skipped.

Semantics worth knowing (each is a choice of the spec, see the sections above):
* duplicate path: the later entry wins; a directory entry on an existing directory replaces only
  its metadata; ``./`` replaces the root's metadata;
* a missing parent becomes an implicit 0755 root:root directory; a non-directory in the way of
  a later entry's parent is replaced by one (the overlay rule for lower layers, image.md §15.4),
  except for whiteout markers, which are dropped there: the non-directory already hides
  everything below it (NOTES.md 9: a tool may emit a file, then whiteouts beneath it);
* a hard link to an entry earlier in the layer shares its ``Node`` (any non-directory type),
  and the link entry's metadata is applied to it as containerd's applier does (its
  createTarFile ends every entry, links included, with lchown, setxattr, lchmod and chtimes on
  the path, which is the shared inode): owner, permission bits (not on symlinks: Linux has no
  lchmod), mtime, and the link's xattrs added. Tar writers repeat the target's values in link
  entries, so this matters for hand-made tars only;
* a hard link whose target is not in the layer is reported in ``lower_links`` (absolute paths)
  and keeps the target's metadata (containerd cannot apply such a link at all, image.md §15.6);
* numbers that do not fit (negative mtimes) are clamped to 0 like containerd's ``boundTime``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from rafs.errors import InvalidInput
from rafs.model import FILE_TYPE_MASK, NO_XATTRS, Chunk, LayerTree, Node, new_dir, new_root
from rafs.streams import Readable
from rafs.tarheaders import (
    AREGTYPE,
    BLKTYPE,
    CHRTYPE,
    CONTTYPE,
    DIRTYPE,
    FIFOTYPE,
    GNUTYPE_SPARSE,
    LNKTYPE,
    REGTYPE,
    SYMTYPE,
    Budget,
    TarReader,
)
from rafs.tarheaders import show_path as _show

# Namespaces RAFS can encode (rafs-v6.md §10); anything else is dropped with a warning.
_XATTR_PREFIXES = (b"user.", b"trusted.", b"security.")
_XATTR_NAMES = (b"system.posix_acl_access", b"system.posix_acl_default")

_KIND = {
    REGTYPE: stat.S_IFREG,
    AREGTYPE: stat.S_IFREG,
    CONTTYPE: stat.S_IFREG,
    GNUTYPE_SPARSE: stat.S_IFREG,
    SYMTYPE: stat.S_IFLNK,
    CHRTYPE: stat.S_IFCHR,
    BLKTYPE: stat.S_IFBLK,
    DIRTYPE: stat.S_IFDIR,
    FIFOTYPE: stat.S_IFIFO,
}

_S_IFREG, _S_IFDIR, _S_IFLNK = stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK

AddFile = Callable[[Readable, int], list[Chunk]]


def keep_xattr(name: bytes) -> bool:
    """True for the xattr namespaces RAFS can store (rafs-v6.md §10, NOTES.md 3)."""
    return name.startswith(_XATTR_PREFIXES) or name in _XATTR_NAMES


def read_layer(
    stream: Readable,
    add_file: AddFile,
    warnings: list[str] | None = None,
    max_file_bytes: int | None = None,
) -> LayerTree:
    """Read one layer tar from ``stream`` (see the module docstring for the rules).

    ``warnings`` collects one line per dropped xattr (NOTES.md 3); the caller adds image and
    layer names. The stream is read to its end, so a wrapping codec verifies its trailer.
    ``max_file_bytes`` bounds the total size of the regular files, sparse files counted
    expanded: a few bytes of tar can declare a sparse file of any size, which a limit on the
    decompressed stream does not see.
    """
    entries = TarReader(stream, Budget(max_file_bytes))
    tree = _TreeBuilder(warnings if warnings is not None else [])
    _build(entries, tree, add_file)
    entries.drain()
    return tree.result()


def _split(path: bytes, shown: bytes) -> list[bytes]:
    """Normalised components: relative, ``.``/empty dropped, ``..`` resolved without escaping."""
    parts = path.split(b"/")
    if b"" in parts or b"." in parts:  # (no list comprehension for names already clean)
        parts = [p for p in parts if p and p != b"."]
    if b".." in parts:
        resolved: list[bytes] = []
        for part in parts:
            if part != b"..":
                resolved.append(part)
            elif resolved:
                resolved.pop()
            else:
                raise InvalidInput(f"tar entry {_show(shown)} escapes the layer root")
        parts = resolved
    if len(path) > 255 and any(len(p) > 255 for p in parts):
        raise InvalidInput(f"tar entry {_show(shown)} has a name longer than 255 bytes")
    return parts


# --------------------------------------------------------------------------- tree building


_MAX_SYMLINK_HOPS = 40  # Linux's limit before ELOOP


def _resolve(base: list[bytes], target: bytes) -> list[bytes]:
    """A symlink target as root-relative components, clamped at the root (fs.RootPath)."""
    out = [] if target.startswith(b"/") else list(base)
    for part in target.split(b"/"):
        if part in (b"", b"."):
            continue
        if part == b"..":
            if out:
                out.pop()
            continue
        out.append(part)
    return out


class _TreeBuilder:
    """Applies entries to the layer's tree in stream order."""

    __slots__ = ("root", "warnings", "_pending", "_last_dir", "_last_node")

    def __init__(self, warnings: list[str]) -> None:
        self.root = new_root()
        self.warnings = warnings
        # Hard links to targets outside this layer: link key -> (target key, parent dir).
        self._pending: dict[bytes, tuple[bytes, Node]] = {}
        # The directory ``parent`` found last and its components: tars list a directory's
        # entries together, so most entries skip the walk from the root. Every component is
        # a directory, and an entry replacing one of them is not in the remembered directory:
        # its own lookup misses, walks, and remembers its parent instead.
        self._last_dir: list[bytes] | None = None
        self._last_node = self.root

    def parent(self, parts: list[bytes], marker: bool = False) -> Node | None:
        """The directory an entry goes into, creating implicit parents on the way.

        A parent that is a symlink written earlier in this layer is followed inside the
        layer's root, as containerd's applier resolves paths (fs.RootPath: absolute targets
        and ``..`` cannot leave the root); ``parts`` is rewritten in place to the resolved
        path. Symlinks of lower layers are not in this tree and so are never followed.
        None for a whiteout marker below a non-directory of this layer: that non-directory
        already hides everything below it, so the marker has no effect (NOTES.md 9).
        """
        last = self._last_dir
        if last is not None and len(parts) == len(last) + 1 and parts[:-1] == last:
            return self._last_node
        hops = 0
        node = self.root
        depth = 0
        while depth < len(parts) - 1:
            name = parts[depth]
            child = node.children.get(name)  # type: ignore[union-attr]
            if child is not None and child.children is None and child.is_symlink:
                hops += 1
                if hops > _MAX_SYMLINK_HOPS:
                    raise InvalidInput(
                        f"too many levels of symbolic links in {_show(b'/'.join(parts))}"
                    )
                parts[:] = _resolve(parts[:depth], child.target) + parts[depth + 1 :]
                node, depth = self.root, 0
                continue
            if child is None or child.children is None:
                key = b"/".join(parts[: depth + 1]) if self._pending else None
                if marker and (child is not None or key in self._pending):
                    return None
                # Missing (or a non-directory in the way): an implicit directory.
                child = new_dir(0o755, implicit=True)
                node.children[name] = child  # type: ignore[index]
                if key is not None:
                    self._pending.pop(key, None)
            node = child
            depth += 1
        self._last_dir, self._last_node = parts[:-1], node
        return node

    def add(self, parts: list[bytes], node: Node) -> None:
        if not parts:
            if node.children is None:
                raise InvalidInput("tar entry for the layer root is not a directory")
            self.root.copy_meta_from(node)
            return
        name = parts[-1]
        marker = name.startswith(b".wh.") or node.is_whiteout_device
        parent = self.parent(parts, marker)
        if parent is None:
            return
        old = parent.children.get(name)  # type: ignore[union-attr]
        if old is not None and old.children is not None and node.children is not None:
            old.copy_meta_from(node)
        else:
            parent.children[name] = node  # type: ignore[index]
        if self._pending:
            self._pending.pop(b"/".join(parts), None)

    def link(self, parts: list[bytes], target: list[bytes], path: bytes, meta: Node) -> None:
        """``path`` names the inode ``target`` names; ``meta`` holds the link entry's metadata."""
        node: Node | None = self.root
        for name in target:
            node = node.children.get(name) if node.children is not None else None  # type: ignore[union-attr]
            if node is None:
                break
        if node is None:
            self._link_lower(parts, b"/".join(target), path)
            return
        if node.children is not None:
            raise InvalidInput(
                f"hard link {_show(path)} points at directory {_show(b'/'.join(target))}"
            )
        if not parts:
            raise InvalidInput("tar entry for the layer root is not a directory")
        if not node.is_symlink:
            node.mode = (node.mode & FILE_TYPE_MASK) | (meta.mode & 0o7777)
        node.uid, node.gid = meta.uid, meta.gid
        node.mtime, node.mtime_nsec = meta.mtime, meta.mtime_nsec
        if meta.xattrs:
            node.xattrs = {**node.xattrs, **meta.xattrs}
        self.add(parts, node)

    def _link_lower(self, parts: list[bytes], target: bytes, path: bytes) -> None:
        if not parts:
            raise InvalidInput("tar entry for the layer root is not a directory")
        target = self._pending.get(target, (target, None))[0]  # link to a link below
        parent = self.parent(parts)
        assert parent is not None
        parent.children.pop(parts[-1], None)  # type: ignore[union-attr]
        key = b"/".join(parts)
        self._pending.pop(key, None)  # re-insert: keep stream order of the last one
        self._pending[key] = (target, parent)

    def kept_xattrs(self, xattrs: dict[bytes, bytes], path: bytes) -> dict[bytes, bytes]:
        """The xattrs RAFS can store; a warning for each of the others (NOTES.md 3)."""
        for name in xattrs:
            if not keep_xattr(name):
                break
        else:
            return xattrs  # the common case: all kept, the entry's dict is handed over
        kept = {}
        for name, value in xattrs.items():
            if keep_xattr(name):
                kept[name] = value
            else:
                self.warnings.append(
                    f"dropped xattr {_show(name)} of {_show(path)}: namespace not representable"
                    " in RAFS"
                )
        return kept

    def result(self) -> LayerTree:
        links = []
        for key, (target, parent) in self._pending.items():
            # Only links whose directory is still the one they were created in survive.
            node: Node | None = self.root
            for name in key.split(b"/")[:-1]:
                node = node.children.get(name) if node and node.children is not None else None
            if node is parent:
                links.append((b"/" + key, b"/" + target))
        return LayerTree(self.root, links)


# --------------------------------------------------------------------------- the builder


def _build(entries: TarReader, tree: _TreeBuilder, add_file: AddFile) -> None:
    """Apply the entries in stream order."""
    data_of = entries.data
    kinds = _KIND
    for entry in entries:
        # Unpacked in one step: cheaper than nine attribute reads on this per-entry path.
        name, link, flag, mode, uid, gid, mtime, nsec, _, pax_xattrs, _, _ = entry
        xattrs = NO_XATTRS if pax_xattrs is None else tree.kept_xattrs(pax_xattrs, name)
        parts = _split(name, name)
        if flag == LNKTYPE:
            meta = Node(mode, uid, gid, mtime, nsec, xattrs)
            tree.link(parts, _split(link, link), name, meta)
            continue
        kind = kinds.get(flag)
        if kind is None:
            raise InvalidInput(f"tar entry {_show(name)} has unsupported type {chr(flag)!r}")
        mode = kind | (mode & 0o7777)  # not S_IMODE: a base-256 field may not fit mode_t
        if kind == _S_IFREG:
            data = data_of(entry)
            size = data.size
            # Positional, with the xattrs and chunks given: the dataclass's default factories
            # would cost two more calls per file.
            node = Node(
                mode, uid, gid, mtime, nsec, xattrs, size, add_file(data, size) if size else ()
            )
        elif kind == _S_IFDIR:
            node = Node(mode, uid, gid, mtime, nsec, xattrs, children={})
        elif kind == _S_IFLNK:
            # Linux has no lchmod: an unpacked symlink is always 0777 whatever the header says.
            node = Node(_S_IFLNK | 0o777, uid, gid, mtime, nsec, xattrs, target=link)
        elif kind == stat.S_IFIFO:
            node = Node(mode, uid, gid, mtime, nsec, xattrs)
        else:
            major, minor = entry.device()
            # The kernel's dev_t has a 12-bit major and a 20-bit minor; mknod refuses more, and
            # the bootstraps' 32-bit rdev fields would silently keep other numbers.
            if not (0 <= major <= 0xFFF and 0 <= minor <= 0xFFFFF):
                raise InvalidInput(f"bad device number {major}:{minor} in tar entry {_show(name)}")
            node = Node(mode, uid, gid, mtime, nsec, xattrs, rdev=os.makedev(major, minor))
        tree.add(parts, node)
