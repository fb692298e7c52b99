"""`rconv check` against a real registry: clean conversions check clean, and every defect
injected into a real conversion (bootstrap rewritten with rafs' writer, manifest rebuilt with
registry.build, pushed under another tag) is found and named. The content check reads each
stored chunk once through HTTP Range requests, counted here by a client of our own."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import stat
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from convert.check import CheckOptions, Difference, run_check
from rafs.bootstrap import read_bootstrap, write_bootstrap
from rafs.model import Bootstrap, Node, lookup, walk
from registry import mediatype as mt
from registry.build import Blob, build_image
from registry.client import RegistryClient
from registry.medium import open_image, write_image
from registry.model import Image, Platform
from registry.tarwriter import open_tar_writer
from tests.cli import rconv
from tests.integration.nydus import REPO, layer_tar, make_image, push, push_index

A_BLOB = {"containerd.io/snapshot/nydus-blob": "true"}
A_BOOT = {
    "containerd.io/snapshot/nydus-bootstrap": "true",
    "containerd.io/snapshot/nydus-fs-version": "6",
}


class CountingClient(RegistryClient):
    """Records every Range request: (digest, offset, length)."""

    def __init__(self, options) -> None:
        super().__init__(options)
        self.ranges: list[tuple[str, int, int]] = []
        self._count_lock = threading.Lock()

    def read_range(self, ref, digest: str, offset: int, length: int) -> bytes:
        data = super().read_range(ref, digest, offset, length)
        with self._count_lock:
            self.ranges.append((digest, offset, len(data)))
        return data


@pytest.fixture(scope="module")
def client(registry_server) -> RegistryClient:
    return registry_server.client()


@pytest.fixture(scope="module")
def sample(registry_server, tmp_path_factory) -> tuple[str, str]:
    """(source ref, Nydus ref) of the testdata sample image and its conversion."""
    layout = tmp_path_factory.mktemp("layout")
    subprocess.run(
        [sys.executable, str(REPO / "testdata/make_sample.py"), "--oci", str(layout)], check=True
    )
    source, target = registry_server.ref("check/sample:1"), registry_server.ref("check/sample:n")
    rconv("copy", f"oci:{layout}:1", source, "--plain-http")
    rconv("convert", "--source", source, "--target", target, "--plain-http")
    return source, target


@dataclass
class Parts:
    """A pulled Nydus image taken apart: what the tampering rebuilds it from."""

    image: Image
    config: dict
    bootstrap: Bootstrap

    def blob_layers(self) -> list[Blob]:
        return [_existing(self.image, d) for d in self.image.layer_descriptors[:-1]]


def _existing(image: Image, d) -> Blob:
    return Blob(d.media_type, d.digest, d.size, lambda: image.open_blob(d), d.annotations)


def take_apart(ref: str, client) -> Parts:
    image = open_image(ref, client=client)
    assert isinstance(image, Image)
    with image.layers()[-1].open_uncompressed() as raw, tarfile.open(fileobj=raw, mode="r|") as t:
        for member in t:
            if member.name == "image/image.boot":
                src = t.extractfile(member)
                assert src is not None
                bs = read_bootstrap(io.BytesIO(src.read()))
    return Parts(image, json.loads(image.raw_config), bs)


def bootstrap_blob(bs: Bootstrap) -> tuple[Blob, str]:
    """A bootstrap layer (image.md §5.1) around a bootstrap written by rafs: (blob, diff_id)."""
    boot = io.BytesIO()
    write_bootstrap(boot, bs)
    raw = io.BytesIO()
    with open_tar_writer(raw, format=tarfile.USTAR_FORMAT) as t:  # as rconv writes it
        d = tarfile.TarInfo("image")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        t.addfile(d)
        f = tarfile.TarInfo("image/image.boot")
        f.size, f.mode = len(boot.getvalue()), 0o444
        t.addfile(f, io.BytesIO(boot.getvalue()))
    data = raw.getvalue()
    diff_id = "sha256:" + hashlib.sha256(data).hexdigest()
    return Blob.from_bytes(
        gzip.compress(data, mtime=0), mt.OCI_LAYER_GZIP, annotations=A_BOOT
    ), diff_id


def push_variant(
    parts: Parts, ref: str, client, blobs: list[Blob] | None = None, boot_first: bool = False
) -> str:
    blobs = blobs if blobs is not None else parts.blob_layers()
    boot, boot_diff_id = bootstrap_blob(parts.bootstrap)
    layers, diff_ids = blobs + [boot], [b.digest for b in blobs] + [boot_diff_id]
    if boot_first:
        layers, diff_ids = layers[-1:] + layers[:-1], diff_ids[-1:] + diff_ids[:-1]
    config = dict(parts.config, rootfs={"type": "layers", "diff_ids": diff_ids})
    image = build_image(config, layers, annotations=parts.image.annotations)
    write_image(image, ref, client=client)
    return ref


def node(parts: Parts, path: bytes) -> Node:
    found = lookup(parts.bootstrap.root, path)
    assert found is not None
    return found


# ------------------------------------------------------------------------------ the defects


def flip_byte_in_compressed_chunk(parts: Parts, client) -> list[Blob]:
    chunk = next(c for c in node(parts, b"/usr/lib/big.txt").chunks if c.compressed)
    blobs = parts.blob_layers()
    k = next(i for i, b in enumerate(blobs) if b.digest == "sha256:" + chunk.blob.blob_id)
    with blobs[k].open() as f:
        data = bytearray(f.read())
    data[chunk.compressed_offset + chunk.compressed_size // 2] ^= 0x10
    blobs[k] = Blob.from_bytes(bytes(data), mt.NYDUS_BLOB, annotations=A_BLOB)
    chunk.blob.blob_id = blobs[k].digest.removeprefix("sha256:")  # the bootstrap follows it
    return blobs


def drop_file(parts: Parts, client) -> None:
    del node(parts, b"/etc").children[b"hostname"]  # type: ignore[index]


def wrong_mode(parts: Parts, client) -> None:
    node(parts, b"/etc/shadow").mode = stat.S_IFREG | 0o600


def wrong_xattr(parts: Parts, client) -> None:
    node(parts, b"/usr/bin/cap-tool").xattrs[b"user.comment"] = b"goodbye"


def break_hardlink_group(parts: Parts, client) -> None:
    tool = node(parts, b"/usr/bin/tool")
    copy = Node(tool.mode, tool.uid, tool.gid, xattrs=dict(tool.xattrs), size=tool.size)
    copy.chunks = list(tool.chunks)
    node(parts, b"/usr/bin").children[b"tool-alias"] = copy  # type: ignore[index]


def drop_blob_annotation(parts: Parts, client) -> list[Blob]:
    blobs = parts.blob_layers()
    b = blobs[0]
    blobs[0] = Blob(b.media_type, b.digest, b.size, b.opener, annotations={})
    return blobs


def blob_layer_not_in_table(parts: Parts, client) -> list[Blob]:
    blobs = parts.blob_layers()
    with blobs[1].open() as f:
        data = f.read() + b"\0"  # another digest; the bootstrap still names the original
    blobs[1] = Blob.from_bytes(data, mt.NYDUS_BLOB, annotations=A_BLOB)
    return blobs


def bootstrap_first(parts: Parts, client) -> str:
    return "boot-first"


def _diff(path: str, what: str, source: str, nydus: str) -> Difference:
    return Difference(path, what, source, nydus)


DEFECTS: list[tuple[str, Callable, set[str], list[Difference] | None]] = [
    ("flipped-byte", flip_byte_in_compressed_chunk, {"chunk-data", "filesystem"}, None),
    ("missing-file", drop_file, {"filesystem"}, [_diff("/etc/hostname", "exists", "yes", "no")]),
    ("wrong-mode", wrong_mode, {"filesystem"}, [_diff("/etc/shadow", "mode", "0640", "0600")]),
    (
        "wrong-xattr",
        wrong_xattr,
        {"filesystem"},
        [_diff("/usr/bin/cap-tool", "xattr user.comment", "hello", "goodbye")],
    ),
    (
        "broken-hardlink",
        break_hardlink_group,
        {"filesystem"},
        [
            _diff("/usr/bin/tool", "hardlinks", "[/usr/bin/tool-alias]", "[]"),
            _diff("/usr/bin/tool-alias", "hardlinks", "[/usr/bin/tool]", "[]"),
        ],
    ),
    ("missing-annotation", drop_blob_annotation, {"blob-layers"}, []),
    ("blob-not-in-table", blob_layer_not_in_table, {"blob-table"}, []),
    ("bootstrap-not-last", bootstrap_first, {"bootstrap-last"}, []),
]


@pytest.fixture(scope="module")
def defective(sample, registry_server, client) -> dict[str, str]:
    """Every defect, each pushed under its own tag of the sample's repository."""
    refs = {}
    for name, tamper, _, _ in DEFECTS:
        parts = take_apart(sample[1], client)
        out = tamper(parts, client)
        ref = registry_server.ref(f"check/sample:{name}")
        blobs = out if isinstance(out, list) else None
        refs[name] = push_variant(parts, ref, client, blobs, boot_first=out == "boot-first")
    return refs


# ------------------------------------------------------------------------------ the tests


def test_a_correct_conversion_checks_clean_reading_each_chunk_once(sample, registry_server):
    counting = CountingClient(registry_server.options())
    report = run_check(sample[1], sample[0], counting)
    assert report.ok, "\n".join(report.render())
    p = report.platforms[0]
    assert p.stats["range_reads"] and p.stats["paths"] == 27 and p.differences == []
    assert {r.status for r in p.rules} == {"ok"}
    bs = take_apart(sample[1], counting).bootstrap
    assert_each_chunk_fetched_once(bs, counting.ranges, p.stats)


def assert_each_chunk_fetched_once(bs: Bootstrap, ranges, stats) -> None:
    """Every stored chunk lies in exactly one Range request; bytes fetched ≈ chunk bytes."""
    chunks = {(c.blob.blob_id, c.compressed_offset, c.compressed_size) for _, n in walk(bs.root)
              for c in n.chunks}  # fmt: skip
    stored = sum(size for _, _, size in chunks)
    for blob_id, offset, size in chunks:
        holders = [r for r in ranges if r[0] == "sha256:" + blob_id
                   and r[1] <= offset and offset + size <= r[1] + r[2]]  # fmt: skip
        assert len(holders) == 1, (blob_id[:12], offset, size, holders)
    total = sum(length for _, _, length in ranges)
    meta = total - stored
    assert stats["chunk_bytes"] == stored and stats["bytes_fetched"] == total
    assert 0 <= meta <= len(bs.blobs) * (3 * 4096 + 1024), (total, stored)


@pytest.mark.parametrize(("name", "failed", "differences"), [d[::2] + d[3:] for d in DEFECTS],
                         ids=[d[0] for d in DEFECTS])  # fmt: skip
def test_each_injected_defect_is_found_and_named(
    sample, defective, client, name: str, failed: set[str], differences
) -> None:
    report = run_check(defective[name], sample[0], client)
    assert not report.ok
    assert report.failed_rules() == failed, "\n".join(report.render())
    found = report.platforms[0].differences
    if differences is not None:
        assert found == differences
    else:  # the flipped byte: the chunk is named, and so is the file that reads it
        (chunk_rule,) = [r for r in report.platforms[0].rules if r.name == "chunk-data"]
        assert len(chunk_rule.problems) == 1 and "chunk" in chunk_rule.problems[0]
        assert [(d.path, d.field) for d in found] == [("/usr/lib/big.txt", "content")]
        assert found[0].source.startswith("sha256:")
        assert found[0].nydus.startswith("unreadable: blob ")


def test_full_mode_downloads_and_verifies_whole_blobs(sample, registry_server) -> None:
    counting = CountingClient(registry_server.options())
    report = run_check(sample[1], sample[0], counting, CheckOptions(full=True))
    assert report.ok, "\n".join(report.render())
    p = report.platforms[0]
    assert p.rule("blob-digest").status == "ok" and not p.stats["range_reads"]  # type: ignore[union-attr]
    sizes = sum(d.size for d in open_image(sample[1], client=counting).layer_descriptors[:-1])
    assert p.stats["bytes_fetched"] == sizes and counting.ranges == []


def test_command_line_exit_status_report_and_json(sample, defective, tmp_path) -> None:
    good = rconv("check", "--target", sample[1], "--source", sample[0], "--plain-http")
    assert good.stdout.splitlines()[-1].startswith("equivalent: ")
    out = tmp_path / "report.json"
    bad = rconv("check", "--target", defective["wrong-mode"], "--source", sample[0],
                "--plain-http", "--output-json", out, check=False)  # fmt: skip
    assert bad.returncode == 1, bad.stderr
    assert "  /etc/shadow: mode: source 0640, nydus 0600" in bad.stdout.splitlines()
    assert bad.stdout.splitlines()[-1].startswith("NOT equivalent: ")
    report = json.loads(out.read_text())
    assert report["ok"] is False
    assert report["platforms"][0]["differences"] == [
        {"path": "/etc/shadow", "field": "mode", "source": "0640", "nydus": "0600"}
    ]
    missing = rconv("check", "--target", sample[1] + "-nothing", "--plain-http", check=False)
    assert missing.returncode == 1 and missing.stderr.startswith("rconv: error: ")


# ------------------------------------------------------------------------------ larger images


def big_layers(seed: int = 7) -> list[bytes]:
    """~9 MB over two layers: many small files (coalesced ranges), multi-chunk files,
    compressible text, files copied from the lower layer (cross-layer dedup) and files
    deleted by the upper one (their chunks stay in the lower blob, unread)."""
    rng = random.Random(seed)
    files = {f"d{i % 5}/f{i}": rng.randbytes(rng.randrange(1, 40_000)) for i in range(150)}
    files["big/one"] = rng.randbytes(2_200_000)
    files["big/two"] = b"".join(b"line %d\n" % i for i in range(300_000))
    lower = [(f"d{i}", tarfile.DIRTYPE, b"") for i in range(5)] + [("big", tarfile.DIRTYPE, b"")]
    lower += [(name, tarfile.REGTYPE, data) for name, data in files.items()]
    upper = [("copy", tarfile.DIRTYPE, b""), ("d0", tarfile.DIRTYPE, b"")]
    upper += [(f"copy/{i}", tarfile.REGTYPE, files[f"d{i % 5}/f{i}"]) for i in range(0, 150, 5)]
    upper += [(f"d0/.wh.f{i}", tarfile.REGTYPE, b"") for i in range(10, 100, 5)]
    upper += [("big/three", tarfile.REGTYPE, rng.randbytes(1_500_000))]
    return [layer_tar(lower), layer_tar(upper)]


def test_largest_image_range_reads_each_stored_chunk_once(registry_server, client) -> None:
    source = registry_server.ref("check/big:1")
    push(make_image(big_layers()), source, client)
    target = registry_server.ref("check/big:n")
    rconv("convert", "--source", source, "--target", target, "--plain-http",
          "--chunk-size", "0x40000")  # fmt: skip
    counting = CountingClient(registry_server.options())
    report = run_check(target, source, counting, CheckOptions(jobs=4, max_range=1 << 20))
    assert report.ok, "\n".join(report.render())
    p = report.platforms[0]
    bs = take_apart(target, counting).bootstrap
    assert_each_chunk_fetched_once(bs, counting.ranges, p.stats)
    stored_blobs = sum(b.compressed_size for b in bs.blobs)
    assert p.stats["chunk_bytes"] < stored_blobs  # deleted files' chunks were not fetched
    assert p.stats["chunks"] > 40 and p.stats["chunk_ranges"] >= 8  # bounded ranges
    assert p.stats["refetched"] == 0


def test_index_platforms_are_selected_and_missing_ones_named(registry_server, client) -> None:
    images = [
        make_image([layer_tar([("a", tarfile.REGTYPE, b"amd")])], arch="amd64"),
        make_image([layer_tar([("a", tarfile.REGTYPE, b"arm")])], arch="arm64"),
    ]
    plats = [Platform("linux", "amd64"), Platform("linux", "arm64", "v8")]
    source = registry_server.ref("check/multi:1")
    push_index(images, plats, source, client)
    target = registry_server.ref("check/multi:n")
    rconv("convert", "--source", source, "--target", target, "--plain-http", "--all-platforms")
    both = run_check(target, source, client, CheckOptions(all_platforms=True))
    assert both.ok, "\n".join(both.render())
    assert sorted(p.platform for p in both.platforms) == ["linux/amd64", "linux/arm64/v8"]
    arm = run_check(target, source, client, CheckOptions(platforms=(plats[1],)))
    assert arm.ok and [p.platform for p in arm.platforms] == ["linux/arm64/v8"]
    absent = run_check(
        target, source, client, CheckOptions(platforms=(Platform("linux", "s390x"),))
    )
    assert not absent.ok and absent.failed_rules() == {"index-nydus-entry"}
