"""The physical-limit pipeline of a Python converter, run by bench/convert.py as a child.

For each layer, one after the other in this one process: a streaming GET of the blob from the
registry (httpx), gzip inflated with ISA-L (``isal.isal_zlib``), the tar compressed with
zstd level 3 on 2 threads (``zstandard`` stream writer), and sha256 over the gzip input, the
tar and the zstd output. Nothing else: no tar parsing, no chunking, no upload. Whatever a
converter does beyond this costs time on top.

    python3 bench/convert_limit.py HOST REPO DIGEST=DIFF_ID ...

Prints one JSON object (bytes and digests per layer) and fails if a digest does not match.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time

import httpx
import zstandard
from isal import isal_zlib

READ = 1 << 20
GZIP_WBITS = 16 + 15


class _HashSink:
    """Where zstd writes: hashed and counted, then dropped."""

    def __init__(self) -> None:
        self.sha, self.size = hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def convert_layer(client: httpx.Client, url: str) -> dict:
    h_in, h_tar, sink = hashlib.sha256(), hashlib.sha256(), _HashSink()
    size_in = size_tar = 0
    inflate = isal_zlib.decompressobj(GZIP_WBITS)
    cctx = zstandard.ZstdCompressor(level=3, threads=2)
    with client.stream("GET", url) as resp, cctx.stream_writer(sink, closefd=False) as zw:
        resp.raise_for_status()
        for buf in resp.iter_raw(READ):
            h_in.update(buf)
            size_in += len(buf)
            while buf:
                data = inflate.decompress(buf)
                h_tar.update(data)
                size_tar += len(data)
                zw.write(data)
                # a gzip stream may hold several members: start the next one on the rest
                buf = inflate.unused_data if inflate.eof else b""
                if buf:
                    inflate = isal_zlib.decompressobj(GZIP_WBITS)
    return {
        "digest": "sha256:" + h_in.hexdigest(),
        "size": size_in,
        "diff_id": "sha256:" + h_tar.hexdigest(),
        "tar_size": size_tar,
        "zstd_digest": "sha256:" + sink.sha.hexdigest(),
        "zstd_size": sink.size,
    }


def main() -> None:
    host, repo, *layers = sys.argv[1:]
    start = time.perf_counter()
    out = []
    with httpx.Client(timeout=httpx.Timeout(60.0), follow_redirects=True) as client:
        for spec in layers:
            digest, _, diff_id = spec.partition("=")
            result = convert_layer(client, f"http://{host}/v2/{repo}/blobs/{digest}")
            if result["digest"] != digest or (diff_id and result["diff_id"] != diff_id):
                raise SystemExit(f"digest mismatch for {digest}: {result}")
            out.append(result)
    print(json.dumps({"seconds": time.perf_counter() - start, "layers": out}))


if __name__ == "__main__":
    main()
