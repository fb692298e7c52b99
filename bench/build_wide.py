"""`rconv build` of one wide layer: entries per second, from the tar.gz and from the plain tar.

The layer is the first of bench/wide_image.py's image (~86k entries: small text files,
directories, symlinks), built once and cached like the convert benchmark's images. Each build
runs as a child process pinned to one core (``taskset``), N rounds, interleaved; the figure
is tar entries per second of wall time, start-up included, with peak RSS. The baseline is
``gzip -dc`` of the same layer on the same core, which only inflates.

    python3 bench/build_wide.py [--rounds 3] [--cache DIR]
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from installed import byte_compile  # noqa: E402
from wide_image import ensure_wide_image  # noqa: E402


def timed(argv: list[str], **kw) -> tuple[float, int]:
    start = time.perf_counter()
    kw.setdefault("stdout", subprocess.DEVNULL)
    proc = subprocess.Popen(argv, **kw)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(argv)}")
    return seconds, usage.ru_maxrss * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "rconv-bench")
    args = ap.parse_args()
    byte_compile()  # rconv as installed (bench/installed.py)
    root, meta, _ = ensure_wide_image(args.cache.expanduser(), False)
    layer = meta["layers"][0]
    entries = layer["entries"]
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    with tempfile.TemporaryDirectory(prefix="rconv-build-") as work:
        tgz = root / layer["file"]
        tar = Path(work) / "layer.tar"
        with gzip.open(tgz, "rb") as src, open(tar, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        runs: dict[str, list[tuple[float, int]]] = {"tar.gz": [], "tar": [], "gzip -dc": []}
        for rnd in range(args.rounds):
            for name, source in (("tar.gz", tgz), ("tar", tar)):
                out = Path(work) / f"{name}-{rnd}"
                out.mkdir()
                argv = [*pin, sys.executable, "-m", "convert", "build", str(source),
                        "--bootstrap", str(out / "boot"), "--blob-dir", str(out)]  # fmt: skip
                runs[name].append(timed(argv, cwd=REPO_ROOT))
                shutil.rmtree(out)
            with open(os.devnull, "wb") as null:
                runs["gzip -dc"].append(timed([*pin, "gzip", "-dc", str(tgz)], stdout=null))
    print(f"layer {layer['file']}: {entries} tar entries, {layer['size'] / 1e6:.1f} MB gzip, "
          f"{layer['tar_size'] / 1e6:.1f} MB tar; medians of {args.rounds}, one core")  # fmt: skip
    for name, got in runs.items():
        secs = statistics.median(s for s, _ in got)
        rss = statistics.median(r for _, r in got)
        print(f"  {name:9} {secs:6.2f} s  {entries / secs:8.0f} entries/s  "
              f"peak RSS {rss / 2**20:6.1f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
