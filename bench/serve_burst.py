"""`rconv serve`: a burst of 30 pushes converted by 1, 2 and 4 worker processes.

A throw-away ``docker-registry`` notifies ``rconv serve`` (real processes, as in
tests/integration/test_serve.py); workers are ``rconv worker --concurrency 1`` processes on a
``redis-server`` broker (``--broker embedded``: the service's own workers on SQLite). For
each worker count, with and without ``--build-cache-tag``, 30 images sharing two base layers
(16 MiB of random files, ``--base-mib``, and 4 MiB of text) plus a 512 KiB layer of their
own are pushed at once (4 pushes at a time) to one repository, and the run waits for every
``-nydus`` tag. Printed: images per minute (from the first push to the last tag), p50/p95 of
push → Nydus tag per image (the push's end, client side, to the worker's end of the tag
push), and the peak RSS of each worker's processes (the pool process converting, and the
worker's main process).

    python3 bench/serve_burst.py [--workers 1,2,4] [--images 30] [--broker redis|embedded]
                                 [--base-mib 16]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from registry.medium import write_image  # noqa: E402
from registry.model import Image  # noqa: E402
from tests.integration.servekit import (  # noqa: E402
    Deployment,
    deploy,
    gz_layer,
    image_of,
    random_files,
    tar_of,
)

_TEXT = " ".join(f"word{i}" for i in range(4000)).encode()


def base_layers(random_mib: int) -> list:
    return [
        gz_layer(tar_of(random_files(1, random_mib * 2, 512 << 10, "usr/lib"))),
        gz_layer(tar_of({f"usr/share/doc/f{i}": _TEXT + bytes([i]) for i in range(128)})),
    ]


def image(base: list, seed: int) -> Image:
    own = gz_layer(tar_of(random_files(seed, 4, 128 << 10, f"srv/app{seed}")))
    return image_of([*base, own], seed)


def peak_rss(root: int) -> list[tuple[int, int]]:
    """(pid, VmHWM in KiB) of ``root`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                out.append((pid, int(line.split()[1])))
    return out


def worker_roots(dep: Deployment) -> list[int]:
    if dep.workers:
        return [p.pid for p in dep.workers]
    return [pid for pid, _ in peak_rss(dep.serve.pid) if pid != dep.serve.pid][:1]


def burst(dep: Deployment, base: list, images: int, repo: str) -> dict:
    imgs = [image(base, 1000 + i) for i in range(images)]
    pushed: dict[str, float] = {}
    client = dep.registry.client()

    def push(i: int) -> None:
        write_image(imgs[i], dep.registry.ref(f"{repo}:t{i}"), client=client)
        pushed[dep.registry.ref(f"{repo}:t{i}")] = time.time()

    start = time.time()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(push, range(images)))
    deadline = time.monotonic() + 900
    while True:
        tasks = [t for t in dep.tasks() if t["source_tag"] in pushed]
        done = [t for t in tasks if t["state"] in ("succeeded", "failed")]
        if len(done) == images or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    client.close()
    failed = [t for t in done if t["state"] == "failed"]
    if failed or len(done) != images:
        raise SystemExit(f"{len(done)}/{images} finished, failed: {[t['error'] for t in failed]}")
    latency = sorted(t["finished"] - pushed[t["source_tag"]] for t in done)
    hits = sum((t["result"] or {}).get("cache_hits", 0) for t in done)
    end = max(t["finished"] for t in done)
    return {
        "per_minute": images / (end - start) * 60,
        "p50": statistics.median(latency),
        "p95": latency[min(len(latency) - 1, round(0.95 * (len(latency) - 1)))],
        "hits": hits,
        "seconds": end - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--broker", choices=("redis", "embedded"), default="redis")
    parser.add_argument("--base-mib", type=int, default=16, help="random MiB in the base")
    args = parser.parse_args()
    base = base_layers(args.base_mib)
    counts = [int(n) for n in args.workers.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    rows = []
    with tempfile.TemporaryDirectory(prefix="rconv-serve-bench-") as tmp:
        for n in counts:
            for cache in (False, True):
                work = Path(tmp) / f"w{n}-{'cache' if cache else 'cold'}"
                work.mkdir()
                flags = {"build_cache_tag": "nydus-cache"} if cache else {}
                with deploy(work, args.broker, workers=n, **flags) as dep:
                    repo = f"burst{random.randrange(1 << 30)}"
                    result = burst(dep, base, args.images, repo)
                    rss = [peak_rss(root) for root in worker_roots(dep)]
                pool_mib = max(kib for procs in rss for _, kib in procs[1:]) / 1024
                main_mib = max(procs[0][1] for procs in rss) / 1024
                rows.append((n, cache, result, pool_mib, main_mib))
                print(
                    f"{n} worker(s), build cache {'on ' if cache else 'off'}: "
                    f"{result['per_minute']:6.1f} images/min ({result['seconds']:.1f} s), "
                    f"push->tag p50 {result['p50']:.1f} s p95 {result['p95']:.1f} s, "
                    f"cache hits {result['hits']}, peak RSS per worker: pool process "
                    f"{pool_mib:.0f} MiB, main {main_mib:.0f} MiB",
                    flush=True,
                )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
