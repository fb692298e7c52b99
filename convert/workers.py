"""The thread pools of a conversion, owned in one place and sized from ``--jobs``.

- ``layers``: stage 1, one source layer per task (pull, decompress, parse, chunk);
- ``compress``: CRC + compression batches of every layer's chunker (the codecs release the GIL);
- ``copy``: stage 2's copies of kept chunks into final blobs (I/O and SHA-256), overlapping
  the next layers and the bootstrap;
- ``upload``: final blobs pushed as soon as they are complete (registry targets).
No task waits on a task of its own pool, so no size can deadlock. The registry's own uploader
(``registry.transfer``) is bounded by the same number.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor


class Workers:
    def __init__(self, jobs: int) -> None:
        jobs = max(1, jobs)
        self.jobs = jobs
        self.layers = ThreadPoolExecutor(jobs, thread_name_prefix="rconv-layer")
        self.compress = ThreadPoolExecutor(jobs, thread_name_prefix="rconv-compress")
        self.copy = ThreadPoolExecutor(jobs, thread_name_prefix="rconv-copy")
        self.upload = ThreadPoolExecutor(jobs, thread_name_prefix="rconv-upload")

    def close(self) -> None:
        """Stop every pool; queued tasks are dropped (a failure or Ctrl-C got here first)."""
        for pool in (self.layers, self.compress, self.copy, self.upload):
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
