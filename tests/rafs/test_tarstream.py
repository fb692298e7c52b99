"""rafs.tarstream: tar layers into LayerTrees (image.md §15.2, §15.6; NOTES.md 3, 9).

Tars come from the upstream fixtures, from Python's tarfile (writing only) and from a small
hand-made header builder for what tarfile cannot write (sparse maps, binary PAX values, bad
checksums, missing end blocks, base-256 numbers on demand).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile

import pytest
import zstandard

from rafs.errors import InvalidInput
from rafs.layerstream import open_layer
from rafs.model import BlobInfo, Chunk, count_names, lookup, walk
from rafs.tarstream import read_layer
from tests.tarmaker import END, entry, header, octal, pad, pax

# --------------------------------------------------------------------------- helpers


class Collector:
    """Test add_file: records (size, content) and returns one fake chunk with the sha256."""

    def __init__(self, read_size: int = 4096) -> None:
        self.files: list[bytes] = []
        self.read_size = read_size
        self.blob = BlobInfo()

    def __call__(self, reader, size: int) -> list[Chunk]:
        parts = []
        while data := reader.read(self.read_size):
            parts.append(data)
        data = b"".join(parts)
        assert len(data) == size
        self.files.append(data)
        digest = hashlib.sha256(data).digest()
        return [Chunk(self.blob, len(self.files) - 1, digest, 0, size, 0, size, False)]


def content(node) -> bytes:
    """The sha256 recorded by Collector for a regular file."""
    return node.chunks[0].digest if node.chunks else hashlib.sha256(b"").digest()


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def read(data: bytes, collector: Collector | None = None, warnings=None):
    return read_layer(io.BytesIO(data), collector or Collector(), warnings)


def names(tree) -> list[bytes]:
    return [path for path, _ in walk(tree.root)]


def make_tar(members, fmt=tarfile.PAX_FORMAT, **kw) -> bytes:
    """members: (TarInfo, data or None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, **kw) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def info(name: str, kind=tarfile.REGTYPE, **attrs) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = attrs.pop("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
    ti.mtime = attrs.pop("mtime", 1_700_000_000)
    for key, value in attrs.items():
        setattr(ti, key, value)
    return ti


# --------------------------------------------------------------------------- upstream fixtures


def test_all_entry_type_fixture(upstream):
    collector = Collector()
    with open(upstream / "tar" / "all-entry-type.tar", "rb") as raw:
        tree = read_layer(open_layer(raw), collector)
    assert names(tree) == [
        b"/",
        b"/tar",
        b"/tar/dir1",
        b"/tar/dir1/dir3",
        b"/tar/dir1/dir3/hardlink1.txt",
        b"/tar/dir1/dir3/xfile.txt",
        b"/tar/dir1/hardlink2.txt",
        b"/tar/dir2",
        b"/tar/dir2/hardlink3.txt",
        b"/tar/dir2/symlink1.txt",
    ]
    assert collector.files == [b"This is a test\n"]  # the data is read once
    group = [
        lookup(tree.root, p)
        for p in (
            b"tar/dir1/dir3/hardlink1.txt",
            b"tar/dir1/dir3/xfile.txt",
            b"tar/dir1/hardlink2.txt",
            b"tar/dir2/hardlink3.txt",
        )
    ]
    assert all(node is group[0] for node in group)
    assert count_names(tree.root)[id(group[0])] == 4
    f = group[0]
    assert (f.mode, f.size, f.uid, f.gid, f.mtime) == (0o100644, 15, 0, 0, 1665584430)
    assert content(f) == sha(b"This is a test\n")
    link = lookup(tree.root, b"tar/dir2/symlink1.txt")
    assert link.mode == 0o120777 and link.target == b"../dir1/dir3/file1.txt"
    assert lookup(tree.root, b"tar/dir1/dir3").mtime == 1665597453
    assert tree.root.implicit and tree.root.mtime == 0 and tree.root.mode == 0o40755
    assert tree.lower_links == []


def test_all_entry_type_macos_fixture(upstream):
    warnings: list[str] = []
    collector = Collector()
    with open(upstream / "tar" / "all-entry-type-macos.tar", "rb") as raw:
        tree = read_layer(open_layer(raw), collector, warnings)
    long_name = b"this_is_really_a_very_long_name_to_test_tar_entry_type_" + b"a" * 196 + b".txt"
    assert len(long_name) == 255
    node = lookup(tree.root, b"tar/dir1/dir3/" + long_name)
    assert node.size == 10 and (node.mtime, node.mtime_nsec) == (1665628806, 117332458)
    group = lookup(tree.root, b"tar/dir1/hardlink2.txt")
    for path in (
        b"tar/dir1/dir3/xfile.txt",
        b"tar/dir1/dir3/hardlink1.txt",
        b"tar/dir2/hardlink3.txt",
    ):
        assert lookup(tree.root, path) is group
    assert count_names(tree.root)[id(group)] == 4
    assert (group.uid, group.gid, group.mtime, group.mtime_nsec) == (502, 20, 1665584430, 393557573)
    assert lookup(tree.root, b"tar/dir1/dir3").mtime_nsec == 107725102
    assert lookup(tree.root, b"tar/dir2/symlink1.txt").mtime_nsec == 476810967
    assert lookup(tree.root, b"tar/dir1/._dir3").size == 141  # AppleDouble files are plain files
    # No namespace: dropped with one warning per entry; LIBARCHIVE.xattr.* ignored silently.
    assert all(not n.xattrs for _, n in walk(tree.root))
    assert len(warnings) == 6
    assert sum("'dir'" in w and "tar/dir1/dir3" in w for w in warnings) == 1
    assert sum("'symlink'" in w for w in warnings) == 1
    assert sum("'hardlink3'" in w for w in warnings) == 4


def test_empty_fixture(upstream):
    with open(upstream / "tar" / "empty.tar", "rb") as raw:
        tree = read_layer(open_layer(raw), Collector())
    assert names(tree) == [b"/"] and tree.root.children == {} and tree.lower_links == []


# --------------------------------------------------------------------------- entry types


def test_every_entry_type():
    collector = Collector()
    data = make_tar(
        [
            (info("d", tarfile.DIRTYPE, mode=0o1777, uid=7, gid=8), None),
            (info("d/file", mode=0o4755, uid=1000, gid=1001), b"hello"),
            (info("d/empty"), b""),
            (info("d/sym", tarfile.SYMTYPE, linkname="file"), None),
            (
                info("d/hard", tarfile.LNKTYPE, linkname="d/file", mode=0o4755, uid=1000, gid=1001),
                None,
            ),
            (info("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666), None),
            (info("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0, mode=0o660), None),
            (info("run/fifo", tarfile.FIFOTYPE, mode=0o600), None),
            (info("d/sgid", mode=0o2711), b"x"),
        ]
    )
    tree = read(data, collector)
    get = lambda p: lookup(tree.root, p)  # noqa: E731
    d = get(b"d")
    assert d.mode == stat.S_IFDIR | 0o1777 and (d.uid, d.gid) == (7, 8) and not d.implicit
    f = get(b"d/file")
    assert f.mode == stat.S_IFREG | 0o4755 and (f.uid, f.gid) == (1000, 1001)
    assert f.size == 5 and content(f) == sha(b"hello") and f.mtime == 1_700_000_000
    assert get(b"d/hard") is f
    assert get(b"d/empty").size == 0 and not get(b"d/empty").chunks
    assert get(b"d/sym").mode == stat.S_IFLNK | 0o777 and get(b"d/sym").target == b"file"
    assert get(b"dev/null").mode == stat.S_IFCHR | 0o666
    assert get(b"dev/null").rdev == os.makedev(1, 3)
    assert get(b"dev/sda").mode == stat.S_IFBLK | 0o660
    assert get(b"dev/sda").rdev == os.makedev(8, 0)
    assert get(b"run/fifo").mode == stat.S_IFIFO | 0o600 and get(b"run/fifo").rdev == 0
    assert get(b"d/sgid").mode == stat.S_IFREG | 0o2711
    assert get(b"dev").implicit and get(b"dev").mode == stat.S_IFDIR | 0o755
    assert collector.files == [b"hello", b"x"]  # empty files never reach add_file


def test_contiguous_and_old_regular_types():
    data = entry(b"a", b"one", flag=b"7") + entry(b"b", b"two", flag=b"\0")
    data += entry(b"olddir/", flag=b"\0", mode=0o700) + END
    tree = read(data)
    assert content(lookup(tree.root, b"a")) == sha(b"one")
    assert lookup(tree.root, b"b").mode == stat.S_IFREG | 0o644
    assert lookup(tree.root, b"olddir").mode == stat.S_IFDIR | 0o700  # v7 trailing slash


def test_unknown_type_names_the_path():
    with pytest.raises(InvalidInput, match="'weird/entry'.*'V'"):
        read(entry(b"weird/entry", flag=b"V") + END)


def test_mode_type_bits_in_header_are_ignored():
    tree = read(entry(b"f", b"x", mode=0o100644) + entry(b"d", flag=b"5", mode=0o40700) + END)
    assert lookup(tree.root, b"f").mode == 0o100644
    assert lookup(tree.root, b"d").mode == 0o40700


def test_non_utf8_names_are_kept_as_bytes():
    tree = read(entry(b"caf\xe9/\xff\xfe", b"x") + END)
    assert names(tree) == [b"/", b"/caf\xe9", b"/caf\xe9/\xff\xfe"]


# --------------------------------------------------------------------------- PAX and GNU


def test_pax_long_names_big_ids_and_nsec_mtime():
    long_dir = "d" * 120
    long_file = "f" * 255
    ti = info(f"{long_dir}/{long_file}", uid=3_000_000, gid=4_000_000)
    ti.pax_headers = {"mtime": "1700000000.123456789"}
    target = info("sym", tarfile.SYMTYPE, linkname="/" + "t" * 200)
    tree = read(make_tar([(ti, b"data"), (target, None)]))
    node = lookup(tree.root, f"{long_dir}/{long_file}".encode())
    assert (node.uid, node.gid) == (3_000_000, 4_000_000)
    assert (node.mtime, node.mtime_nsec) == (1_700_000_000, 123_456_789)
    assert lookup(tree.root, b"sym").target == b"/" + b"t" * 200
    assert lookup(tree.root, long_dir.encode()).implicit


def test_pax_mtime_forms():
    def mtime_of(value: bytes):
        tree = read(pax([(b"mtime", value)]) + entry(b"f") + END)
        node = lookup(tree.root, b"f")
        return node.mtime, node.mtime_nsec

    assert mtime_of(b"12.5") == (12, 500_000_000)
    assert mtime_of(b"12.0000000019") == (12, 1)  # truncated to nanoseconds
    assert mtime_of(b"77") == (77, 0)
    assert mtime_of(b"-3.5") == (0, 0)  # before 1970: clamped
    with pytest.raises(InvalidInput, match="mtime"):
        mtime_of(b"12.x")


def test_pax_xattrs_namespaces_and_binary_values():
    cap = b"\x01\x00\x00\x02\x00\x20\x00\x00" + bytes(12)
    acl = b"\x02\x00\x00\x00\x01\x00\x06\x00\xff\xff\xff\xff\x04\x00\x04\x00\xff\xff\xff\xff"
    records = [
        (b"SCHILY.xattr.security.capability", cap),
        (b"SCHILY.xattr.user.comment", b"multi\nline=value"),
        (b"SCHILY.xattr.trusted.overlay.opaque", b"y"),
        (b"SCHILY.xattr.system.posix_acl_access", acl),
        (b"SCHILY.xattr.system.posix_acl_default", acl),
        (b"SCHILY.xattr.system.nfs4_acl", b"x"),
        (b"SCHILY.xattr.com.apple.quarantine", b"q"),
        (b"SCHILY.acl.access", b"user::rw-"),
        (b"LIBARCHIVE.xattr.user.other", b"dmFsdWU"),
        (b"SCHILY.xattr.user.empty", b""),
    ]
    warnings: list[str] = []
    tree = read(pax(records) + entry(b"bin/ping", b"elf"), warnings=warnings)
    node = lookup(tree.root, b"bin/ping")
    assert node.xattrs == {
        b"security.capability": cap,
        b"user.comment": b"multi\nline=value",
        b"trusted.overlay.opaque": b"y",
        b"system.posix_acl_access": acl,
        b"system.posix_acl_default": acl,
        b"user.empty": b"",
    }
    assert len(warnings) == 2
    assert "system.nfs4_acl" in warnings[0] and "bin/ping" in warnings[0]
    assert "com.apple.quarantine" in warnings[1]


def test_xattr_warning_of_a_sparse_file_names_its_real_path():
    # The records before the GNU.sparse ones once named the GNUSparseFile placeholder.
    records = [
        (b"SCHILY.xattr.system.x", b"1"),
        (b"GNU.sparse.major", b"0"),
        (b"GNU.sparse.minor", b"1"),
        (b"GNU.sparse.name", b"real/file"),
        (b"GNU.sparse.size", b"4"),
        (b"GNU.sparse.map", b"0,2"),
        (b"SCHILY.xattr.system.y", b"2"),
    ]
    warnings: list[str] = []
    tree = read(pax(records) + entry(b"GNUSparseFile.0/file", b"ab") + END, warnings=warnings)
    assert lookup(tree.root, b"real/file").size == 4
    assert len(warnings) == 2 and all("'real/file'" in w for w in warnings)


def test_pax_applies_to_next_entry_only_and_across_gnu_headers():
    long = b"l" * 150
    data = pax([(b"uid", b"42"), (b"path", b"from/pax")])
    data += entry(b"././@LongLink", long + b"\0", flag=b"L")  # PAX path wins over GNU name
    data += entry(b"short", b"a") + entry(b"next", b"b") + END
    tree = read(data)
    assert lookup(tree.root, b"from/pax").uid == 42
    assert lookup(tree.root, b"next").uid == 0
    assert lookup(tree.root, long) is None


def test_pax_value_with_newline_and_malformed_records():
    tree = read(pax([(b"linkpath", b"a\n22 linkpath=/etc/evil\n")]) + entry(b"s", flag=b"2") + END)
    assert lookup(tree.root, b"s").target == b"a\n22 linkpath=/etc/evil\n"
    bad_bodies = [
        b"12 path=a\n",  # length past the end of the body
        b"x path=a\n",  # no decimal length
        b"12 patha-b\n",  # no '='
        b"11 path=ab\0",  # no trailing newline
    ]
    for body in bad_bodies:
        with pytest.raises(InvalidInput, match="malformed PAX record"):
            read(entry(b"PaxHeader", body, flag=b"x") + entry(b"f") + END)


def test_pax_size_overrides_header():
    data = pax([(b"size", b"3")]) + header(b"f", size=0) + pad(b"abc") + END
    tree = read(data)
    assert content(lookup(tree.root, b"f")) == sha(b"abc")


def test_global_header_is_ignored():
    data = make_tar(
        [(info("a"), b"1")], pax_headers={"path": "global-name", "uid": "99", "comment": "x"}
    )
    assert data[156:157] == b"g"
    tree = read(data)
    assert names(tree) == [b"/", b"/a"] and lookup(tree.root, b"a").uid == 0


def test_gnu_long_names_and_base256_numbers():
    name = "n" * 150 + "/" + "m" * 120
    members = [
        (info(name, uid=3_000_000, gid=2**22), b"x"),
        (info("hl", tarfile.LNKTYPE, linkname=name, uid=3_000_000, gid=2**22), None),
        (info("sl", tarfile.SYMTYPE, linkname="t" * 300), None),
    ]
    data = make_tar(members, fmt=tarfile.GNU_FORMAT)
    assert b"././@LongLink" in data and data[1024 + 108] == 0x80  # base-256 uid
    tree = read(data)
    node = lookup(tree.root, name.encode())
    assert (node.uid, node.gid) == (3_000_000, 2**22)
    assert lookup(tree.root, b"hl") is node
    assert lookup(tree.root, b"sl").target == b"t" * 300
    # base-256 size, mtime and device numbers written by hand; a negative mtime is clamped.
    b256 = lambda v, n: b"\x80" + v.to_bytes(n - 1, "big")  # noqa: E731
    h = header(
        b"big",
        size=0,
        fields={124: b256(2, 12), 136: b256(2**40, 12), 108: b256(2**33, 8)},
    )
    h2 = header(b"old", fields={136: b"\xff" * 12})
    tree = read(h + pad(b"hi") + h2 + END)
    big = lookup(tree.root, b"big")
    assert content(big) == sha(b"hi") and big.mtime == 2**40 and big.uid == 2**33
    assert lookup(tree.root, b"old").mtime == 0


def test_octal_fields_with_spaces_and_full_width():
    h = header(
        b"f",
        size=0,
        fields={100: b"   644 \0", 108: b"     7 \0", 124: b"00000000003", 136: b"77777777777 "},
    )
    tree = read(h + pad(b"abc") + END)
    node = lookup(tree.root, b"f")
    assert node.mode == 0o100644 and node.uid == 7 and node.mtime == 0o77777777777
    h = header(b"g", size=0, fields={124: b"000000000003"})  # 12 digits, no terminator
    tree = read(h + pad(b"abc") + END)
    assert lookup(tree.root, b"g").size == 3
    with pytest.raises(InvalidInput, match="bad mode field"):
        read(header(b"h", fields={100: b"0000x44\0"}) + END)


# --------------------------------------------------------------------------- sparse files


SPARSE_SEGMENTS = [(0, 3), (4096, 5), (10000, 1), (20000, 2), (30000, 4), (40000, 6)]
SPARSE_SIZE = 65536


def sparse_dense() -> tuple[bytes, bytes]:
    dense = bytearray(SPARSE_SIZE)
    stored = b""
    for i, (offset, length) in enumerate(SPARSE_SEGMENTS):
        chunk = bytes([65 + i]) * length
        dense[offset : offset + length] = chunk
        stored += chunk
    return bytes(dense), stored


def test_old_gnu_sparse_with_extension_block():
    dense, stored = sparse_dense()
    slot = lambda o, n: octal(o, 12) + octal(n, 12)  # noqa: E731
    fields = {386 + 24 * i: slot(*SPARSE_SEGMENTS[i]) for i in range(4)}
    fields[482] = b"\x01"  # an extension block follows
    fields[483] = octal(SPARSE_SIZE, 12)
    h = header(b"sparse", b"S", size=len(stored), gnu=True, fields=fields)
    ext = bytearray(512)
    for i, seg in enumerate(SPARSE_SEGMENTS[4:]):
        ext[i * 24 : i * 24 + 24] = slot(*seg)
    collector = Collector(read_size=1000)
    tree = read(h + bytes(ext) + pad(stored) + entry(b"after", b"z") + END, collector)
    node = lookup(tree.root, b"sparse")
    assert node.mode == stat.S_IFREG | 0o644 and node.size == SPARSE_SIZE
    assert collector.files[0] == dense
    assert content(lookup(tree.root, b"after")) == sha(b"z")


@pytest.mark.parametrize("version", ["0.0", "0.1", "1.0"])
def test_pax_gnu_sparse(version):
    dense, stored = sparse_dense()
    name = b"./GNUSparseFile.0/sparse"
    flat = [str(v).encode() for seg in SPARSE_SEGMENTS for v in seg]
    if version == "0.0":
        records = [(b"GNU.sparse.size", b"%d" % SPARSE_SIZE), (b"GNU.sparse.numblocks", b"6")]
        for offset, length in SPARSE_SEGMENTS:
            records += [(b"GNU.sparse.offset", b"%d" % offset)]
            records += [(b"GNU.sparse.numbytes", b"%d" % length)]
        records += [(b"GNU.sparse.name", b"real/sparse")]
        data = stored
    elif version == "0.1":
        records = [
            (b"GNU.sparse.major", b"0"),
            (b"GNU.sparse.minor", b"1"),
            (b"GNU.sparse.name", b"real/sparse"),
            (b"GNU.sparse.size", b"%d" % SPARSE_SIZE),
            (b"GNU.sparse.numblocks", b"6"),
            (b"GNU.sparse.map", b",".join(flat)),
        ]
        data = stored
    else:
        records = [
            (b"GNU.sparse.major", b"1"),
            (b"GNU.sparse.minor", b"0"),
            (b"GNU.sparse.name", b"real/sparse"),
            (b"GNU.sparse.realsize", b"%d" % SPARSE_SIZE),
        ]
        data = pad(b"6\n" + b"\n".join(flat) + b"\n") + stored
    collector = Collector(read_size=7777)
    tar = pax(records) + entry(name, data) + entry(b"after", b"z") + END
    tree = read(tar, collector)
    assert names(tree) == [b"/", b"/after", b"/real", b"/real/sparse"]
    node = lookup(tree.root, b"real/sparse")
    assert node.size == SPARSE_SIZE and collector.files[0] == dense


def test_sparse_map_must_match_the_stored_data():
    records = [(b"GNU.sparse.map", b"0,10"), (b"GNU.sparse.size", b"100")]
    with pytest.raises(InvalidInput, match="does not match"):
        read(pax(records) + entry(b"s", b"abc") + END)
    records = [(b"GNU.sparse.map", b"0,10,5,10"), (b"GNU.sparse.size", b"100")]
    with pytest.raises(InvalidInput, match="malformed GNU sparse map"):
        read(pax(records) + entry(b"s", b"x" * 20) + END)


def test_file_bytes_limit_counts_sparse_files_expanded():
    records = [(b"GNU.sparse.map", b"0,3"), (b"GNU.sparse.size", b"5000")]
    tar = entry(b"plain", b"x" * 100) + pax(records) + entry(b"sparse", b"abc") + END
    tree = read_layer(io.BytesIO(tar), Collector(), None, 5100)  # exactly enough
    assert lookup(tree.root, b"sparse").size == 5000
    with pytest.raises(InvalidInput, match=r"'sparse' takes the layer's files beyond the "
                       r"configured limit \(a sparse file, counted expanded\)"):  # fmt: skip
        read_layer(io.BytesIO(tar), Collector(), None, 5099)
    with pytest.raises(InvalidInput, match="'plain' takes the layer's files beyond"):
        read_layer(io.BytesIO(tar), Collector(), None, 99)


# --------------------------------------------------------------------------- tree rules


def test_paths_are_normalised():
    data = entry(b"./a/", flag=b"5") + entry(b"/a//b", b"1") + entry(b"a/./c/../d", b"2")
    tree = read(data + END)
    assert names(tree) == [b"/", b"/a", b"/a/b", b"/a/d"]
    assert not lookup(tree.root, b"a").implicit


@pytest.mark.parametrize("name", [b"../etc/passwd", b"a/../../b", b"/.."])
def test_escaping_paths_are_rejected(name):
    with pytest.raises(InvalidInput, match="escapes"):
        read(entry(name, b"x") + END)


def test_escaping_link_target_is_rejected():
    with pytest.raises(InvalidInput, match="escapes"):
        read(entry(b"l", flag=b"1", link=b"../../x") + END)


def test_root_entry_replaces_root_metadata():
    tree = read(entry(b"./", flag=b"5", mode=0o700, uid=5, mtime=77) + entry(b"f", b"x") + END)
    root = tree.root
    assert (root.mode, root.uid, root.mtime, root.implicit) == (0o40700, 5, 77, False)
    assert list(root.children) == [b"f"]
    with pytest.raises(InvalidInput, match="root"):
        read(entry(b"/", b"x") + END)


def test_implicit_parents_go_in_the_right_directory():
    data = entry(b"b/", flag=b"5", mode=0o700, uid=3) + entry(b"b/x", b"bx")
    data += entry(b"a/y", b"ay")  # `a` is missing and sorts before the existing `b`
    data += entry(b"b/c/d", b"bcd")  # `b/c` missing under an explicit `b`
    tree = read(data + END)
    assert names(tree) == [b"/", b"/a", b"/a/y", b"/b", b"/b/c", b"/b/c/d", b"/b/x"]
    a, b, c = (lookup(tree.root, p) for p in (b"a", b"b", b"b/c"))
    assert a.implicit and (a.mode, a.uid, a.gid, a.mtime) == (0o40755, 0, 0, 0)
    assert not b.implicit and (b.mode, b.uid) == (0o40700, 3)  # not clobbered
    assert c.implicit


def test_explicit_dir_after_its_children_replaces_implicit_metadata():
    tree = read(entry(b"c/z", b"z") + entry(b"c/", flag=b"5", mode=0o750, mtime=9) + END)
    c = lookup(tree.root, b"c")
    assert not c.implicit and (c.mode, c.mtime) == (0o40750, 9)
    assert list(c.children) == [b"z"]


def test_duplicates_later_entry_wins():
    data = entry(b"f", b"old") + entry(b"f", b"new", mode=0o600)
    data += entry(b"d/", flag=b"5", mode=0o755) + entry(b"d/keep", b"k")
    data += entry(b"d/", flag=b"5", mode=0o711, uid=4)
    data += entry(b"x/", flag=b"5") + entry(b"x/child", b"c") + entry(b"x", b"file now")
    data += entry(b"y", b"file") + entry(b"y/", flag=b"5") + entry(b"y/inside", b"i")
    tree = read(data + END)
    f = lookup(tree.root, b"f")
    assert content(f) == sha(b"new") and f.mode == 0o100600
    d = lookup(tree.root, b"d")
    assert (d.mode, d.uid) == (0o40711, 4) and list(d.children) == [b"keep"]
    x = lookup(tree.root, b"x")
    assert x.is_reg and content(x) == sha(b"file now") and lookup(tree.root, b"x/child") is None
    y = lookup(tree.root, b"y")
    assert y.is_dir and list(y.children) == [b"inside"]


def test_non_directory_in_the_way_of_a_parent_is_replaced():
    tree = read(entry(b"p", b"file") + entry(b"p/q", b"q") + END)
    p = lookup(tree.root, b"p")
    assert p.is_dir and p.implicit and list(p.children) == [b"q"]


def test_entries_after_their_directory_was_replaced_go_where_the_path_now_leads():
    # The builder remembers the directory it found last: an entry replacing a directory on
    # that path (by a symlink, a file, a hard link to a lower layer) must not leave the next
    # entries in the directory it replaced.
    data = entry(b"a/", flag=b"5") + entry(b"a/one", b"1") + entry(b"b/", flag=b"5")
    data += entry(b"a", flag=b"2", link=b"b") + entry(b"a/two", b"2")
    data += entry(b"c/d/", flag=b"5") + entry(b"c/d/one", b"1") + entry(b"c/d", b"file")
    data += entry(b"c/d/two", b"2")
    data += entry(b"e/", flag=b"5") + entry(b"e/one", b"1")
    data += entry(b"e", flag=b"1", link=b"/lower/f") + entry(b"e/two", b"2")
    tree = read(data + END)
    assert lookup(tree.root, b"a").target == b"b"
    assert list(lookup(tree.root, b"b").children) == [b"two"]
    d = lookup(tree.root, b"c/d")
    assert d.is_dir and d.implicit and list(d.children) == [b"two"]
    e = lookup(tree.root, b"e")
    assert e.is_dir and e.implicit and list(e.children) == [b"two"]
    assert tree.lower_links == []


def test_whiteouts_below_a_same_layer_file_are_dropped():
    # NOTES.md 9: a tool replacing a directory by a file may emit whiteouts beneath it later.
    data = entry(b"d", b"now a file") + entry(b"d/.wh.old") + entry(b"d/e/.wh..wh..opq")
    data += entry(b"d/x", flag=b"3")  # overlayfs-style whiteout
    tree = read(data + END)
    d = lookup(tree.root, b"d")
    assert names(tree) == [b"/", b"/d"] and d.is_reg and content(d) == sha(b"now a file")


def test_whiteout_markers_stay_entries():
    data = entry(b"d/.wh.gone") + entry(b"d/.wh..wh..opq") + entry(b"e", flag=b"3")
    tree = read(data + END)
    assert names(tree) == [b"/", b"/d", b"/d/.wh..wh..opq", b"/d/.wh.gone", b"/e"]
    assert lookup(tree.root, b"e").is_whiteout_device


# --------------------------------------------------------------------------- hard links


def test_hard_links_to_non_regular_targets_share_the_node():
    data = entry(b"sym", flag=b"2", link=b"somewhere", mode=0o777)
    data += entry(b"dev", flag=b"3", major=4, minor=5)
    data += entry(b"fifo", flag=b"6")
    data += entry(b"l-sym", flag=b"1", link=b"sym", mode=0o777)
    data += entry(b"l-dev", flag=b"1", link=b"./dev")
    data += entry(b"l-fifo", flag=b"1", link=b"/fifo")
    data += entry(b"chain", flag=b"1", link=b"l-dev")  # a link to a link
    tree = read(data + END)
    get = lambda p: lookup(tree.root, p)  # noqa: E731
    assert get(b"l-sym") is get(b"sym") and get(b"sym").target == b"somewhere"
    assert get(b"l-dev") is get(b"dev") is get(b"chain")
    assert get(b"dev").rdev == os.makedev(4, 5) and get(b"dev").kind == stat.S_IFCHR
    assert get(b"l-fifo") is get(b"fifo")
    assert tree.lower_links == []


def test_hard_link_entry_metadata_is_applied_to_the_shared_inode():
    # As containerd's applier: lchown, setxattr, lchmod and chtimes run on every entry's path,
    # links included, so the link entry's values land on the one inode both names share.
    data = pax([(b"SCHILY.xattr.user.t", b"target")]) + entry(b"f", b"x", mode=0o644, uid=1,
                                                              mtime=5)  # fmt: skip
    data += pax([(b"SCHILY.xattr.user.a", b"1")])
    data += entry(b"g", flag=b"1", link=b"f", mode=0o4600, uid=2, gid=3, mtime=6)
    data += entry(b"s", flag=b"2", link=b"f", uid=1)
    data += entry(b"t", flag=b"1", link=b"s", mode=0o600, uid=4)
    tree = read(data + END)
    f = lookup(tree.root, b"f")
    assert lookup(tree.root, b"g") is f
    assert (f.mode, f.uid, f.gid, f.mtime) == (0o104600, 2, 3, 6)
    assert f.xattrs == {b"user.t": b"target", b"user.a": b"1"}  # added, none removed
    s = lookup(tree.root, b"s")
    assert lookup(tree.root, b"t") is s
    assert (s.mode, s.uid) == (0o120777, 4)  # Linux has no lchmod: a symlink stays 0777


def test_hard_links_to_targets_outside_the_layer():
    data = entry(b"early", flag=b"1", link=b"late")  # target comes later: not this file
    data += entry(b"late", b"data")
    data += entry(b"deep/link", flag=b"1", link=b"/usr/bin/tool")  # target in a lower layer
    data += entry(b"again", flag=b"1", link=b"deep/link")  # link to a lower link
    data += entry(b"replaced", flag=b"1", link=b"x") + entry(b"replaced", b"own")
    data += entry(b"gone/l", flag=b"1", link=b"y") + entry(b"gone", b"now a file")
    tree = read(data + END)
    assert tree.lower_links == [
        (b"/early", b"/late"),
        (b"/deep/link", b"/usr/bin/tool"),
        (b"/again", b"/usr/bin/tool"),
    ]
    assert lookup(tree.root, b"early") is None and lookup(tree.root, b"deep/link") is None
    assert lookup(tree.root, b"deep").implicit  # the parent exists for the overlay step
    assert content(lookup(tree.root, b"replaced")) == sha(b"own")


def test_hard_link_to_a_directory_is_rejected():
    with pytest.raises(InvalidInput, match="'l'.*directory 'd'"):
        read(entry(b"d/", flag=b"5") + entry(b"l", flag=b"1", link=b"d") + END)


# --------------------------------------------------------------------------- damaged tars


def test_tar_without_end_blocks_and_trailing_garbage():
    body = entry(b"a", b"1") + entry(b"b", flag=b"5")
    assert names(read(body)) == [b"/", b"/a", b"/b"]  # NOTES.md 9
    assert names(read(body + END + b"garbage" * 100)) == [b"/", b"/a", b"/b"]
    assert names(read(body + bytes(512) + os.urandom(2048))) == [b"/", b"/a", b"/b"]


def test_truncated_entry_names_the_path():
    data = entry(b"dir/file", b"x" * 2000)
    with pytest.raises(InvalidInput, match="truncated tar.*'dir/file'"):
        read(data[:1200])


def test_truncated_entry_is_reported_even_if_add_file_reads_nothing():
    data = entry(b"dir/file", b"x" * 2000)
    with pytest.raises(InvalidInput, match="truncated tar.*'dir/file'"):
        read_layer(io.BytesIO(data[:1200]), lambda reader, size: [])


def test_truncated_header_and_dangling_extension_header():
    data = entry(b"a", b"1") + entry(b"b", b"2")
    with pytest.raises(InvalidInput, match="truncated tar header at offset 1024"):
        read(data[:1300])
    with pytest.raises(InvalidInput, match="extension header at offset 0 has no entry"):
        read(pax([(b"path", b"x")]))


def test_bad_checksum():
    data = bytearray(entry(b"a", b"1") + entry(b"b", b"2") + END)
    data[1024 + 3] ^= 0x01  # a byte of b's name
    with pytest.raises(InvalidInput, match="corrupt tar header at offset 1024"):
        read(bytes(data))


def test_signed_checksum_is_accepted():
    h = bytearray(header(b"\xe9t\xe9"))
    h[148:156] = b" " * 8
    signed = sum(b - 256 if b & 0x80 else b for b in h)
    h[148:156] = b"%06o\0 " % signed
    assert names(read(bytes(h) + END)) == [b"/", b"/\xe9t\xe9"]


def test_partial_reads_by_add_file_are_completed():
    data = entry(b"a", b"A" * 3000) + entry(b"b", b"B" * 10) + END
    seen = []

    def first_bytes_only(reader, size):
        seen.append(reader.read(7))
        return []

    tree = read_layer(io.BytesIO(data), first_bytes_only)
    assert seen == [b"A" * 7, b"B" * 7] and lookup(tree.root, b"b").size == 10


def test_reader_returns_exact_sizes_over_a_trickling_stream():
    class Trickle(io.RawIOBase):
        def __init__(self, data):
            self.data = data

        def read(self, n=-1):
            out, self.data = self.data[:3], self.data[3:]
            return out

    payload = os.urandom(5000)
    sizes = []

    def add(reader, size):
        got = [reader.read(1000) for _ in range(6)]
        sizes.extend(len(g) for g in got)
        assert b"".join(got) == payload
        return []

    read_layer(Trickle(entry(b"f", payload) + END), add)
    assert sizes == [1000, 1000, 1000, 1000, 1000, 0]


# --------------------------------------------------------------------------- codecs + reader


@pytest.mark.parametrize("codec", ["plain", "gzip", "zstd"])
def test_compressed_layers(codec):
    data = make_tar([(info("etc/hosts"), b"127.0.0.1 localhost\n"), (info("x"), os.urandom(70000))])
    blob = {
        "plain": data,
        "gzip": gzip.compress(data),
        "zstd": zstandard.ZstdCompressor().compress(data),
    }[codec]
    tree = read_layer(open_layer(io.BytesIO(blob)), Collector())
    assert content(lookup(tree.root, b"etc/hosts")) == sha(b"127.0.0.1 localhost\n")
    assert lookup(tree.root, b"x").size == 70000


def test_corrupt_gzip_after_the_tar_end_is_still_detected():
    blob = bytearray(gzip.compress(entry(b"a", b"1") + END))
    blob[-8] ^= 0xFF  # CRC-32 in the trailer
    with pytest.raises(InvalidInput, match="gzip"):
        read_layer(open_layer(io.BytesIO(bytes(blob))), Collector())


def test_a_stream_ending_inside_the_last_padding_is_complete_but_not_inside_data():
    # umoci 0.4's insert: the last file's data is whole, its padding and the end blocks are
    # missing; Go's reader, so containerd, takes that as the end (rconv check agrees).
    data = entry(b"a/", flag=b"5") + header(b"a/x", size=700) + b"x" * 700
    tree = read(data)
    assert lookup(tree.root, b"a/x").size == 700
    with pytest.raises(InvalidInput):
        read(data[:-1])  # one byte of data missing
