"""Path-by-path comparison of the source tree with the Nydus tree (image.md §17 filesystem rule).

Both sides are first brought to the same shape, ``absolute path -> Inode`` with hard links as
shared Inode objects (``reference.Inode``). Compared on every path, the root included: type,
permission bits (with setuid/setgid/sticky), uid, gid, size and content digest of regular
files, symlink target, device numbers, every xattr, and the hard-link group (the other names of
the same inode). mtime is not compared (neither does ``nydusify check``; layers' mtimes are
not part of what an image promises). One ``Difference`` per differing field; a type mismatch
hides the type-specific fields, a missing path hides everything else.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from convert.check.reference import Inode
from convert.check.report import Difference
from rafs.model import Node, walk

ABSENT = "(absent)"

_KINDS = {
    stat.S_IFDIR: "directory",
    stat.S_IFREG: "regular file",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "char device",
    stat.S_IFBLK: "block device",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


def view_of_bootstrap(root: Node, digests: Mapping[int, str]) -> dict[bytes, Inode]:
    """The Nydus tree as ``path -> Inode``; ``digests`` maps id(node) of regular files to
    ``sha256:<hex>`` (or to a reason the content could not be read)."""
    inodes: dict[int, Inode] = {}
    out: dict[bytes, Inode] = {}
    for path, node in walk(root):
        inode = inodes.get(id(node))
        if inode is None:
            inode = inodes[id(node)] = Inode(
                mode=node.mode,
                uid=node.uid,
                gid=node.gid,
                size=node.size if node.is_reg else 0,
                target=node.target,
                rdev=node.rdev,
                xattrs=dict(node.xattrs),
                digest=digests.get(id(node), "") if node.is_reg else "",
            )
        out[path] = inode
    return out


def _text(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace")


def _bytes(value: bytes) -> str:
    return repr(value)[2:-1]


def _rdev(value: int) -> str:
    return f"{os.major(value)}:{os.minor(value)}"


def _groups(tree: Mapping[bytes, Inode]) -> dict[int, list[bytes]]:
    groups: dict[int, list[bytes]] = {}
    for path, inode in tree.items():
        if not inode.is_dir:
            groups.setdefault(id(inode), []).append(path)
    return groups


def compare_trees(source: Mapping[bytes, Inode], nydus: Mapping[bytes, Inode]) -> list[Difference]:
    """Every difference between the two trees, sorted by path."""
    src_groups, dst_groups = _groups(source), _groups(nydus)
    out: list[Difference] = []
    for path in sorted(source.keys() | nydus.keys()):
        s, n = source.get(path), nydus.get(path)
        where = _text(path)

        def diff(what: str, a: object, b: object, where: str = where) -> None:
            out.append(Difference(where, what, str(a), str(b)))

        if s is None or n is None:
            diff("exists", "yes" if s else "no", "yes" if n else "no")
            continue
        kind_s, kind_n = stat.S_IFMT(s.mode), stat.S_IFMT(n.mode)
        if kind_s != kind_n:
            diff("type", _KINDS.get(kind_s, oct(kind_s)), _KINDS.get(kind_n, oct(kind_n)))
            continue
        if stat.S_IMODE(s.mode) != stat.S_IMODE(n.mode):
            diff("mode", f"{stat.S_IMODE(s.mode):04o}", f"{stat.S_IMODE(n.mode):04o}")
        if s.uid != n.uid:
            diff("uid", s.uid, n.uid)
        if s.gid != n.gid:
            diff("gid", s.gid, n.gid)
        if kind_s == stat.S_IFREG:
            if s.size != n.size:
                diff("size", s.size, n.size)
            if s.digest != n.digest:
                diff("content", s.digest or "(unknown)", n.digest or "(unknown)")
        elif kind_s == stat.S_IFLNK and s.target != n.target:
            diff("target", _bytes(s.target), _bytes(n.target))
        elif kind_s in (stat.S_IFCHR, stat.S_IFBLK) and s.rdev != n.rdev:
            diff("rdev", _rdev(s.rdev), _rdev(n.rdev))
        for name in sorted(s.xattrs.keys() | n.xattrs.keys()):
            a, b = s.xattrs.get(name), n.xattrs.get(name)
            if a != b:
                diff(
                    f"xattr {_bytes(name)}",
                    ABSENT if a is None else _bytes(a),
                    ABSENT if b is None else _bytes(b),
                )
        if kind_s != stat.S_IFDIR:
            others_s = sorted(p for p in src_groups[id(s)] if p != path)
            others_n = sorted(p for p in dst_groups[id(n)] if p != path)
            if others_s != others_n:
                diff("hardlinks", _names(others_s), _names(others_n))
    return out


def _names(paths: list[bytes]) -> str:
    return "[" + ", ".join(_text(p) for p in paths) + "]"
