"""Tree signatures for comparing filesystems from different readers.

A signature maps every path to the attributes all readers must agree on. Two sources are
compared with ``diff_signatures``, which lists differences as readable lines.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from rafs.model import Node, walk

# Fields compared per path; callers drop the ones a reader cannot show (e.g. fsck.erofs 1.5
# restores no xattrs, hard links or setuid bits).
FIELDS = ("type", "mode", "uid", "gid", "size", "mtime", "target", "rdev", "xattrs", "sha256")


def tree_signature(root: Node, content: Callable[[Node], bytes] | None = None) -> dict:
    """Signature of a model tree; ``content`` returns a regular file's bytes."""
    sig: dict[str, dict] = {}
    groups: dict[int, list[str]] = {}
    for raw, node in walk(root):
        path = raw.decode("utf-8", "surrogateescape")
        entry = {
            "type": stat.S_IFMT(node.mode),
            "mode": stat.S_IMODE(node.mode),
            "uid": node.uid,
            "gid": node.gid,
            "size": node.size if node.is_reg else None,
            "mtime": (node.mtime, node.mtime_nsec),
            "target": node.target if node.is_symlink else None,
            "rdev": (os.major(node.rdev), os.minor(node.rdev))
            if stat.S_ISCHR(node.mode) or stat.S_ISBLK(node.mode)
            else None,
            "xattrs": dict(sorted(node.xattrs.items())),
            "sha256": hashlib.sha256(content(node)).hexdigest()
            if content is not None and node.is_reg
            else None,
        }
        sig[path] = entry
        if not node.is_dir:
            groups.setdefault(id(node), []).append(path)
    _add_links(sig, groups.values())
    return sig


def fs_signature(top: Path, xattrs: bool = True) -> dict:
    """Signature of a real directory tree (an extraction or a mount)."""
    sig: dict[str, dict] = {}
    groups: dict[tuple[int, int], list[str]] = {}
    paths = [top]
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        paths += [Path(dirpath) / name for name in dirnames + sorted(filenames)]
    for full in paths:
        rel = "/" + str(full.relative_to(top)) if full != top else "/"
        st = os.lstat(full)
        sig[rel] = {
            "type": stat.S_IFMT(st.st_mode),
            "mode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
            "size": st.st_size if stat.S_ISREG(st.st_mode) else None,
            "mtime": (st.st_mtime_ns // 10**9, st.st_mtime_ns % 10**9),
            "target": os.fsencode(os.readlink(full)) if stat.S_ISLNK(st.st_mode) else None,
            "rdev": (os.major(st.st_rdev), os.minor(st.st_rdev))
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else None,
            "xattrs": _xattrs(full) if xattrs else {},
            "sha256": _sha256(full) if stat.S_ISREG(st.st_mode) else None,
        }
        if not stat.S_ISDIR(st.st_mode):
            groups.setdefault((st.st_dev, st.st_ino), []).append(rel)
    _add_links(sig, groups.values())
    return sig


def _add_links(sig: dict, groups) -> None:
    for names in groups:
        for name in names:
            sig[name]["links"] = tuple(sorted(names)) if len(names) > 1 else None


def _xattrs(path: Path) -> dict:
    names = os.listxattr(path, follow_symlinks=False)
    return {os.fsencode(n): os.getxattr(path, n, follow_symlinks=False) for n in sorted(names)}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def diff_signatures(a: dict, b: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    out = []
    for path in sorted(set(a) | set(b)):
        if path not in a or path not in b:
            out.append(f"{path}: only in {'first' if path in a else 'second'}")
            continue
        for key in sorted(set(a[path]) | set(b[path])):
            if key in ignore:
                continue
            if a[path].get(key) != b[path].get(key):
                out.append(f"{path}: {key} {a[path].get(key)!r} != {b[path].get(key)!r}")
    return out
