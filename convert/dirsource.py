"""Directory layer source: a local directory tree read like ``nydus-image create`` does.

Implements the directory-source rules of ../shared/spec/rafs-v6.md §9.5 (metadata from
``lstat``, root mtime forced to 0) and the xattr namespace rule of NOTES.md 3. It produces the
same ``LayerTree`` as ``rafs.tarstream.read_layer``: whiteout markers of any spec stay ordinary
entries (``rafs.overlay`` interprets them), names sharing an inode (same ``st_dev``/``st_ino``)
become one ``Node``, and regular files are streamed into ``add_file(reader, size)``.

Traversal follows the build order of rafs-v6.md §15.1 (a directory's entries in byte order,
its sub-directories after its other entries), so the order of ``add_file`` calls (and so
the blob) depends only on the tree's content. It lives in ``convert/`` because it opens paths.
"""

from __future__ import annotations

import errno
import os
import stat

from rafs.errors import InvalidInput
from rafs.model import LayerTree, Node
from rafs.tarstream import AddFile, keep_xattr

_READ_SIZE = 1 << 20


def read_directory(
    path: str | os.PathLike[str] | bytes, add_file: AddFile, warnings: list[str] | None = None
) -> LayerTree:
    """Build the tree of directory ``path``; ``warnings`` collects dropped xattrs."""
    top = os.fsencode(path)
    warn = warnings if warnings is not None else []
    st = _lstat(top)
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidInput(f"{_show(top)} is not a directory")
    root = _node(top, st, warn)
    root.mtime = root.mtime_nsec = 0  # rafs-v6.md §9.5: the builder zeroes the root's mtime
    inodes: dict[tuple[int, int], Node] = {}
    stack = [(top, root)]
    while stack:
        dirpath, dirnode = stack.pop()
        children: dict[bytes, Node] = dirnode.children  # type: ignore[assignment]  # a directory
        subdirs = []
        for name in sorted(_listdir(dirpath)):
            child_path = dirpath + b"/" + name
            st = _lstat(child_path)
            if stat.S_ISDIR(st.st_mode):
                node = _node(child_path, st, warn)
                subdirs.append((child_path, node))
            else:
                key = (st.st_dev, st.st_ino)
                shared = inodes.get(key) if st.st_nlink > 1 else None
                if shared is None:
                    shared = _node(child_path, st, warn)
                    if stat.S_ISREG(st.st_mode):
                        _read_file(child_path, shared, add_file)
                    if st.st_nlink > 1:
                        inodes[key] = shared
                node = shared
            children[name] = node
        # Reversed so that the stack pops them in byte order (depth-first, pre-order).
        stack.extend(reversed(subdirs))
    return LayerTree(root)


def _show(path: bytes) -> str:
    return repr(os.fsdecode(path))


def _fail(path: bytes, exc: OSError) -> InvalidInput:
    return InvalidInput(f"cannot read {_show(path)}: {exc.strerror or exc}")


def _lstat(path: bytes) -> os.stat_result:
    try:
        return os.lstat(path)
    except OSError as exc:
        raise _fail(path, exc) from None


def _listdir(path: bytes) -> list[bytes]:
    try:
        return os.listdir(path)
    except OSError as exc:
        raise _fail(path, exc) from None


def _node(path: bytes, st: os.stat_result, warnings: list[str]) -> Node:
    sec, nsec = divmod(st.st_mtime_ns, 1_000_000_000)
    node = Node(
        mode=st.st_mode,
        uid=st.st_uid,
        gid=st.st_gid,
        mtime=max(sec, 0),
        mtime_nsec=nsec if sec >= 0 else 0,
        xattrs=_xattrs(path, warnings),
    )
    kind = stat.S_IFMT(st.st_mode)
    if kind == stat.S_IFDIR:
        node.children = {}
    elif kind == stat.S_IFLNK:
        try:
            node.target = os.readlink(path)
        except OSError as exc:
            raise _fail(path, exc) from None
    elif kind in (stat.S_IFCHR, stat.S_IFBLK):
        node.rdev = st.st_rdev
    return node


def _xattrs(path: bytes, warnings: list[str]) -> dict[bytes, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise _fail(path, exc) from None
    xattrs = {}
    for name in sorted(names):
        raw = os.fsencode(name)
        if not keep_xattr(raw):
            warnings.append(
                f"dropped xattr {name!r} of {_show(path)}: namespace not representable in RAFS"
            )
            continue
        try:
            xattrs[raw] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno == errno.ENODATA:  # removed since listxattr
                continue
            raise _fail(path, exc) from None
    return xattrs


class _FileReader:
    """Exactly ``size`` bytes of an open file: a file that shrinks while read is an error."""

    __slots__ = ("_file", "_left", "_path")

    def __init__(self, file, size: int, path: bytes) -> None:
        self._file = file
        self._left = size
        self._path = path

    def read(self, n: int = -1, /) -> bytes:
        if n is None or n < 0 or n > self._left:
            n = self._left
        parts = []
        while n:
            data = self._file.read(n)
            if not data:
                raise InvalidInput(f"{_show(self._path)} shrank while it was read")
            parts.append(data)
            n -= len(data)
            self._left -= len(data)
        return b"".join(parts)


def _read_file(path: bytes, node: Node, add_file: AddFile) -> None:
    try:
        file = open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb", buffering=0)
    except OSError as exc:
        raise _fail(path, exc) from None
    with file:
        try:
            st = os.fstat(file.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise InvalidInput(f"{_show(path)} changed type while it was read")
            # Size (and content) as of the open file, in case it changed since the lstat.
            node.size = st.st_size
            if st.st_size:
                node.chunks = add_file(_FileReader(file, st.st_size, path), st.st_size)
        except OSError as exc:
            raise _fail(path, exc) from None
