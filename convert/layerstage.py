"""The layer stage of one image: every source layer converted, deduplicated and applied.

Stage 1 (convert.layers.convert_layer) runs on the ``layers`` pool, largest layer first;
stage 2 (assemble_layer) consumes the results strictly in layer order, so the output does not
depend on timing or ``--jobs``. Each final blob is completed on the ``copy`` pool and pushed
early (convert.upload) while the next layers and the bootstrap proceed.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from convert.dictionary import ChunkDictSource
from convert.layers import FinalLayer, SpeculativeLayer, apply, assemble_layer, convert_layer
from convert.options import ConvertOptions
from convert.progress import CountingStream, Progress, human_size
from convert.upload import EarlyUpload
from convert.workers import Workers
from rafs.model import Chunk, Node, new_root
from registry.model import Image, Layer


@dataclass
class ConvertedLayers:
    root: Node  # the merged tree of every layer
    finals: list[FinalLayer]  # one per source layer, in order
    seconds: dict[int, float]  # stage 1 time per layer index
    warnings: list[str] = field(default_factory=list)
    completions: list[Future] = field(default_factory=list)  # final blobs being completed

    def await_blobs(self) -> None:
        """Wait until every final blob is complete (ids and sizes final)."""
        for completion in self.completions:
            completion.result()


def convert_layers(
    image: Image,
    where: str,
    opts: ConvertOptions,
    chunk_dict: ChunkDictSource,
    workers: Workers,
    early: EarlyUpload,
    work: Path,
    progress: Progress,
) -> ConvertedLayers:
    layers = image.layers()
    for layer in layers:
        layer.compression  # noqa: B018 - rejects unknown/foreign media types before any work
    result = ConvertedLayers(new_root(), [], {})

    def stage1(i: int) -> SpeculativeLayer:
        started = time.monotonic()
        layer = layers[i]
        key = f"{work}/{i}"
        label = f"layer {i + 1}/{len(layers)} {layer.digest[7:19]}"
        progress.layer_start(key, label, layer.size)
        spec = convert_layer(
            layer.digest, _counting(layer, progress, key), work / f"spec-{i}", opts.rafs,
            opts.max_layer_size, chunk_dict.chunks, workers.compress, where,
        )  # fmt: skip
        result.seconds[i] = seconds = time.monotonic() - started
        progress.layer_done(
            key,
            f"{where}: {label}: {human_size(layer.size)} in, {human_size(spec.bytes_in)} of "
            f"tar, {len(spec.chunks)} new chunks ({seconds:.1f} s)",
        )
        return spec

    def complete(final: FinalLayer) -> None:
        final.complete()
        early.submit(final.path, "sha256:" + final.info.blob_id, final.info.compressed_size)

    known: dict[bytes, Chunk] = {}
    submitted = {i: workers.layers.submit(stage1, i) for i in _stage1_order(layers)}
    futures = [submitted[i] for i in range(len(layers))]
    try:
        for i, future in enumerate(futures):
            spec = future.result()
            final = assemble_layer(spec, known, work / f"blob-{i}", opts.rafs)
            result.completions.append(workers.copy.submit(complete, final))
            result.root = apply(result.root, spec, where)
            # The merged tree lives to the end: keep the collector from re-scanning its
            # hundreds of thousands of objects on every full pass (it doubled the time of the
            # bootstrap write). Frozen objects are still freed by refcount.
            gc.freeze()
            result.finals.append(final)
            result.warnings += [f"{where}: layer {spec.digest}: {w}" for w in spec.warnings]
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    return result


def _counting(layer: Layer, progress: Progress, key: str) -> Callable[[], CountingStream]:
    return lambda: CountingStream(layer.open(), lambda n: progress.layer_advance(key, n))


def _stage1_order(layers: list[Layer]) -> list[int]:
    """The order stage 1 starts the layers in: the largest first, the others bottom-up.

    The largest layer starting first keeps it from running alone at the end; the rest going
    bottom-up lets stage 2, which consumes the layers strictly in order, assemble and upload
    the lower layers while the big one is still converting (largest-first throughout would
    leave the base layer, which every later assembly waits for, to the end). Only timing
    depends on this: stage 2's output does not.
    """
    order = list(range(len(layers)))
    if order:
        largest = min(order, key=lambda i: (-layers[i].size, i))
        order.remove(largest)
        order.insert(0, largest)
    return order
