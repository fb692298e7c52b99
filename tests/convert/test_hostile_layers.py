"""Hostile layer tars through ``rconv build``: each case gives the expected tree or the
expected one-line error (image.md §15.1-§15.6, NOTES.md 3, 7, 9).

Trees are built with the library (``convert.build.build``) and read back from the written
bootstrap with ``rafs.v6.reader.parse``; errors go through the CLI, which must print exactly one
``rconv: error: …`` line and exit 1. Big inputs are generated, never stored: the 4 GiB sparse
file is streamed into a FIFO, the decompression bombs are produced chunk by chunk.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
import zstandard
from typer.testing import CliRunner

from convert.build import BuildOptions, build
from convert.cli import app
from rafs.blob.reader import iter_file
from rafs.check import assert_sound
from rafs.errors import InvalidInput
from rafs.layerstream import open_layer
from rafs.model import Node, count_names, lookup, walk
from rafs.tarstream import read_layer
from rafs.v6.reader import parse
from tests.cli import rconv
from tests.erofs import fsck_extract, kernel_mount
from tests.tarmaker import (
    END,
    TarStream,
    entry,
    header,
    long_name,
    pax,
    pax_raw,
    sparse_pax_1_0,
)

REPO = Path(__file__).resolve().parents[2]
GiB = 1 << 30


# --------------------------------------------------------------------------- helpers


def opener(blob_dir: Path):
    def open_blob(blob):
        return open(blob_dir / blob.blob_id, "rb")  # noqa: SIM115 - closed by the GC in tests

    return open_blob


def built(tmp_path: Path, tar: bytes, parent: Path | None = None, name: str = "layer") -> Node:
    """Build ``tar`` (onto ``parent``), check the bootstrap's invariants, return its tree."""
    src, boot, blobs = tmp_path / f"{name}.tar", tmp_path / f"{name}.boot", tmp_path / "blobs"
    src.write_bytes(tar)
    build(src, boot, blobs, BuildOptions(), parent=parent)
    data = boot.read_bytes()
    assert_sound(data, opener(blobs))
    return parse(data).bootstrap.root


def paths(root: Node) -> list[bytes]:
    return [path for path, _ in walk(root)]


def content(root: Node, path: bytes, blob_dir: Path) -> bytes:
    node = lookup(root, path)
    assert node is not None and node.is_reg, path
    return b"".join(iter_file(node, opener(blob_dir), "blake3"))


def rconv_error(tmp_path: Path, tar: bytes) -> str:
    """Run ``rconv build`` on ``tar`` (in process); it must fail with one line, which is
    returned, and leave no bootstrap behind."""
    src = tmp_path / "bad.tar"
    src.write_bytes(tar)
    args = ["build", str(src), "--bootstrap", str(tmp_path / "bad.boot"),
            "--blob-dir", str(tmp_path / "blobs")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rconv: error: "), result.stderr
    assert not (tmp_path / "bad.boot").exists()
    return lines[0]


def test_the_cli_process_fails_with_one_line(tmp_path) -> None:
    src = tmp_path / "bad.tar"
    src.write_bytes(entry(b"../x", b"evil") + END)
    result = subprocess.run(
        [sys.executable, "-m", "convert", "build", str(src),
         "--bootstrap", str(tmp_path / "b.boot"), "--blob-dir", str(tmp_path / "blobs")],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"rconv: error: {src}: tar entry '../x' escapes the layer root\n"


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    "name",
    [b"../x", b"a/../../x", b"/../etc/passwd", b"./../x", b"a/b/../../../x"],
)
def test_dotdot_leaving_the_root_is_refused(tmp_path, name) -> None:
    line = rconv_error(tmp_path, entry(name, b"evil") + END)
    assert "escapes the layer root" in line and repr(name.decode()) in line


def test_dotdot_inside_and_absolute_paths_are_cleaned(tmp_path) -> None:
    tar = entry(b"/etc/passwd", b"root") + entry(b"a/b/../c", b"c") + entry(b"//x/./y", b"y")
    root = built(tmp_path, tar + END)
    assert paths(root) == [b"/", b"/a", b"/a/c", b"/etc", b"/etc/passwd", b"/x", b"/x/y"]
    assert content(root, b"/etc/passwd", tmp_path / "blobs") == b"root"


def test_symlink_parent_in_the_same_layer_never_escapes(tmp_path) -> None:
    # Parent symlinks of the same layer are followed inside the layer root, like
    # containerd's fs.RootPath: absolute targets and '..' are clamped at the root.
    tar = entry(b"evil", flag=b"2", link=b"/") + entry(b"evil/etc/passwd", b"pw")
    tar += entry(b"up", flag=b"2", link=b"../../..") + entry(b"up/x", b"x")
    root = built(tmp_path, tar + END)
    assert content(root, b"/etc/passwd", tmp_path / "blobs") == b"pw"
    assert content(root, b"/x", tmp_path / "blobs") == b"x"
    assert lookup(root, b"/evil").is_symlink and lookup(root, b"/up").is_symlink


def test_symlink_loops_in_the_same_layer_are_refused(tmp_path) -> None:
    tar = entry(b"a", flag=b"2", link=b"b") + entry(b"b", flag=b"2", link=b"a")
    line = rconv_error(tmp_path, tar + entry(b"a/x", b"x") + END)
    assert "too many levels of symbolic links" in line


def test_symlink_parent_in_the_same_layer_as_containerd(tmp_path) -> None:
    root = built(
        tmp_path, entry(b"evil", flag=b"2", link=b"/") + entry(b"evil/passwd", b"pw") + END
    )
    assert lookup(root, b"/evil").is_symlink
    assert content(root, b"/passwd", tmp_path / "blobs") == b"pw"


@pytest.fixture
def lower(tmp_path) -> Path:
    """A parent build: /etc/x and /etc/y, /evil -> /etc, /abs -> /."""
    tar = entry(b"etc/", flag=b"5", mode=0o755) + entry(b"etc/x", b"X") + entry(b"etc/y", b"Y")
    tar += entry(b"evil", flag=b"2", link=b"/etc") + entry(b"abs", flag=b"2", link=b"/")
    built(tmp_path, tar + END, name="lower")
    return tmp_path / "lower.boot"


def test_symlink_parent_in_a_lower_layer_is_not_followed(tmp_path, lower) -> None:
    tar = entry(b"evil/x", b"new") + entry(b"abs/etc/y", b"new") + END
    root = built(tmp_path, tar, parent=lower)
    blobs = tmp_path / "blobs"
    assert content(root, b"/etc/x", blobs) == b"X" and content(root, b"/etc/y", blobs) == b"Y"
    assert lookup(root, b"/evil").is_dir and list(lookup(root, b"/evil").children) == [b"x"]
    assert content(root, b"/evil/x", blobs) == b"new"
    assert content(root, b"/abs/etc/y", blobs) == b"new"


def test_whiteout_below_a_lower_symlink_does_not_reach_its_target(tmp_path, lower) -> None:
    root = built(tmp_path, entry(b"evil/.wh.x") + entry(b"abs/etc/.wh.y") + END, parent=lower)
    assert paths(root) == [b"/", b"/abs", b"/abs/etc", b"/etc", b"/etc/x", b"/etc/y", b"/evil"]
    assert lookup(root, b"/evil").is_dir


# --------------------------------------------------------------------------- duplicates, links


def test_duplicate_entries_last_wins(tmp_path) -> None:
    tar = entry(b"f", b"first") + entry(b"f", b"second")
    tar += entry(b"d/", flag=b"5", mode=0o700, uid=1) + entry(b"d/child", b"c")
    tar += entry(b"d/", flag=b"5", mode=0o711, uid=2)  # metadata replaced, children kept
    tar += entry(b"g/", flag=b"5") + entry(b"g/gone", b"g") + entry(b"g", b"now a file")
    tar += entry(b"h", b"was a file") + entry(b"h/", flag=b"5")
    tar += entry(b"s", flag=b"2", link=b"a") + entry(b"s", flag=b"2", link=b"b")
    root = built(tmp_path, tar + END)
    blobs = tmp_path / "blobs"
    assert content(root, b"/f", blobs) == b"second"
    d = lookup(root, b"/d")
    assert stat.S_IMODE(d.mode) == 0o711 and d.uid == 2 and list(d.children) == [b"child"]
    assert content(root, b"/g", blobs) == b"now a file"
    assert lookup(root, b"/h").is_dir and lookup(root, b"/s").target == b"b"


@pytest.mark.parametrize(
    "tar",
    [
        entry(b"l", flag=b"1", link=b"missing") + END,
        entry(b"l", flag=b"1", link=b"t") + entry(b"t", b"later") + END,  # target comes later
    ],
    ids=["missing", "later"],
)
def test_hard_link_without_an_earlier_target_fails_naming_both(tmp_path, tar) -> None:
    line = rconv_error(tmp_path, tar)
    assert "hard link '/l' -> " in line and "target found neither in this layer nor below" in line


def test_hard_link_to_a_later_entry_joins_the_lower_inode(tmp_path, lower) -> None:
    # Links are resolved against the tree below the layer (image.md §15.6): the later /etc/x of
    # this layer replaces the name, the link keeps the lower inode and its chunks.
    tar = entry(b"l", flag=b"1", link=b"etc/x") + entry(b"etc/x", b"replaced") + END
    root = built(tmp_path, tar, parent=lower)
    blobs = tmp_path / "blobs"
    assert content(root, b"/l", blobs) == b"X"
    assert content(root, b"/etc/x", blobs) == b"replaced"
    assert count_names(root)[id(lookup(root, b"/l"))] == 1


def test_hard_link_to_a_directory_is_refused(tmp_path) -> None:
    line = rconv_error(tmp_path, entry(b"d/", flag=b"5") + entry(b"l", flag=b"1", link=b"d") + END)
    assert "points at directory 'd'" in line


# --------------------------------------------------------------------------- whiteouts


def test_whiteout_escaping_the_root_is_refused(tmp_path) -> None:
    assert "escapes the layer root" in rconv_error(tmp_path, entry(b"../.wh.etc") + END)


def test_whiteouts_for_paths_this_layer_does_not_have(tmp_path, lower) -> None:
    tar = entry(b"/.wh.etc") + entry(b"no/where/.wh.x") + entry(b".wh.nothing") + END
    root = built(tmp_path, tar, parent=lower)
    # /etc is gone (absolute marker path cleaned), the others are no-ops; the parents of a
    # marker exist in the layer dir, so they show up as directories (as with containerd)
    assert paths(root) == [b"/", b"/abs", b"/evil", b"/no", b"/no/where"]


# --------------------------------------------------------------------------- names


def test_name_component_over_255_bytes_is_refused(tmp_path) -> None:
    line = rconv_error(tmp_path, long_name(b"d/" + b"n" * 256) + entry(b"x", b"") + END)
    assert "name longer than 255 bytes" in line


def test_long_paths_and_255_byte_names(tmp_path) -> None:
    deep = b"/".join([b"c" * 200] * 19) + b"/" + b"n" * 255  # 4 KiB path
    root = built(tmp_path, pax([(b"path", deep)]) + entry(b"x", b"deep") + END)
    assert content(root, b"/" + deep, tmp_path / "blobs") == b"deep"


def test_thousand_nested_directories(tmp_path) -> None:
    tar = pax([(b"path", b"d/" * 1000 + b"f")]) + entry(b"x", b"") + END
    root = built(tmp_path, tar)  # walks and layout are iterative: no recursion limit
    assert b"/" + b"d/" * 1000 + b"f" in paths(root)


def test_non_utf8_names_are_kept_as_bytes(tmp_path) -> None:
    tar = entry(b"caf\xe9", b"latin-1") + entry(b"\xff\xfe/\x80\x81", b"raw") + END
    root = built(tmp_path, tar)
    assert paths(root) == [b"/", b"/caf\xe9", b"/\xff\xfe", b"/\xff\xfe/\x80\x81"]
    args = ["blob-view", str(tmp_path / "layer.boot"), "--blob-dir", str(tmp_path / "blobs"),
            "--output-dir", str(tmp_path / "views")]  # fmt: skip
    lines = CliRunner().invoke(app, args).stdout.splitlines()
    out = tmp_path / "out"
    fsck_extract(tmp_path / "layer.boot", [Path(v.split(": ", 1)[1]) for v in lines], out)
    assert sorted(os.listdir(bytes(out))) == [b"caf\xe9", b"\xff\xfe"]
    assert (out / os.fsdecode(b"\xff\xfe/\x80\x81")).read_bytes() == b"raw"


# --------------------------------------------------------------------------- PAX


def test_pax_global_headers_are_ignored(tmp_path) -> None:
    glob = pax([(b"path", b"evil"), (b"uid", b"66"), (b"SCHILY.xattr.user.g", b"v")], b"g")
    root = built(tmp_path, glob + entry(b"f", b"x") + glob + entry(b"g", b"y") + END)
    assert paths(root) == [b"/", b"/f", b"/g"]
    assert all(n.uid == 0 and not n.xattrs for _, n in walk(root))


@pytest.mark.parametrize(
    "body",
    [
        b"99 path=x\n",  # length past the record
        b"7 path=x\n",  # length short of the newline
        b"x path=x\n",  # no decimal length
        b"10 pathx\n\n",  # no '='
        b"9 =value\n",  # empty key
        b"11 path=ab\0",  # no trailing newline
    ],
)
def test_malformed_pax_records_are_refused(tmp_path, body) -> None:
    assert "malformed PAX record" in rconv_error(tmp_path, pax_raw(body) + entry(b"f", b"") + END)


def test_pax_numbers_that_are_not_numbers_are_refused(tmp_path) -> None:
    line = rconv_error(tmp_path, pax([(b"size", b"12x")]) + entry(b"f", b"") + END)
    assert "bad PAX size" in line


def test_pax_value_with_a_newline_is_read_by_its_length(tmp_path) -> None:
    # Go's archive/tar (so containerd) takes the length prefix: the newline is part of the value.
    root = built(tmp_path, pax([(b"linkpath", b"a\n9 path=x\n")]) + entry(b"s", flag=b"2") + END)
    assert paths(root) == [b"/", b"/s"] and lookup(root, b"/s").target == b"a\n9 path=x\n"


# --------------------------------------------------------------------------- xattrs


def test_xattr_value_over_64_kib_is_a_clean_error(tmp_path) -> None:
    tar = pax([(b"SCHILY.xattr.user.big", b"v" * 70000)]) + entry(b"f", b"x") + END
    assert "xattr 'user.big' is too large" in rconv_error(tmp_path, tar)


def test_xattrs_over_the_inode_limit_are_a_clean_error(tmp_path) -> None:
    records = [(b"SCHILY.xattr.user.k%d" % i, b"v" * 60000) for i in range(5)]
    assert "do not fit RAFS v6" in rconv_error(tmp_path, pax(records) + entry(b"f", b"x") + END)


def test_largest_storable_xattr_and_dropped_namespaces(tmp_path) -> None:
    records = [(b"SCHILY.xattr.user.big", b"\x00\xff" * 32767 + b"!"),
               (b"SCHILY.xattr.com.apple.quarantine", b"q"),
               (b"SCHILY.xattr.system.nfs4_acl", b"n")]  # fmt: skip
    src, boot = tmp_path / "x.tar", tmp_path / "x.boot"
    src.write_bytes(pax(records) + entry(b"f", b"x") + END)
    result = build(src, boot, tmp_path / "blobs", BuildOptions())
    node = lookup(parse(boot.read_bytes()).bootstrap.root, b"/f")
    assert node.xattrs == {b"user.big": b"\x00\xff" * 32767 + b"!"}
    assert len(result.warnings) == 2 and all("dropped xattr" in w for w in result.warnings)


# --------------------------------------------------------------------------- devices


def test_device_nodes_keep_type_and_numbers(tmp_path) -> None:
    tar = entry(b"dev/null", flag=b"3", mode=0o666, major=1, minor=3)
    tar += entry(b"dev/sda", flag=b"4", mode=0o660, major=8, minor=0)
    tar += entry(b"dev/max", flag=b"3", major=4095, minor=0xFFFFF)
    tar += entry(b"dev/fifo", flag=b"6") + entry(b"dev/wh", flag=b"3")  # 0/0: not a marker in oci
    root = built(tmp_path, tar + END)
    kinds = {p: (stat.S_IFMT(n.mode), os.major(n.rdev), os.minor(n.rdev)) for p, n in walk(root)}
    assert kinds[b"/dev/null"] == (stat.S_IFCHR, 1, 3)
    assert kinds[b"/dev/sda"] == (stat.S_IFBLK, 8, 0)
    assert kinds[b"/dev/max"] == (stat.S_IFCHR, 4095, 0xFFFFF)
    assert kinds[b"/dev/fifo"] == (stat.S_IFIFO, 0, 0)
    assert kinds[b"/dev/wh"] == (stat.S_IFCHR, 0, 0)


@pytest.mark.parametrize("major, minor", [(4096, 0), (1, 0x100000)])
def test_device_numbers_beyond_dev_t_are_refused(tmp_path, major, minor) -> None:
    line = rconv_error(tmp_path, entry(b"d", flag=b"3", major=major, minor=minor) + END)
    assert f"bad device number {major}:{minor}" in line


# --------------------------------------------------------------------------- big inputs


def hundred_thousand_entries() -> bytes:
    """A directory with 100,000 empty files: one template header, names and checksums patched."""
    template = bytearray(header(b"big/f000000"))
    template[148:156] = b" " * 8
    base = sum(template) - sum(b"000000")
    out = [entry(b"big/", flag=b"5")]
    for i in range(100_000):
        digits = b"%06d" % i
        template[5:11] = digits
        template[148:156] = b"%06o\0 " % (base + sum(digits))
        out.append(bytes(template))
        template[148:156] = b" " * 8
    return b"".join(out) + END


@pytest.mark.integration  # a 100k-entry tree: seconds on its own
def test_hundred_thousand_entries_in_one_directory(tmp_path) -> None:
    src, boot = tmp_path / "big.tar", tmp_path / "big.boot"
    src.write_bytes(hundred_thousand_entries())
    started = time.monotonic()
    build(src, boot, tmp_path / "blobs", BuildOptions())
    elapsed = time.monotonic() - started
    assert elapsed < 60, f"build took {elapsed:.0f} s"
    src.unlink()
    root = parse(boot.read_bytes()).bootstrap.root
    names = list(lookup(root, b"/big").children)
    assert len(names) == 100_000 and names[0] == b"f000000" and names[-1] == b"f099999"
    with kernel_mount(boot, [], tmp_path / "mnt") as mnt:
        listed = os.listdir(mnt / "big")
        assert len(listed) == 100_000 and (mnt / "big" / "f054321").stat().st_size == 0


def stream_into_fifo(tmp_path: Path, stream) -> tuple[Path, threading.Thread]:
    fifo = tmp_path / "layer.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as f:
            while data := stream.read(1 << 20):
                f.write(data)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return fifo, thread


def test_sparse_file_beyond_max_layer_size_is_refused(tmp_path) -> None:
    """A few hundred bytes of tar declaring 4 GiB: the decompressed-size limit alone would
    let it through and chunk 4 GiB of holes."""
    stream = TarStream([*sparse_pax_1_0(b"sparse", 4 * GiB, [(0, b"head")]), END])
    layer = tmp_path / "sparse.tar"
    layer.write_bytes(stream.read())
    r = rconv("build", layer, "--bootstrap", tmp_path / "b.boot", "--blob-dir", tmp_path / "blobs",
              "--max-layer-size", "1G", check=False)  # fmt: skip
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == (
        f"rconv: error: {layer}: tar entry 'sparse' takes the layer's files beyond the "
        "configured limit (a sparse file, counted expanded)\n"
    )


def test_four_gib_sparse_file_is_streamed_and_deduplicated(tmp_path) -> None:
    segments = [(0, b"head"), (2 * GiB + 5, b"middle" * 1000), (4 * GiB - 3, b"end")]
    stream = TarStream([*sparse_pax_1_0(b"sparse", 4 * GiB, segments), END])
    fifo, feeder = stream_into_fifo(tmp_path, stream)
    blobs = tmp_path / "blobs"
    result = build(fifo, tmp_path / "sparse.boot", blobs, BuildOptions())
    feeder.join(10)
    assert stream.served < 64 << 10  # the holes never crossed the pipe
    assert result.blob is not None and result.blob_path.stat().st_size < 64 << 10
    assert result.blob.chunk_count == 4  # zeros, head, middle, end
    root = parse((tmp_path / "sparse.boot").read_bytes()).bootstrap.root
    node = lookup(root, b"/sparse")
    assert node.size == 4 * GiB and len(node.chunks) == 4096
    assert len({(c.blob.blob_id, c.index) for c in node.chunks}) == 4
    with open(blobs / result.blob.blob_id, "rb") as f:
        from rafs.blob.reader import read_chunk

        def at(offset: int, n: int) -> bytes:
            chunk = node.chunks[offset >> 20]
            data = read_chunk(f, chunk, "blake3")
            return data[offset & 0xFFFFF : (offset & 0xFFFFF) + n]

        assert at(0, 6) == b"head\0\0" and at(2 * GiB + 5, 6) == b"middle"
        assert at(4 * GiB - 3, 3) == b"end" and at(3 * GiB, 8) == bytes(8)


# --------------------------------------------------------------------------- bombs


class Bomb(io.RawIOBase):
    """A compressed stream of ``size`` zero bytes, produced as it is read."""

    def __init__(self, codec: str, size: int) -> None:
        self._left = size
        self._out = b""
        if codec == "gzip":
            self._c = zlib.compressobj(9, zlib.DEFLATED, 31)
            self._flush = self._c.flush
        else:
            self._c = zstandard.ZstdCompressor().compressobj()
            self._flush = self._c.flush
        self.compressed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._out and self._left is not None:
            if self._left:
                n = min(self._left, 4 << 20)
                self._left -= n
                self._out = self._c.compress(bytes(n))
            else:
                self._out, self._left = self._flush(), None
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        self.compressed += n
        return n


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_decompression_bomb_stops_at_the_limit(codec) -> None:
    # 1 GiB of zeros in a ~1 MiB stream; the limit stops the read after 16 MiB of output.
    bomb = Bomb(codec, GiB)
    layer = open_layer(bomb, max_bytes=16 << 20)
    with pytest.raises(InvalidInput, match="more bytes than the configured limit"):
        read_layer(layer, lambda reader, size: [])
    assert bomb.compressed < 1 << 20


def test_layer_just_under_the_limit_passes() -> None:
    tar = entry(b"f", b"x" * 1000) + END
    layer = open_layer(io.BytesIO(gzip.compress(tar)), max_bytes=len(tar))
    tree = read_layer(layer, lambda reader, size: [])
    assert list(tree.root.children) == [b"f"]
    with pytest.raises(InvalidInput, match="configured limit"):
        read_layer(open_layer(io.BytesIO(gzip.compress(tar)), max_bytes=len(tar) - 1),
                   lambda reader, size: [])  # fmt: skip
