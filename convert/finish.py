"""The last stage of one image: merged bootstrap, bootstrap layer, config and manifest.

Spec: image.md §5 (bootstrap layer), §7 (config), §8 (manifest), §14 (dictionary blobs).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from convert import image as img
from convert.dictionary import ChunkDictSource
from convert.heap import trim_heap
from convert.layerstage import ConvertedLayers
from convert.options import BUILDER, ConvertOptions
from convert.report import LayerReport, PlatformReport
from rafs.bootstrap import bootstrap_parts
from rafs.model import nodes
from registry import mediatype as mt
from registry.build import Blob
from registry.client import RegistryClient
from registry.model import Image


@dataclass(frozen=True)
class Finished:
    """What the bootstrap stage made, for the build cache's whole-image record."""

    layer_path: Path | None  # the bootstrap layer (gzip tar); None when it is in the cache
    digest: str
    size: int
    diff_id: str
    bootstrap_size: int
    dict_blobs: tuple[str, ...]  # ids of the dictionary blobs the image references


def finish_image(
    source: Image,
    layers: ConvertedLayers,
    opts: ConvertOptions,
    chunk_dict: ChunkDictSource,
    client: RegistryClient,
    work: Path,
    report: PlatformReport,
) -> tuple[Image, Finished]:
    t1 = time.monotonic()
    rafs = opts.rafs
    finals = layers.finals
    blobs = [f.info for f in finals if f.chunks_stored] + chunk_dict.blobs
    bs = rafs.bootstrap(layers.root, blobs, opts.prefetch)
    dict_used = []
    if chunk_dict.blobs:  # a pass over every file: only when there is a dictionary
        used = {id(c.blob) for n in nodes(layers.root) for c in n.chunks}
        dict_used = [b for b in chunk_dict.blobs if id(b) in used]
    # The blobs are finished before the bootstrap, not beside it: the last one's hash then
    # ends sooner (0.1 s per 135 MB alone, 0.25 s beside the bootstrap), so its upload, the
    # conversion's tail, starts sooner, and the bootstrap is written beside that instead
    # (docs/decisions.md, "Stage 2 only decides").
    layers.await_blobs()
    trim_heap()  # before the bootstrap's peak: the layers' stage 2 left holes (convert.heap)
    # The merged tree is not used past this point: it is freed as the bootstrap is written.
    report.bootstrap_size, parts = bootstrap_parts(bs, release_tree=True)
    layer_path = work / "bootstrap.tar.gz"
    digest, diff_id, size = img.write_bootstrap_layer(report.bootstrap_size, parts, layer_path)
    report.bootstrap_digest = digest
    finished = Finished(
        layer_path, digest, size, diff_id, report.bootstrap_size,
        tuple(b.blob_id for b in dict_used),
    )  # fmt: skip
    blob_layers = []
    for i, final in enumerate(finals):
        blob_digest = "sha256:" + final.info.blob_id
        blob_layers.append(img.blob_layer(final.open, blob_digest, final.info.compressed_size))
        report.layers.append(
            LayerReport(
                final.digest,
                blob_digest,
                final.info.compressed_size,
                final.chunks_stored,
                final.chunks_deduped,
                final.bytes_in,
                layers.seconds.get(i, 0.0),
                final.cached is not None,
            )
        )
    converted = assemble(
        source, blob_layers, finished, lambda: open(layer_path, "rb"), opts, chunk_dict, client
    )
    report.target_digest = converted.digest
    report.stages["bootstrap"] = time.monotonic() - t1
    return converted, finished


def assemble(
    source: Image,
    blob_layers: list[Blob],
    finished: Finished,
    open_bootstrap: Callable[[], BinaryIO],
    opts: ConvertOptions,
    chunk_dict: ChunkDictSource,
    client: RegistryClient,
) -> Image:
    """The converted image: its blob layers, the dictionary blobs it uses, the bootstrap
    layer, the rewritten config and the manifest (image.md §1, §7, §8)."""
    boot_layer = img.bootstrap_layer(
        open_bootstrap, finished.digest, finished.size, opts.rafs.fs_version,
        own_file=finished.layer_path is not None,
    )  # fmt: skip
    used = set(finished.dict_blobs)
    dict_layers = [
        chunk_dict.layer_for(b, opts.target, client) for b in chunk_dict.blobs if b.blob_id in used
    ]
    return img.nydus_image(
        source,
        blob_layers,
        boot_layer,
        finished.diff_id,
        dict_layers,
        opts.rafs.fs_version,
        opts.source,
        BUILDER,
        mt.NYDUS_CONFIG if opts.merge_platform else None,
    )
