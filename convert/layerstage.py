"""The layer stage of one image: every source layer converted, deduplicated and applied.

Stage 1 (convert.layers.convert_layer) runs in worker processes (convert.layerproc), fed by
the ``layers`` pool, largest layer first;
stage 2 (assemble_layer) consumes the results strictly in layer order, so the output does not
depend on timing or ``--jobs``. Each final blob is completed on the ``copy`` pool and pushed
early (convert.upload) while the next layers and the bootstrap proceed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from convert.cachestage import Hit, LayerCache, NoLayerCache
from convert.dictionary import ChunkDictSource
from convert.layers import FinalLayer, SpeculativeLayer, apply, assemble_layer
from convert.options import ConvertOptions
from convert.progress import CountingStream, Progress, human_size
from convert.upload import EarlyUpload
from convert.workers import Workers
from rafs import layerstate
from rafs.errors import RafsError
from rafs.model import Chunk, LayerTree, Node, new_root
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


@dataclass
class LayerStart:
    """The layer stage of one image, started: stage 1 of every layer the build cache does not
    hold is queued (``start_layers``); ``convert_layers`` consumes it."""

    layers: list[Layer]
    hits: dict[int, Hit]
    submitted: dict[int, Future[SpeculativeLayer]]
    stage1: Callable[[int], SpeculativeLayer]
    result: ConvertedLayers


def start_layers(
    image: Image,
    where: str,
    chunk_dict: ChunkDictSource,
    workers: Workers,
    work: Path,
    progress: Progress,
    cache: LayerCache | NoLayerCache,
) -> LayerStart:
    """Queue stage 1 of ``image``'s layers on the worker processes, largest first. A
    conversion of several platforms starts the next one's this way while it writes the
    current one's bootstrap: the workers would otherwise idle through it."""
    layers = image.layers()
    for layer in layers:
        layer.compression  # noqa: B018 - rejects unknown/foreign media types before any work
    result = ConvertedLayers(new_root(), [], {})

    def stage1(i: int) -> SpeculativeLayer:
        started = time.monotonic()
        layer = layers[i]
        key = f"{work}/{i}"
        label, opener = start_layer(layers, i, progress, key)
        spec = workers.processes.convert(
            layer.digest, opener, work / f"spec-{i}", where, chunk_dict.chunk_at
        )
        result.seconds[i] = seconds = time.monotonic() - started
        progress.layer_done(
            key,
            f"{where}: {label}: {human_size(layer.size)} in, {human_size(spec.bytes_in)} of "
            f"tar, {len(spec.chunks)} new chunks ({seconds:.1f} s)",
        )
        return spec

    hits = cache.hits()
    if len(hits) < len(layers):
        workers.processes.start(sum(layer.size for i, layer in enumerate(layers) if i not in hits))
    submitted = {i: workers.layers.submit(stage1, i) for i in stage1_order(layers, hits)}
    return LayerStart(layers, hits, submitted, stage1, result)


def convert_layers(
    start: LayerStart,
    where: str,
    opts: ConvertOptions,
    chunk_dict: ChunkDictSource,
    workers: Workers,
    early: EarlyUpload,
    work: Path,
    cache: LayerCache | NoLayerCache,
) -> ConvertedLayers:
    layers, hits, submitted, result = start.layers, start.hits, start.submitted, start.result

    def complete(final: FinalLayer) -> None:
        final.complete()
        early.submit("sha256:" + final.info.blob_id, final.info.compressed_size, final.open)

    lookup = _ChunkLookup(result, chunk_dict)
    known: dict[bytes, Chunk] = {}
    try:
        for i in range(len(layers)):
            hit = hits.get(i)
            cached = _from_cache(i, layers[i], hit, lookup, where, cache) if hit else None
            if hit is None or cached is None:  # converted here, or the record was unusable
                # Popped: a done future keeps its layer's tree, and with it the directories
                # the layers above replace, alive as long as the future is held.
                future = submitted.pop(i, None) or workers.layers.submit(start.stage1, i)
                spec = future.result()
                final = assemble_layer(spec, known, work / f"blob-{i}", opts.rafs)
                if cache.recording:  # the tree as it is before it is applied (and consumed)
                    cache.record(i, final, layerstate.snapshot(spec.tree, final.info))
                result.completions.append(workers.copy.submit(complete, final))
                tree = spec.tree
                result.warnings += [f"{where}: layer {spec.digest}: {w}" for w in spec.warnings]
            else:
                final, tree = cached
                early.submit(hit.record.blob.digest, hit.record.blob.size, hit.opener,
                             mount_from=hit.mount_from)  # fmt: skip
                for chunk in final.stored:
                    known.setdefault(chunk.digest, chunk)
            result.root = apply(result.root, tree, final.digest, where)
            result.finals.append(final)
    except BaseException:
        for future in submitted.values():
            future.cancel()
        raise
    return result


def _from_cache(
    index: int,
    layer: Layer,
    hit: Hit,
    lookup: _ChunkLookup,
    where: str,
    cache: LayerCache | NoLayerCache,
) -> tuple[FinalLayer, LayerTree] | None:
    """The final layer and diff tree of a cache hit; None when its record cannot be used (one
    warning; the layer is then converted)."""
    try:
        state = layerstate.decode(hit.state, lookup)
    except (RafsError, KeyError, IndexError) as exc:
        cache.unusable(index, f"{where}: layer {layer.digest}: record unusable ({exc})")
        return None
    final = FinalLayer(
        layer.digest, None, state.blob, state.chunks, state.deduped, [], 0, cached=hit.opener
    )
    return final, state.tree


class _ChunkLookup:
    """Chunks of the blobs below a layer by (blob id, chunk index): final blobs of this
    conversion (complete once their copy is done) and dictionary blobs."""

    def __init__(self, result: ConvertedLayers, chunk_dict: ChunkDictSource) -> None:
        self.result, self.chunk_dict = result, chunk_dict
        self.blobs: dict[str, list[Chunk]] = {}
        self.dict_ids = {blob.blob_id for blob in chunk_dict.blobs}

    def __call__(self, blob_id: str, index: int) -> Chunk:
        chunks = self.blobs.get(blob_id)
        if chunks is None and blob_id not in self.dict_ids:
            self.result.await_blobs()  # ids of blobs still being copied are not final yet
            for final in self.result.finals:
                self.blobs.setdefault(final.info.blob_id, final.stored)
            chunks = self.blobs.get(blob_id)
        if chunks is None:
            return self.chunk_dict.chunk_at(blob_id, index)
        return chunks[index]


def start_layer(
    layers: list[Layer], i: int, progress: Progress, key: str
) -> tuple[str, Callable[[], CountingStream]]:
    """Announce layer ``i`` of ``layers`` as progress ``key``: its label ("layer 2/5 …") and
    the opener of its compressed stream that reports the bytes read."""
    layer = layers[i]
    label = f"layer {i + 1}/{len(layers)} {layer.digest[7:19]}"
    progress.layer_start(key, label, layer.size)
    return label, lambda: CountingStream(layer.open(), lambda n: progress.layer_advance(key, n))


def stage1_order(layers: list[Layer], skip: Mapping[int, object]) -> list[int]:
    """The order stage 1 starts the layers not in ``skip`` in: the largest first, the others
    bottom-up.

    The largest layer starting first keeps it from running alone at the end; the rest going
    bottom-up lets stage 2, which consumes the layers strictly in order, assemble and upload
    the lower layers while the big one is still converting (largest-first throughout would
    leave the base layer, which every later assembly waits for, to the end). Only timing
    depends on this: stage 2's output does not.
    """
    order = [i for i in range(len(layers)) if i not in skip]
    if order:
        largest = min(order, key=lambda i: (-layers[i].size, i))
        order.remove(largest)
        order.insert(0, largest)
    return order
