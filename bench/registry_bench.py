"""Registry throughput: rconv push and pull of a multi-layer image on loopback, next to skopeo.

Builds an image of ``--layers`` uncompressed tar layers (random, so incompressible) totalling
``--size-mb`` MB in an OCI layout, then measures, each against a fresh ``docker-registry``
process so that no tool finds blobs already there:

  rconv push   oci layout -> registry        skopeo push  oci layout -> registry
  rconv pull   registry   -> oci layout      skopeo pull  registry   -> oci layout

and prints MB/s (10^6 bytes of blob data per second) for each. Run from the repository root:
``python bench/registry_bench.py [--size-mb 500] [--layers 8] [--jobs 4]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from registry import mediatype as mt  # noqa: E402
from registry.build import Blob, build_image  # noqa: E402
from registry.medium import copy_image, open_image, write_image  # noqa: E402
from tests.integration.conftest import start_registry  # noqa: E402


class _Random(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self.left)
        b[:n] = os.urandom(n)
        self.left -= n
        return n


def make_image(workdir: Path, size_mb: int, layers: int) -> tuple[str, int]:
    """An OCI layout ``workdir/src:bench``; returns its spec and total blob bytes."""
    per = size_mb * 1_000_000 // layers
    blobs = []
    for i in range(layers):
        path = workdir / f"layer{i}.tar"
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
            info = tarfile.TarInfo(f"data/blob{i}")
            info.size = per
            tf.addfile(info, io.BufferedReader(_Random(per), 1 << 20))
        blobs.append(Blob.from_file(path, mt.OCI_LAYER))
    diff_ids = [b.digest for b in blobs]  # uncompressed: digest == diff_id
    config = {"architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}  # fmt: skip
    img = build_image(config, blobs)
    spec = f"oci:{workdir}/src:bench"
    write_image(img, spec)
    for i in range(layers):
        (workdir / f"layer{i}.tar").unlink()
    return spec, sum(b.size for b in blobs) + img.config_descriptor.size


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def skopeo(*args: str) -> None:
    subprocess.run(["skopeo", "--insecure-policy", *args], check=True, capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=500)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--workdir", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--no-skopeo", action="store_true")
    args = ap.parse_args()
    has_skopeo = shutil.which("skopeo") is not None and not args.no_skopeo
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="rconv-bench-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        src, total = make_image(work, args.size_mb, args.layers)
        print(f"image: {args.layers} layers, {total / 1e6:.1f} MB "
              f"(built in {time.perf_counter() - t:.1f} s)")  # fmt: skip
        from registry.client import RegistryClient
        from registry.options import RegistryOptions

        with contextlib.ExitStack() as stack:
            reg_a = stack.enter_context(start_registry(work / "reg-a"))
            with RegistryClient(RegistryOptions(jobs=args.jobs)) as client:
                dst = reg_a.ref("bench/rconv:1")
                results["rconv push"] = timed(lambda: copy_image(src, dst, client=client))
                out = f"oci:{work}/pulled-rconv:1"
                results["rconv pull"] = timed(lambda: copy_image(dst, out, client=client))
                assert open_image(out).digest == open_image(src).digest
            shutil.rmtree(work / "pulled-rconv")
            if has_skopeo:
                reg_b = stack.enter_context(start_registry(work / "reg-b"))
                dst = f"docker://{reg_b.ref('bench/skopeo:1')}"
                results["skopeo push"] = timed(
                    lambda: skopeo(
                        "copy", "--preserve-digests", "--dest-tls-verify=false", src, dst
                    )  # fmt: skip
                )
                out = f"oci:{work}/pulled-skopeo:1"
                results["skopeo pull"] = timed(
                    lambda: skopeo(
                        "copy", "--preserve-digests", "--src-tls-verify=false", dst, out
                    )  # fmt: skip
                )
    print(f"{'':12} {'seconds':>8} {'MB/s':>8}")
    for name, secs in results.items():
        print(f"{name:12} {secs:8.2f} {total / 1e6 / secs:8.1f}")
    print(json.dumps({k: round(total / 1e6 / v, 1) for k, v in results.items()}))


if __name__ == "__main__":
    main()
