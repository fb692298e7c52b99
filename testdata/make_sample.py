"""Writes the sample image's layer tars: a small multi-layer root filesystem that exercises
what real images contain (hard links, symlinks, xattrs, devices, a multi-chunk file, OCI
whiteouts, an opaque directory, a directory replaced by a file, data repeated across layers).

Deterministic: fixed mtimes, PAX format, gzip with mtime 0, so every run writes the same
bytes. Usage: python3 testdata/make_sample.py OUTDIR  → OUTDIR/layer1.tar.gz … layer3.tar.gz,
or python3 testdata/make_sample.py --oci DIR → an OCI image layout holding the image as tag 1.
"""

from __future__ import annotations

import gzip
import io
import random
import sys
import tarfile
from pathlib import Path

MTIME = 1_700_000_000


def _entry(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, **kw) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.mtime = MTIME
    ti.uname = ti.gname = ""
    for key, value in kw.items():
        setattr(ti, key, value)
    return ti


class Layer:
    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def dir(self, name: str, mode: int = 0o755, **kw) -> None:
        self.tar.addfile(_entry(name.rstrip("/") + "/", tarfile.DIRTYPE, mode, **kw))

    def file(self, name: str, data: bytes, mode: int = 0o644, **kw) -> None:
        self.tar.addfile(_entry(name, size=len(data), mode=mode, **kw), io.BytesIO(data))

    def link(self, name: str, target: str, mode: int = 0o644) -> None:
        # A tar writer repeats the target's metadata in the link entry (tar, Go, docker).
        self.tar.addfile(_entry(name, tarfile.LNKTYPE, mode, linkname=target))

    def symlink(self, name: str, target: str) -> None:
        self.tar.addfile(_entry(name, tarfile.SYMTYPE, 0o777, linkname=target))

    def node(self, name: str, kind: bytes, major: int = 0, minor: int = 0, mode=0o644) -> None:
        self.tar.addfile(_entry(name, kind, mode, devmajor=major, devminor=minor))

    def gz_bytes(self) -> bytes:
        self.tar.close()
        out = io.BytesIO()
        with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=6) as gz:
            gz.write(self.buf.getvalue())
        return out.getvalue()


def _blob(seed: int, size: int) -> bytes:
    rng = random.Random(seed)
    return rng.randbytes(size)


def layers() -> list[bytes]:
    shared = _blob(1, 3 * 1024 * 1024 + 12345)  # a multi-chunk file, re-added in layer 2
    text = b"".join(b"line %d of a compressible text file\n" % i for i in range(20000))

    base = Layer()
    for d in ("etc", "usr", "usr/bin", "usr/lib", "var", "var/cache", "opaque", "gone", "tmp"):
        base.dir(d, 0o1777 if d == "tmp" else 0o755)
    base.file("etc/hostname", b"sample\n")
    base.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", uid=0, gid=0)
    base.file("etc/shadow", b"root:*:19000:0:99999:7:::\n", mode=0o640, gid=42)
    base.file("usr/bin/tool", shared, mode=0o755)
    base.link("usr/bin/tool-alias", "usr/bin/tool", mode=0o755)
    base.file("usr/bin/ping", b"\x7fELF-ish", mode=0o4755)
    cap = _entry("usr/bin/cap-tool", size=4, mode=0o755)
    cap.pax_headers = {
        "SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00"
        "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        "SCHILY.xattr.user.comment": "hello",
    }
    base.tar.addfile(cap, io.BytesIO(b"cap!"))
    base.symlink("usr/bin/sh", "tool")
    base.symlink("etc/localtime", "/usr/share/zoneinfo/UTC")
    base.file("usr/lib/big.txt", text)
    base.file("usr/lib/empty", b"")
    base.node("usr/lib/null", tarfile.CHRTYPE, 1, 3, 0o666)
    base.node("usr/lib/fifo", tarfile.FIFOTYPE)
    base.file("opaque/old-1", b"old one\n")
    base.file("opaque/old-2", b"old two\n")
    base.file("gone/file", b"will be a file soon\n")
    base.file("var/cache/delete-me", b"stale cache\n")

    upper = Layer()
    upper.dir("var/cache")
    upper.file("var/cache/.wh.delete-me", b"")
    upper.dir("opaque")
    upper.file("opaque/.wh..wh..opq", b"")
    upper.file("opaque/new", b"fresh\n")
    upper.dir("opt", 0o750, uid=1000, gid=1000)
    upper.file("opt/tool-copy", shared, mode=0o755, uid=1000, gid=1000)  # same chunks as tool
    upper.file("etc/hostname", b"sample-2\n")

    top = Layer()
    top.file("gone", b"now a file\n")  # replaces the directory gone/
    top.file(".wh.tmp", b"")
    top.dir("srv")
    top.file("srv/data.bin", _blob(2, 200_000))
    return [base.gz_bytes(), upper.gz_bytes(), top.gz_bytes()]


def write_oci_layout(out: Path, tag: str = "1") -> str:
    """The sample as an OCI image layout (``oci:OUT:TAG``); returns the manifest digest."""
    import hashlib

    from registry import mediatype as mt
    from registry.build import Blob, build_image
    from registry.medium import write_image

    blobs, diff_ids = [], []
    for data in layers():
        blobs.append(Blob.from_bytes(data, mt.OCI_LAYER_GZIP))
        diff_ids.append("sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest())
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin"], "Cmd": ["/usr/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"sample layer {i + 1}"} for i in range(len(blobs))],
    }
    image = build_image(config, blobs)
    return write_image(image, f"oci:{out}:{tag}").digest


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "--oci":
        print(write_oci_layout(Path(argv[2])))
        return 0
    if len(argv) != 2:
        print("usage: make_sample.py OUTDIR | --oci LAYOUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(layers(), start=1):
        (out / f"layer{i}.tar.gz").write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
