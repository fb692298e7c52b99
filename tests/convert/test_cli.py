"""The low-level CLI end to end: build, merge, inspect, unpack, blob-view, and its errors."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from rafs.check import assert_sound
from rafs.model import walk
from rafs.v6.reader import parse
from tests.cli import rconv
from tests.erofs import fsck_extract, kernel_mount
from tests.gotar import go_tar_digest
from tests.treeutil import diff_signatures, fs_signature

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration  # the CLI in a subprocess


def views(boot: Path, blob_dir: Path, out: Path) -> list[Path]:
    lines = rconv("blob-view", boot, "--blob-dir", blob_dir, "--output-dir", out).stdout
    return [Path(line.split(": ", 1)[1]) for line in lines.splitlines()]


def opener(blob_dir: Path):
    files: dict[str, object] = {}

    def open_blob(blob):
        if blob.blob_id not in files:
            files[blob.blob_id] = open(blob_dir / blob.blob_id, "rb")  # noqa: SIM115
        return files[blob.blob_id]

    return open_blob


@pytest.fixture(scope="module")
def sample_layers(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    subprocess.run([sys.executable, str(REPO / "testdata/make_sample.py"), str(out)], check=True)
    return out


def test_all_entry_type_fixture_builds_and_unpacks(upstream: Path, tmp_path: Path) -> None:
    src = upstream / "tar/all-entry-type.tar"
    boot, blobs = tmp_path / "boot", tmp_path / "blobs"
    rconv("build", src, "--bootstrap", boot, "--blob-dir", blobs)
    assert_sound(boot.read_bytes(), opener(blobs))
    info = json.loads(rconv("inspect", boot, "--json").stdout)
    nodes = {n["path"]: n for n in info["nodes"]}
    link = nodes["/tar/dir1/dir3/hardlink1.txt"]
    assert link["nlink"] == 4 and link["size"] == 15
    assert nodes["/tar/dir2/symlink1.txt"]["target"] == "../dir1/dir3/file1.txt"
    rconv("unpack", boot, "--blob-dir", blobs, "--output", tmp_path / "out.tar")
    with open(tmp_path / "out.tar", "rb") as f:  # Go's reader consumes all of it
        assert go_tar_digest(f)[1] == (tmp_path / "out.tar").stat().st_size
    with tarfile.open(tmp_path / "out.tar") as tar:
        members = {m.name: m for m in tar.getmembers()}
        data = tar.extractfile(members["tar/dir1/dir3/hardlink1.txt"])
        assert data is not None and data.read() == b"This is a test\n"
        for name in ("tar/dir1/dir3/xfile.txt", "tar/dir1/hardlink2.txt", "tar/dir2/hardlink3.txt"):
            assert members[name].islnk() and members[name].linkname == "tar/dir1/dir3/hardlink1.txt"


def test_layered_build_dedups_across_layers(sample_layers: Path, tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    parent: list[str] = []
    sizes = []
    for n in (1, 2, 3):
        boot = tmp_path / f"l{n}.boot"
        rconv("build", sample_layers / f"layer{n}.tar.gz", "--bootstrap", boot,
              "--blob-dir", blobs, *parent)  # fmt: skip
        parent = ["--parent-bootstrap", str(boot)]
        sizes.append(sum(p.stat().st_size for p in blobs.iterdir()))
    # layer 2 re-adds a 3 MiB file of layer 1: its blob must not store those chunks again
    assert sizes[1] - sizes[0] < 1 << 20
    final = tmp_path / "l3.boot"
    assert_sound(final.read_bytes(), opener(blobs))
    tree = {p: n for p, n in walk(parse(final.read_bytes()).bootstrap.root)}
    assert b"/var/cache/delete-me" not in tree and b"/tmp" not in tree
    assert sorted(tree[b"/opaque"].children) == [b"new"]
    assert tree[b"/gone"].is_reg
    assert tree[b"/opt/tool-copy"].chunks == tree[b"/usr/bin/tool"].chunks
    assert not any(b".wh." in p for p in tree)
    device_files = views(final, blobs, tmp_path / "views")
    fsck_extract(final, device_files, tmp_path / "erofs")
    with kernel_mount(final, device_files, tmp_path / "mnt") as mnt:
        mounted = fs_signature(mnt)
    extracted = fs_signature(tmp_path / "erofs", xattrs=False)
    ignore = ("xattrs", "links", "mode", "mtime", "uid", "gid")
    assert diff_signatures(mounted, extracted, ignore) == []
    assert mounted["/usr/bin/tool"]["links"] == ("/usr/bin/tool", "/usr/bin/tool-alias")
    assert mounted["/usr/bin/cap-tool"]["xattrs"][b"security.capability"][:4] == b"\x01\0\0\x02"
    assert mounted["/usr/lib/null"]["rdev"] == (1, 3)
    assert mounted["/usr/bin/ping"]["mode"] == 0o4755


def test_same_input_same_bytes(sample_layers: Path, tmp_path: Path) -> None:
    outputs = []
    for run in ("a", "b"):
        boot, blobs = tmp_path / f"{run}.boot", tmp_path / f"blobs-{run}"
        rconv("build", sample_layers / "layer1.tar.gz", "--bootstrap", boot, "--blob-dir", blobs)
        outputs.append(
            (boot.read_bytes(), sorted((p.name, p.read_bytes()) for p in blobs.iterdir()))
        )
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize("compressor", ["zstd", "lz4_block", "none"])
def test_v5_build_reads_back(sample_layers: Path, tmp_path: Path, compressor: str) -> None:
    boot, blobs = tmp_path / "v5.boot", tmp_path / "blobs"
    rconv("build", sample_layers / "layer1.tar.gz", "--bootstrap", boot, "--blob-dir", blobs,
          "--fs-version", "5", "--compressor", compressor)  # fmt: skip
    assert boot.read_bytes()[:4] == b"SFAR"
    assert_sound(boot.read_bytes(), opener(blobs))
    rconv("unpack", boot, "--blob-dir", blobs, "--output", tmp_path / "v5.tar")
    with tarfile.open(tmp_path / "v5.tar") as tar:
        member = tar.extractfile("usr/lib/big.txt")
        assert member is not None and member.read().startswith(b"line 0 of")


def test_merge_applies_whiteouts_between_layers(sample_layers: Path, tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    boots = []
    for n in (1, 2, 3):
        boot = tmp_path / f"layer{n}.boot"
        rconv("build", sample_layers / f"layer{n}.tar.gz", "--bootstrap", boot,
              "--blob-dir", blobs, "--whiteout-spec", "none")  # fmt: skip
        boots.append(boot)
    merged = tmp_path / "merged.boot"
    rconv("merge", *boots, "--bootstrap", merged)
    assert_sound(merged.read_bytes(), opener(blobs))
    tree = {p for p, _ in walk(parse(merged.read_bytes()).bootstrap.root)}
    assert b"/var/cache/delete-me" not in tree and b"/opaque/old-1" not in tree
    assert b"/opaque/new" in tree and not any(b".wh." in p for p in tree)


def test_blob_views_let_the_kernel_mount_the_fixture(upstream: Path, tmp_path: Path) -> None:
    boot = upstream / "bootstrap/rafs-v6-2.2.boot"
    device_files = views(boot, upstream / "blobs", tmp_path / "views")
    assert [p.name for p in device_files] == [
        "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
    ]
    rconv("unpack", boot, "--blob-dir", upstream / "blobs", "--output", tmp_path / "out.tar")
    with tarfile.open(tmp_path / "out.tar") as tar:
        assert {m.name: m.size for m in tar.getmembers() if m.isfile()} == {
            "lib.rs": 16931,
            "sync_io.rs": 13400,
        }


# -- errors -----------------------------------------------------------------------------------


def _tar_bytes() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("file")
        info.size = 5000
        tar.addfile(info, io.BytesIO(b"a" * 5000))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("truncated.tar", _tar_bytes()[:2048], "file"),
        ("corrupt.tar.gz", gzip.compress(_tar_bytes())[:40] + b"garbage" * 20, "corrupt.tar.gz"),
        ("corrupt.tar.zst", b"\x28\xb5\x2f\xfd" + b"\xff" * 64, "corrupt.tar.zst"),
    ],
)
def test_bad_layer_is_one_line_and_exit_1(tmp_path: Path, name: str, content: bytes, needle: str):
    src = tmp_path / name
    src.write_bytes(content)
    result = rconv("build", src, "--bootstrap", tmp_path / "b", "--blob-dir", tmp_path / "d",
                   check=False)  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rconv: error:") and needle in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "b").exists()
    assert not any((tmp_path / "d").glob("*")) if (tmp_path / "d").exists() else True


def test_bad_bootstrap_and_short_blob(upstream: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.boot"
    bad.write_bytes(b"\0" * 8192)
    result = rconv("inspect", bad, check=False)
    assert result.returncode == 1 and "not a RAFS bootstrap" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and str(bad) in result.stderr
    cut = tmp_path / "cut.boot"  # a v6 bootstrap cut short: the reader's error names the file
    cut.write_bytes((upstream / "bootstrap/rafs-v6-2.2.boot").read_bytes()[:2000])
    result = rconv("inspect", cut, check=False)
    lines = result.stderr.strip().splitlines()
    assert (
        result.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"rconv: error: {cut}: ")
    )
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    name = "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
    (blobs / name).write_bytes((upstream / "blobs" / name).read_bytes()[:5000])
    result = rconv("unpack", upstream / "bootstrap/rafs-v6-2.2.boot", "--blob-dir", blobs,
                   "--output", tmp_path / "o.tar", check=False)  # fmt: skip
    assert result.returncode == 1 and name in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o.tar").exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.boot"
    bad.write_bytes(b"junk")
    result = rconv("--debug", "inspect", bad, check=False)
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_inspect_with_blob_dir_verifies_the_blobs(sample_layers: Path, tmp_path: Path) -> None:
    boot, blobs = tmp_path / "boot", tmp_path / "blobs"
    rconv("build", sample_layers / "layer1.tar.gz", "--bootstrap", boot, "--blob-dir", blobs)
    assert "1 checked, 0 problem(s)" in rconv("inspect", boot, "--blob-dir", blobs).stdout
    blob = next(blobs.iterdir())
    data = bytearray(blob.read_bytes())
    data[100] ^= 1
    blob.write_bytes(bytes(data))
    result = rconv("inspect", boot, "--blob-dir", blobs, check=False)
    assert result.returncode == 1 and blob.name[:12] in result.stderr


def test_build_refuses_a_gzip_bomb_beyond_max_layer_size(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.tar.gz"
    bomb.write_bytes(gzip.compress(bytes(20 << 20)))  # 20 MiB of zeros in ~20 KiB
    result = rconv("build", bomb, "--bootstrap", tmp_path / "b", "--blob-dir", tmp_path / "d",
                   "--max-layer-size", "1M", check=False)  # fmt: skip
    assert result.returncode == 1 and "configured limit" in result.stderr
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("inherited", ["python", "ignored"])
def test_ctrl_c_is_quiet_while_the_cli_loads(monkeypatch, inherited: str) -> None:
    """Until the CLI's own handlers exist, SIGINT takes its default action (no traceback);
    the CLI itself then runs with Python's KeyboardInterrupt handler back in place. A SIGINT
    the parent ignored (nohup, a background job of a script) stays ignored throughout."""
    import signal
    import types

    import convert.__main__ as entry

    seen = {}

    class LoadingCli(types.ModuleType):
        def __getattr__(self, name):
            seen["loading"] = signal.getsignal(signal.SIGINT)
            return lambda: seen.setdefault("running", signal.getsignal(signal.SIGINT))

    monkeypatch.setitem(sys.modules, "convert.cli", LoadingCli("convert.cli"))
    start = signal.default_int_handler if inherited == "python" else signal.SIG_IGN
    previous = signal.signal(signal.SIGINT, start)  # whatever this test process inherited
    try:
        entry.main()
    finally:
        signal.signal(signal.SIGINT, previous)
    if inherited == "python":
        assert seen == {"loading": signal.SIG_DFL, "running": signal.default_int_handler}
    else:
        assert seen == {"loading": signal.SIG_IGN, "running": signal.SIG_IGN}


def test_plain_http_flag_never_tries_tls(tmp_path: Path) -> None:
    """--plain-http reaches the registry client: no ClientHello that a plain server ignores."""
    from tests.registry.test_plain_http import TLS_HANDSHAKE, PlainRegistry

    server = PlainRegistry()
    try:
        started = time.monotonic()
        result = rconv("copy", "--plain-http", f"{server.host}/app:v1", f"oci:{tmp_path}/out:v1",
                       check=False)  # fmt: skip
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert server.first_bytes and not any(b.startswith(TLS_HANDSHAKE) for b in server.first_bytes)
    assert elapsed < 20  # a TLS attempt would wait for the handshake timeout (30 s)
    errors = [line for line in result.stderr.splitlines() if line.startswith("rconv: error:")]
    assert result.returncode == 1 and len(errors) == 1 and "Traceback" not in result.stderr
