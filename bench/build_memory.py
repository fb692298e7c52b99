"""Peak memory of `rconv build` on a tar holding one huge file, next to a tiny-tar baseline.

The tar is generated on the fly into a pipe (never on disk): one regular file of --size
bytes of incompressible data, so every chunk is new and must be compressed and written.
Peak RSS of each `rconv build` child is read from wait4(); the difference to the baseline
build of a 1 MiB file is what the big file costs. Streaming means it stays within a few
chunks (chunk size 1 MiB) whatever the file size.

    python3 bench/build_memory.py [--size 2G]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

CHUNK = 1 << 20


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1].upper() in units:
        return int(float(text[:-1]) * units[text[-1].upper()])
    return int(text)


def write_tar(fd: int, size: int) -> None:
    with os.fdopen(fd, "wb", buffering=CHUNK) as pipe:
        header = tarfile.TarInfo("big.bin")
        header.size = size
        header.mtime = 0
        pipe.write(header.tobuf(format=tarfile.PAX_FORMAT))
        seed = os.urandom(CHUNK)
        left = size
        counter = 0
        while left:
            # Distinct, incompressible chunks without paying for urandom on every byte.
            step = min(left, CHUNK)
            block = counter.to_bytes(8, "little") + seed[8:step] if step > 8 else seed[:step]
            pipe.write(block)
            counter += 1
            left -= step
        pipe.write(b"\0" * (-size % 512) + b"\0" * 1024)


def run_build(size: int, work: str) -> tuple[int, float]:
    read_fd, write_fd = os.pipe()
    feeder = threading.Thread(target=write_tar, args=(write_fd, size))
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "convert", "build", "/dev/stdin",
         "--bootstrap", os.path.join(work, f"b{size}.boot"),
         "--blob-dir", os.path.join(work, f"blobs{size}")],
        stdin=read_fd, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(read_fd)
    feeder.start()
    _, status, usage = os.wait4(proc.pid, 0)
    feeder.join()
    elapsed = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"rconv build failed for size {size}")
    return usage.ru_maxrss * 1024, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2G", help="size of the big file (default 2G)")
    args = parser.parse_args()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory() as work:
        base_rss, base_t = run_build(CHUNK, work)
        big_rss, big_t = run_build(size, work)
    print(f"baseline (1 MiB file):  peak RSS {base_rss / 2**20:8.1f} MiB  {base_t:6.1f} s")
    print(
        f"big ({size / 2**30:.2f} GiB file):   peak RSS {big_rss / 2**20:8.1f} MiB  {big_t:6.1f} s"
        f"  ({size / 2**20 / big_t:.0f} MiB/s)"
    )
    print(f"extra peak RSS for the big file: {(big_rss - base_rss) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
