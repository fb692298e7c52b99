"""Stage 1 in worker processes, so that layers are parsed on every core.

Parsing a tar, building the tree and chunking are Python work under one GIL: in threads, two
layers take turns on one core while the other core idles (a 261k-entry image spent 8 of its
10 s holding the GIL). Here each layer is converted by ``convert.layers.convert_layer`` in a
process of a pool, exactly as a thread would (same code, same blob bytes); what it built comes
back through ``rafs.flattree`` and the main process carries on with stage 2 as before.
``--oci-ref`` indexes its gzip layers (``rafs.zran.build_zran_layer``) the same way.

The layer's compressed bytes still come from the main process, the only one that talks to
the source (registry sessions, tokens, archives): a pump thread there copies the verified
stream over a Unix socket (abstract namespace: no path in the work directory, no length
limit) that the worker connects to. The main process listens before the task starts, so
connecting never waits, and it waits for the connection and writes without blocking,
watching the task: a worker that stops reading (bad input) or dies ends the pump instead of
hanging it, and the pump closing its end ends the worker's read.

A process that may not have children (a daemonic pool worker, such as Celery's prefork
workers under ``rconv serve``) runs the same stage 1 in the calling thread instead, with a
compression pool of its own: same bytes, one core per conversion, which is how those pools
scale anyway.

Workers come from a fork server (threads of the main process are never forked), ignore
Ctrl-C (the main process ends them: closing a FIFO makes its reader fail fast), and
receive the options and the chunk dictionary once, when they start.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convert.errors import LayerError
from convert.forkserver import worker_context
from convert.heap import trim_heap
from convert.layers import SpeculativeLayer, convert_layer
from rafs.chunkdict import ChunkDict
from rafs.errors import RafsError
from rafs.flattree import FlatLayer, flatten, unflatten
from rafs.model import BlobInfo, Chunk
from rafs.options import RafsOptions
from rafs.streams import Readable

if TYPE_CHECKING:  # imported where used: only --oci-ref indexes layers (12 ms of start-up)
    from rafs.zran.layer import ZranLayer

BUFFER = 1 << 20  # socket buffer: fewer wake-ups of the pump
READ_SIZE = 1 << 20
# Starting the fork server and its workers costs ~0.2 s; stage 1 in threads gets through
# 32 MiB of gzip layers in about that (the GIL-bound part is what processes win back).
THREADS_BELOW = 32 << 20


class LayerProcesses:
    """Stage 1 of layers on a pool of ``jobs`` worker processes, or in the calling threads
    where processes cannot or should not start (see the module docstring)."""

    def __init__(
        self, jobs: int, opts: RafsOptions, chunk_dict: ChunkDict, max_layer_size: int | None
    ) -> None:
        self._stop = threading.Event()
        self._jobs, self._init = max(1, jobs), (opts, chunk_dict, max_layer_size)
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._threads = False  # stage 1 in the calling threads
        self._ints: dict[int, int] = {}  # numbers of the trees received (rafs.flattree)
        if multiprocessing.current_process().daemon:  # may not start processes
            self._use_threads()

    def _use_threads(self) -> None:
        self._threads = True
        self._compress = ThreadPoolExecutor(self._jobs, thread_name_prefix="rconv-compress")

    def start(self, compressed_bytes: int) -> None:
        """Get ready for layers of ``compressed_bytes`` in all, before the first: below
        ``THREADS_BELOW`` they are converted in threads (starting the workers would cost more
        than it saves), else the workers start now. Not called (a conversion served wholly
        by the build cache), nothing starts; ``convert`` starts the workers if need be."""
        with self._lock:
            if not self._threads and self._pool is None and compressed_bytes < THREADS_BELOW:
                self._use_threads()
        if not self._threads:
            self._started()

    def _started(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self._jobs,
                    mp_context=worker_context(),
                    initializer=_start_worker,
                    initargs=self._init,
                )
                for _ in range(self._jobs):  # spawn every worker now, not at its first task
                    self._pool.submit(_ready)
            return self._pool

    def convert(
        self,
        digest: str,
        open_compressed: Callable[[], AbstractContextManager[Readable]],
        out_path: Path,
        where: str,
        lookup: Callable[[str, int], Chunk],
    ) -> SpeculativeLayer:
        """Stage 1 of one layer in a worker; raises LayerError as ``convert_layer`` does, and
        the source's own errors (registry, digest mismatch) first."""
        if self._threads:
            opts, chunk_dict, max_layer_size = self._init
            return convert_layer(
                digest, open_compressed, out_path, opts, max_layer_size, chunk_dict,
                self._compress, where,
            )  # fmt: skip
        flat, info, warnings, bytes_in = self._run(
            _convert, digest, open_compressed, out_path, where
        )
        try:
            tree, stored = unflatten(flat, info, lookup, self._ints)
        except KeyError as exc:
            raise LayerError(f"{where}: layer {digest}: unknown dictionary chunk {exc}") from None
        del flat
        trim_heap()  # the flat layer's buffers leave holes (convert.heap)
        return SpeculativeLayer(digest, tree, out_path, info, stored, warnings, bytes_in, True)

    def index_zran(
        self,
        digest: str,
        open_compressed: Callable[[], AbstractContextManager[Readable]],
        out_path: Path,
        where: str,
    ) -> ZranLayer:
        """``rafs.zran.build_zran_layer`` of one gzip layer in a worker, the ref blob written
        to ``out_path``; raises LayerError naming the layer for bad input."""
        if self._threads:
            opts, _, max_layer_size = self._init
            return _index_zran_here(
                digest, open_compressed, out_path, where, opts.chunk_size, max_layer_size
            )
        flat, info, warnings, facts = self._run(
            _index_zran, digest, open_compressed, out_path, where
        )
        tree, chunks = unflatten(flat, info, _no_foreign_chunks, self._ints)
        del flat
        trim_heap()
        ref_size, stream_digest, bytes_in, contexts = facts
        from rafs.zran.layer import ZranLayer

        return ZranLayer(tree, info, ref_size, stream_digest, bytes_in, contexts, chunks, warnings)

    def _run(
        self,
        job: Callable[..., Any],
        digest: str,
        open_compressed: Callable[[], AbstractContextManager[Readable]],
        out_path: Path,
        where: str,
    ) -> Any:
        """``job`` in a worker, fed the layer's compressed stream; its result."""
        address = f"\0rconv-{os.getpid()}-{uuid.uuid4().hex}"  # NUL first: abstract
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(address)
            listener.listen(1)
            listener.setblocking(False)
            future = self._started().submit(job, digest, address, str(out_path), where)
        except BaseException:
            listener.close()
            raise
        try:
            try:
                self._pump(open_compressed, listener, future, digest, where)
            finally:
                listener.close()  # a connection never accepted is reset: the worker sees EOF
        except BaseException:
            _settle(future)  # the worker fails fast once its socket is closed; its error is moot
            raise
        return _result(future, digest, where)

    def _pump(
        self,
        open_compressed: Callable[[], AbstractContextManager[Readable]],
        listener: socket.socket,
        future: Future,
        digest: str,
        where: str,
    ) -> None:
        def wait(sock: socket.socket, writing: bool) -> None:
            """Until ``sock`` is ready; raises the worker's error if it ended meanwhile."""
            while True:
                if self._stop.is_set():
                    raise InterruptedError("conversion stopped")
                ready = select.select([] if writing else [sock], [sock] if writing else [], [], 0.1)
                if ready[0] or ready[1]:
                    return
                if future.done():  # stopped reading (bad input), or the worker died
                    _result(future, digest, where)  # raises the worker's error
                    raise LayerError(f"{where}: layer {digest}: the worker stopped reading")

        wait(listener, False)
        conn, _ = listener.accept()
        with conn:
            conn.setblocking(False)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
            with open_compressed() as src:
                while data := src.read(READ_SIZE):
                    view = memoryview(data)
                    while view:
                        try:
                            view = view[conn.send(view) :]
                        except BlockingIOError:
                            wait(conn, True)
                        except (BrokenPipeError, ConnectionResetError):  # the worker failed
                            _result(future, digest, where)
                            raise LayerError(
                                f"{where}: layer {digest}: the worker stopped reading"
                            ) from None
            conn.shutdown(socket.SHUT_WR)  # EOF for the worker

    def stop(self) -> None:
        """Make the pumps give up: each closes its FIFO, which ends its worker's task."""
        self._stop.set()

    def close(self) -> None:
        """Stop, then wait for the workers to exit (their tasks end once the pumps stop)."""
        self._stop.set()
        if self._threads:
            self._compress.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)


def _settle(future: Future) -> None:
    try:
        future.result()
    except BaseException:  # noqa: B036 - only waiting for the worker to let go of its files
        pass


def _result(future: Future, digest: str, where: str) -> Any:
    try:
        return future.result()
    except BrokenProcessPool:
        raise LayerError(
            f"{where}: layer {digest}: the worker process died (killed, out of memory, or a "
            'script without the `if __name__ == "__main__":` guard multiprocessing needs)'
        ) from None


# --------------------------------------------------------------------------- in the worker

_worker: dict[str, Any] = {}


def _start_worker(opts: RafsOptions, chunk_dict: ChunkDict, max_layer_size: int | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import gc

    gc.disable()  # as convert.gcpause does in the main process, for the same reason
    _worker.update(opts=opts, chunk_dict=chunk_dict, max_layer_size=max_layer_size)


def _ready() -> None:
    pass


def _connected(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
    sock.connect(address)
    return sock


def _convert(
    digest: str, address: str, out_path: str, where: str
) -> tuple[FlatLayer, BlobInfo, list[str], int]:
    with _connected(address) as sock, ThreadPoolExecutor(1) as compress:
        with sock.makefile("rb", buffering=0) as raw:
            spec = convert_layer(
                digest, lambda: nullcontext(raw), Path(out_path), _worker["opts"],
                _worker["max_layer_size"], _worker["chunk_dict"], compress, where,
            )  # fmt: skip
    return flatten(spec.tree, spec.info, spec.chunks), spec.info, spec.warnings, spec.bytes_in


def _index_zran(
    digest: str, address: str, out_path: str, where: str
) -> tuple[FlatLayer, BlobInfo, list[str], tuple[int, str, int, int]]:
    with _connected(address) as sock, sock.makefile("rb", buffering=0) as raw:
        zl = _index_zran_here(
            digest, lambda: nullcontext(raw), Path(out_path), where, _worker["opts"].chunk_size,
            _worker["max_layer_size"],
        )  # fmt: skip
    facts = (zl.ref_size, zl.digest, zl.bytes_in, zl.contexts)
    return flatten(zl.tree, zl.info, zl.chunks), zl.info, zl.warnings, facts


def _index_zran_here(
    digest: str,
    open_compressed: Callable[[], AbstractContextManager[Readable]],
    out_path: Path,
    where: str,
    chunk_size: int,
    max_layer_size: int | None,
) -> ZranLayer:
    from rafs.zran.layer import build_zran_layer

    try:
        with open_compressed() as raw, open(out_path, "wb") as out:
            # ``open_compressed`` gives the verified stream (or its copy, pumped by a process
            # that verifies it): no second digest of it here.
            return build_zran_layer(raw, out, digest, chunk_size, max_layer_size, verified=True)
    except RafsError as exc:
        raise LayerError(f"{where}: layer {digest}: {exc}") from exc


def _no_foreign_chunks(blob_id: str, index: int) -> Chunk:
    raise KeyError((blob_id, index))  # a zran layer only references its own chunks
