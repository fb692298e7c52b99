"""convert.dirsource: a directory read like ``nydus-image create`` (rafs-v6.md §9.5)."""

from __future__ import annotations

import hashlib
import os
import socket
import stat

import pytest

from convert.dirsource import read_directory
from rafs.errors import InvalidInput
from rafs.model import count_names, lookup, walk


class Collector:
    def __init__(self) -> None:
        self.files: list[bytes] = []

    def __call__(self, reader, size: int) -> list:
        parts = []
        while data := reader.read(1000):
            parts.append(data)
        data = b"".join(parts)
        assert len(data) == size
        self.files.append(data)
        return [hashlib.sha256(data).digest()]  # stands in for the chunk list


@pytest.fixture
def tree_dir(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "b").mkdir(mode=0o700)
    (root / "b" / "file").write_bytes(b"b-file")
    (root / "a.txt").write_bytes(b"A" * 5000)
    os.link(root / "a.txt", root / "b" / "hard")
    os.link(root / "a.txt", root / "z-hard")
    (root / "empty").write_bytes(b"")
    os.symlink("a.txt", root / "sym")
    os.mkfifo(root / "fifo", 0o640)
    os.mknod(root / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.chmod(root / "null", 0o666)  # past the umask
    os.mknod(root / "wh", stat.S_IFCHR, 0)  # an overlayfs whiteout stays an entry
    (root / ".wh.gone").write_bytes(b"")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "sock"))
    (root / "setuid").write_bytes(b"s")
    os.chmod(root / "setuid", 0o4755)
    os.chown(root / "b" / "file", 1234, 5678)
    os.setxattr(root / "b" / "file", "user.note", b"\x00binary\xff")
    os.setxattr(root / "b", "trusted.overlay.opaque", b"y")
    os.setxattr(root / "a.txt", "security.capability", b"\x01\x00\x00\x02" + bytes(16))
    os.utime(root / "a.txt", ns=(0, 1_600_000_000_123_456_789))
    os.utime(root, ns=(0, 1_700_000_000_000_000_000))
    return root


def test_directory_tree(tree_dir):
    collector = Collector()
    tree = read_directory(tree_dir, collector)
    assert [p for p, _ in walk(tree.root)] == [
        b"/",
        b"/.wh.gone",
        b"/a.txt",
        b"/b",
        b"/b/file",
        b"/b/hard",
        b"/empty",
        b"/fifo",
        b"/null",
        b"/setuid",
        b"/sock",
        b"/sym",
        b"/wh",
        b"/z-hard",
    ]
    get = lambda p: lookup(tree.root, p)  # noqa: E731
    root = tree.root
    assert root.mtime == 0 and root.mtime_nsec == 0 and not root.implicit  # §9.5
    assert root.mode == stat.S_IFDIR | (os.lstat(tree_dir).st_mode & 0o7777)
    a = get(b"a.txt")
    assert get(b"b/hard") is a and get(b"z-hard") is a and count_names(root)[id(a)] == 3
    assert a.size == 5000 and a.chunks == [hashlib.sha256(b"A" * 5000).digest()]
    assert (a.mtime, a.mtime_nsec) == (1_600_000_000, 123_456_789)
    assert a.xattrs == {b"security.capability": b"\x01\x00\x00\x02" + bytes(16)}
    f = get(b"b/file")
    assert (f.uid, f.gid) == (1234, 5678) and f.xattrs == {b"user.note": b"\x00binary\xff"}
    b = get(b"b")
    assert b.mode == stat.S_IFDIR | 0o700 and b.xattrs == {b"trusted.overlay.opaque": b"y"}
    assert stat.S_IFMT(get(b"sym").mode) == stat.S_IFLNK
    assert get(b"sym").target == b"a.txt"
    assert get(b"fifo").mode == stat.S_IFIFO | 0o640
    assert get(b"null").mode == stat.S_IFCHR | 0o666 and get(b"null").rdev == os.makedev(1, 3)
    assert get(b"wh").is_whiteout_device
    assert stat.S_ISSOCK(get(b"sock").mode) and get(b"sock").size == 0
    assert get(b".wh.gone").is_reg
    assert get(b"setuid").mode == stat.S_IFREG | 0o4755
    assert get(b"empty").size == 0 and not get(b"empty").chunks
    # Data is read once per inode, in build order (rafs-v6.md §15.1/§15.6): a directory's
    # files in byte order, then its sub-directories.
    assert collector.files == [b"A" * 5000, b"s", b"b-file"]
    assert tree.lower_links == []


def test_traversal_is_deterministic(tree_dir):
    first, second = Collector(), Collector()
    one, two = read_directory(tree_dir, first), read_directory(str(tree_dir).encode(), second)
    assert first.files == second.files
    summary = lambda t: [(p, n.mode, n.size, n.xattrs, n.target) for p, n in walk(t.root)]  # noqa: E731
    assert summary(one) == summary(two)


def test_non_utf8_names(tmp_path):
    root = os.fsencode(tmp_path)
    os.mkdir(root + b"/caf\xe9")
    with open(root + b"/caf\xe9/\xff", "wb") as f:
        f.write(b"x")
    tree = read_directory(tmp_path, Collector())
    assert [p for p, _ in walk(tree.root)] == [b"/", b"/caf\xe9", b"/caf\xe9/\xff"]


def test_dropped_xattr_namespaces_warn(tree_dir, monkeypatch):
    real_list, real_get = os.listxattr, os.getxattr

    def listxattr(path, follow_symlinks=True):
        names = real_list(path, follow_symlinks=follow_symlinks)
        return names + ["system.nfs4_acl"] if path.endswith(b"/b/file") else names

    def getxattr(path, name, follow_symlinks=True):
        assert name != "system.nfs4_acl"  # never even read
        return real_get(path, name, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(os, "listxattr", listxattr)
    monkeypatch.setattr(os, "getxattr", getxattr)
    warnings: list[str] = []
    tree = read_directory(tree_dir, Collector(), warnings)
    assert lookup(tree.root, b"b/file").xattrs == {b"user.note": b"\x00binary\xff"}
    assert len(warnings) == 1 and "system.nfs4_acl" in warnings[0] and "b/file" in warnings[0]


def test_missing_or_non_directory_source(tmp_path):
    with pytest.raises(InvalidInput, match="nope"):
        read_directory(tmp_path / "nope", Collector())
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(InvalidInput, match="not a directory"):
        read_directory(tmp_path / "file", Collector())


def test_unreadable_entries_name_the_path(tree_dir, monkeypatch):
    real_listdir = os.listdir

    def listdir(path):
        if path.endswith(b"/b"):
            raise PermissionError(13, "Permission denied")
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    with pytest.raises(InvalidInput, match="cannot read .*/b'.*Permission denied"):
        read_directory(tree_dir, Collector())


def test_file_shrinking_while_read_is_an_error(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 100)

    def truncate_then_read(reader, size):
        os.truncate(tmp_path / "f", 10)
        return [reader.read(size)]

    with pytest.raises(InvalidInput, match="shrank"):
        read_directory(tmp_path, truncate_then_read)
