"""convert.layerproc: stage 1 in worker processes gives what stage 1 in a thread gives, and
every way it can fail ends with the right error instead of a hang."""

from __future__ import annotations

import gzip
import hashlib
import io
import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import pytest

from convert.errors import LayerError
from convert.layerproc import LayerProcesses
from convert.layers import convert_layer
from rafs.chunkdict import NoChunkDict
from rafs.options import RafsOptions
from rafs.zran.layer import build_zran_layer
from registry.digest import verifying
from registry.errors import DigestMismatch
from tests.tarmaker import END, entry
from tests.treeutil import tree_signature

DIGEST = "sha256:" + "ab" * 32
OPTS = RafsOptions(chunk_size=0x1000)


def _layer() -> bytes:
    files = b"".join(entry(b"d/f%d" % i, b"x%d" % i * (700 * i + 1)) for i in range(12))
    return gzip.compress(files + entry(b"d/link", flag=b"1", link=b"d/f3") + END, mtime=0)


class _Failing(io.RawIOBase):
    """The first half of a layer, then the source's own error (a registry dropping out)."""

    def __init__(self, data: bytes) -> None:
        self.data = io.BytesIO(data[: len(data) // 2])

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        out = self.data.read(n)
        if not out:
            raise ConnectionError("registry went away")
        return out


@pytest.fixture(scope="module")
def processes():
    procs = LayerProcesses(2, OPTS, NoChunkDict(), None)
    yield procs
    procs.close()


def _no_lookup(blob_id: str, index: int):
    raise KeyError((blob_id, index))


def test_same_tree_and_blob_as_in_a_thread(processes, tmp_path: Path) -> None:
    data = _layer()
    spec = processes.convert(
        DIGEST, lambda: nullcontext(io.BytesIO(data)), tmp_path / "p", "img", _no_lookup
    )
    with ThreadPoolExecutor(1) as pool:
        local = convert_layer(
            DIGEST, lambda: nullcontext(io.BytesIO(data)), tmp_path / "t", OPTS, None,
            NoChunkDict(), pool, "img",
        )  # fmt: skip
    assert (tmp_path / "p").read_bytes() == (tmp_path / "t").read_bytes()
    assert spec.info.blob_id == local.info.blob_id and spec.bytes_in == local.bytes_in
    assert [c.digest for c in spec.chunks] == [c.digest for c in local.chunks]
    assert tree_signature(spec.tree.root) == tree_signature(local.tree.root)


def test_the_socket_leaves_nothing_in_the_current_directory(
    processes, tmp_path: Path, monkeypatch
) -> None:
    """The pump's socket is in the abstract namespace: no file appears wherever rconv runs."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    data = _layer()
    processes.convert(
        DIGEST, lambda: nullcontext(io.BytesIO(data)), tmp_path / "p", "img", _no_lookup
    )
    assert list(cwd.iterdir()) == []


def test_bad_input_is_the_worker_error(processes, tmp_path: Path) -> None:
    data = bytearray(_layer())
    data[40:48] = b"garbage!"
    with pytest.raises(LayerError, match=f"img: layer {DIGEST}: corrupt gzip data"):
        processes.convert(
            DIGEST, lambda: nullcontext(io.BytesIO(bytes(data))), tmp_path / "p", "img",
            _no_lookup,
        )  # fmt: skip


def test_source_error_wins_over_the_workers(processes, tmp_path: Path) -> None:
    with pytest.raises(ConnectionError, match="registry went away"):
        processes.convert(
            DIGEST, lambda: nullcontext(_Failing(_layer())), tmp_path / "p", "img", _no_lookup
        )
    # the pool still works after a failure
    spec = processes.convert(
        DIGEST, lambda: nullcontext(io.BytesIO(_layer())), tmp_path / "q", "img", _no_lookup
    )
    assert spec.chunks


def test_stopped_pool_ends_a_pump_that_has_not_started(tmp_path: Path) -> None:
    procs = LayerProcesses(1, OPTS, NoChunkDict(), None)
    try:
        procs.stop()
        with pytest.raises(InterruptedError):
            procs.convert(
                DIGEST, lambda: nullcontext(io.BytesIO(_layer())), tmp_path / "p", "img",
                _no_lookup,
            )  # fmt: skip
    finally:
        procs.close()


def _in_daemon(out_dir: str, queue) -> None:
    procs = LayerProcesses(2, OPTS, NoChunkDict(), None)
    try:
        data = _layer()
        spec = procs.convert(
            DIGEST, lambda: nullcontext(io.BytesIO(data)), Path(out_dir) / "d", "img", _no_lookup
        )
        queue.put((spec.info.blob_id, len(spec.chunks)))
    finally:
        procs.close()


def test_daemonic_process_converts_in_its_own_thread(processes, tmp_path: Path) -> None:
    """A pool worker (Celery's prefork) may not start processes: same bytes, in a thread."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_in_daemon, args=(str(tmp_path), queue), daemon=True)
    child.start()
    blob_id, count = queue.get(timeout=60)
    child.join(30)
    spec = processes.convert(
        DIGEST, lambda: nullcontext(io.BytesIO(_layer())), tmp_path / "p", "img", _no_lookup
    )
    assert child.exitcode == 0 and (blob_id, count) == (spec.info.blob_id, len(spec.chunks))


def test_zran_index_in_a_worker_is_the_same_as_here(processes, tmp_path: Path) -> None:
    data = _layer()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    got = processes.index_zran(digest, lambda: nullcontext(io.BytesIO(data)), tmp_path / "p", "img")
    with open(tmp_path / "h", "wb") as out:
        here = build_zran_layer(io.BytesIO(data), out, digest, OPTS.chunk_size)
    assert (tmp_path / "p").read_bytes() == (tmp_path / "h").read_bytes()
    assert (got.ref_size, got.contexts, got.bytes_in) == (
        here.ref_size,
        here.contexts,
        here.bytes_in,
    )
    assert [c.digest for c in got.chunks] == [c.digest for c in here.chunks]
    assert tree_signature(got.tree.root) == tree_signature(here.tree.root)
    # The opener's stream is the verified one: its mismatch is the error, named by it.
    wrong = "sha256:" + "0" * 64
    with pytest.raises(DigestMismatch, match="layer blob sha256:0+"):
        processes.index_zran(
            wrong,
            lambda: verifying(io.BytesIO(data), wrong, len(data), f"layer blob {wrong}"),
            tmp_path / "q",
            "img",
        )
