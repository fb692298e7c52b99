"""The pools of a conversion, owned in one place and sized from ``--jobs``.

- ``processes``: stage 1 in worker processes, one source layer per task (decompress, parse,
  chunk, compress; convert.layerproc);
- ``layers``: one thread per layer in stage 1, pulling it and feeding it to its process;
- ``copy``: stage 2's copies of kept chunks into final blobs (I/O and SHA-256), overlapping
  the next layers and the bootstrap;
- ``upload``: final blobs pushed as soon as they are complete (registry targets).
No task waits on a task of its own pool, so no size can deadlock. The registry's own uploader
(``registry.transfer``) is bounded by the same number.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from convert.layerproc import LayerProcesses
from rafs.chunkdict import ChunkDict
from rafs.options import RafsOptions


class Workers:
    def __init__(
        self, jobs: int, opts: RafsOptions, chunk_dict: ChunkDict, max_layer_size: int | None
    ) -> None:
        jobs = max(1, jobs)
        self.jobs = jobs
        self.processes = LayerProcesses(jobs, opts, chunk_dict, max_layer_size)
        self.layers = ThreadPoolExecutor(jobs, thread_name_prefix="rconv-layer")
        self.copy = ThreadPoolExecutor(jobs, thread_name_prefix="rconv-copy")
        self.upload = ThreadPoolExecutor(jobs, thread_name_prefix="rconv-upload")

    def close(self) -> None:
        """Stop every pool; queued tasks are dropped (a failure or Ctrl-C got here first).
        The pumps stop first, which ends the worker processes' tasks."""
        self.processes.stop()
        for pool in (self.layers, self.copy, self.upload):
            pool.shutdown(wait=True, cancel_futures=True)
        self.processes.close()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
