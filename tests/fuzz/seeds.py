"""Valid inputs the fuzz targets start from, made here by deterministic code (no randomness):
tars written by Python's ``tarfile`` in its three formats plus hand-made sparse, long-name and
global-header entries; gzip and zstd layers; v5 and v6 bootstraps and blobs written by rconv's
own writers from those tars; image manifests, indexes, configs and references.

Upstream fixtures are added by the tests through the ``upstream`` fixture (``upstream_seeds``).
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import tarfile
from pathlib import Path

import zstandard

from rafs.bootstrap import write_bootstrap
from rafs.model import Bootstrap, new_root
from rafs.overlay import apply_layer
from rafs.tarstream import read_layer
from registry import mediatype as mt
from registry.build import Blob, build_image, build_index
from registry.model import Platform
from tests.fuzz.harness import blob_meta_input
from tests.rafs.chunking import serial_chunker
from tests.tarmaker import END, entry, long_name, pax, sparse_pax_1_0


def _tarfile(fmt: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:

        def add(name, kind=tarfile.REGTYPE, data=None, **attrs):
            info = tarfile.TarInfo(name)
            info.type, info.mtime, info.mode = kind, 1_700_000_000, 0o644
            for key, value in attrs.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        add("./", tarfile.DIRTYPE, mode=0o755)
        add("etc", tarfile.DIRTYPE, mode=0o755)
        add("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n" * 3)
        add("etc/big", data=bytes(range(256)) * 40)  # several 4 KiB chunks
        add("etc/link", tarfile.LNKTYPE, linkname="etc/passwd")
        add("etc/sym", tarfile.SYMTYPE, linkname="../etc/passwd")
        add("dev", tarfile.DIRTYPE, mode=0o755)
        add("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3)
        add("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0)
        add("dev/fifo", tarfile.FIFOTYPE)
        add("var/.wh.gone", data=b"")
        add("opt/.wh..wh..opq", data=b"")
        add("d" * 120 + "/" + "f" * 90, data=b"long path")  # ustar prefix split
        if fmt == tarfile.PAX_FORMAT:
            xattrs = {"SCHILY.xattr.user.k": "v", "SCHILY.xattr.security.capability": "\x01"}
            add("x", data=b"xattrs", pax_headers=xattrs)
            add("mtime", data=b"", pax_headers={"mtime": "1700000000.123456789"})
    return buf.getvalue()


def _handmade() -> list[bytes]:
    sparse = b"".join(
        part  # a small 1.0 sparse file: two data segments in a 64 KiB hole
        for part in sparse_pax_1_0(b"sparse", 65536, [(4096, b"a" * 100), (60000, b"b" * 10)])
    )
    old_sparse = entry(
        b"oldsparse",
        b"c" * 512,
        b"S",
        gnu=True,
        fields={386: b"%011o\0%011o\0" % (8192, 512), 483: b"%011o\0" % 16384},
    )
    return [
        long_name(b"n" * 200 + b"/" + b"m" * 150) + entry(b"short", b"data", gnu=True) + END,
        pax([(b"comment", b"global")], b"g") + entry(b"after-global", b"x") + END,
        pax([(b"path", b"pax/path"), (b"linkpath", b"t"), (b"uid", b"7")])
        + entry(b"p", b"", b"2")
        + END,
        sparse + END,
        old_sparse + END,
        entry(b"dup", b"1") + entry(b"dup", b"22") + entry(b"dir/", flag=b"5") + END,
        pax(
            [
                (b"GNU.sparse.major", b"0"),
                (b"GNU.sparse.minor", b"1"),
                (b"GNU.sparse.name", b"s01"),
                (b"GNU.sparse.realsize", b"9000"),
                (b"GNU.sparse.map", b"0,5,8000,5"),
            ]
        )
        + entry(b"GNUSparseFile.0/s01", b"abcdeABCDE")
        + END,  # fmt: skip
    ]


@functools.cache
def tars() -> list[bytes]:
    fmts = (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT)
    return [_tarfile(fmt) for fmt in fmts] + _handmade()


@functools.cache
def layers() -> list[bytes]:
    """Compressed layers: gzip (two members too) and zstd (with a skippable frame)."""
    tar = tars()[0]
    cctx = zstandard.ZstdCompressor(write_checksum=True)
    skippable = b"\x50\x2a\x4d\x18" + (4).to_bytes(4, "little") + b"skip"
    half = len(tar) // 2
    return [
        gzip.compress(tar, mtime=0),
        gzip.compress(tar[:half], mtime=0) + gzip.compress(tar[half:], mtime=0),
        cctx.compress(tar),
        skippable + cctx.compress(tar[:half]) + cctx.compress(tar[half:]),
        tar,
    ]


def _build(tar: bytes, version: int, compressor: str, digester: str) -> tuple[bytes, bytes, list]:
    out = io.BytesIO()
    chunker = serial_chunker(
        out, fs_version=version, chunk_size=0x1000, compressor=compressor, digester=digester
    )
    layer = read_layer(io.BytesIO(tar), chunker.add_file)
    info = chunker.writer.finish()
    root = apply_layer(new_root(), layer)
    bs = Bootstrap(
        root=root,
        blobs=[info] if info.chunk_count else [],
        version=version,
        chunk_size=0x1000,
        compressor=compressor,
        digester=digester,
        prefetch=[b"/etc"],
    )
    boot = io.BytesIO()
    write_bootstrap(boot, bs)
    return boot.getvalue(), out.getvalue(), bs.blobs


@functools.cache
def _builds() -> list[tuple[int, bytes, bytes, list]]:
    out = []
    for version, compressor, digester in (
        (6, "zstd", "blake3"),
        (6, "lz4_block", "sha256"),
        (6, "none", "blake3"),
        (5, "lz4_block", "blake3"),
        (5, "none", "sha256"),
    ):
        boot, blob, blobs = _build(tars()[0], version, compressor, digester)
        out.append((version, boot, blob, blobs))
    return out


def bootstraps(version: int) -> list[bytes]:
    return [boot for v, boot, _, _ in _builds() if v == version]


def v6_blobs() -> list[bytes]:
    return [blob for v, _, blob, _ in _builds() if v == 6]


def blob_meta_inputs() -> list[bytes]:
    return [blob_meta_input(blobs[0], blob) for v, _, blob, blobs in _builds() if v == 6]


@functools.cache
def _images():
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["A=1"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "2" * 64, "sha256:" + "3" * 64]},
        "history": [{"created_by": "x"}],
    }
    layers = [
        Blob.from_bytes(b"layer-a", mt.layer_type("gzip")),
        Blob.from_bytes(b"layer-b", mt.layer_type("zstd"), annotations={"k": "v"}),
    ]
    oci = build_image(config, layers, annotations={"org.opencontainers.image.ref.name": "x"})
    docker = build_image(config, layers, oci=False)
    index = build_index([oci, docker], platforms=[None, Platform("linux", "arm64", "v8")])
    return config, oci, docker, index


def manifests() -> list[bytes]:
    _, oci, docker, _ = _images()
    return [oci.raw_manifest(), docker.raw_manifest()]


def indexes() -> list[bytes]:
    return [_images()[3].raw_manifest()]


def configs() -> list[bytes]:
    return [json.dumps(_images()[0]).encode()]


def references() -> list[bytes]:
    digest = "sha256:" + "ab" * 32
    return [
        s.encode()
        for s in (
            "alpine",
            "alpine:3.19",
            "docker.io/library/alpine:latest",
            "localhost:5000/a/b/c:t",
            f"ghcr.io/o/r:t@{digest}",
            "[::1]:5000/app",
            "oci:/tmp/layout:tag",
            "docker-archive:/tmp/x.tar:img:1",
            "docker://quay.io/x/y",
        )
    ]


def challenges() -> list[bytes]:
    return [
        b'Bearer realm="https://auth.example/token",service="registry",'
        b'scope="repository:a/b:pull,push"',
        b'Basic realm="r", Bearer realm="x\\"y",error="invalid_token"',
    ]


def upstream_seeds(upstream: Path) -> dict[str, list[bytes]]:
    """Seeds from the upstream fixtures (tars, bootstraps, blobs with a TOC)."""
    read = lambda *parts: upstream.joinpath(*parts).read_bytes()  # noqa: E731
    return {
        "tar": [read("tar", "all-entry-type.tar"), read("tar", "all-entry-type-macos.tar")],
        "v6": [read("bootstrap", "rafs-v6-2.2.boot")],
        "v5": [
            read("repeatable", "sha256-nocompress-repeatable"),
            read("repeatable", "blake3-lz4_block-non_repeatable"),
        ],
        "toc": [
            read("blobs", "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"),
            read("toc", "2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca"),
        ],
    }


def strategies(upstream: Path | None = None) -> dict:
    """Target name -> hypothesis strategy of inputs (what the CI budget draws, and more)."""
    from hypothesis import strategies as st

    from tests.fuzz.harness import json_mutated, mutated

    extra = upstream_seeds(upstream) if upstream is not None else {}
    return {
        "tar": mutated(tars() + extra.get("tar", []), tar_checksums=True),
        "layer": mutated(layers()),
        "v6": mutated(bootstraps(6) + extra.get("v6", []), resize=False),
        "v5": mutated(bootstraps(5) + extra.get("v5", []), resize=False),
        "bootstrap": mutated(bootstraps(5) + bootstraps(6)),
        "toc": mutated(v6_blobs() + extra.get("toc", []), trailer=True, resize=False),
        "blob_meta": mutated(blob_meta_inputs(), resize=False),
        "manifest": json_mutated(manifests()),
        "config": json_mutated(configs()),
        "index": json_mutated(indexes()),
        "reference": st.one_of(mutated(references()), st.text(max_size=40).map(str.encode)),
        "challenge": st.one_of(mutated(challenges()), st.text(max_size=80).map(str.encode)),
    }


def corpus(upstream: Path | None = None) -> dict[str, list[bytes]]:
    """Target name -> its unmutated seeds (the starting corpus of a coverage-guided fuzzer)."""
    extra = upstream_seeds(upstream) if upstream is not None else {}
    return {
        "tar": tars() + extra.get("tar", []),
        "layer": layers(),
        "v6": bootstraps(6) + extra.get("v6", []),
        "v5": bootstraps(5) + extra.get("v5", []),
        "bootstrap": bootstraps(5) + bootstraps(6),
        "toc": v6_blobs() + extra.get("toc", []),
        "blob_meta": blob_meta_inputs(),
        "manifest": manifests(),
        "config": configs(),
        "index": indexes(),
        "reference": references(),
        "challenge": challenges(),
    }
