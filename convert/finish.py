"""The last stage of one image: merged bootstrap, bootstrap layer, config and manifest.

Spec: image.md §5 (bootstrap layer), §7 (config), §8 (manifest), §14 (dictionary blobs). The
final blobs may still be completing: the bootstrap writer lays the tree out first and calls
``layers.await_blobs`` only before the blob table, the one part that needs their ids.
"""

from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path

from convert import image as img
from convert.dictionary import ChunkDictSource
from convert.layerstage import ConvertedLayers
from convert.options import ConvertOptions
from convert.report import LayerReport, PlatformReport
from rafs.bootstrap import write_bootstrap
from rafs.model import walk
from registry import mediatype as mt
from registry.client import RegistryClient
from registry.model import Image

try:
    VERSION = metadata.version("rconv")
except metadata.PackageNotFoundError:  # run from a checkout that was never installed
    VERSION = "0+unknown"
BUILDER = f"rconv {VERSION}"


def finish_image(
    source: Image,
    layers: ConvertedLayers,
    opts: ConvertOptions,
    chunk_dict: ChunkDictSource,
    client: RegistryClient,
    work: Path,
    report: PlatformReport,
) -> Image:
    t1 = time.monotonic()
    rafs = opts.rafs
    finals = layers.finals
    boot_path = work / "image.boot"
    blobs = [f.info for f in finals if f.chunks_stored] + chunk_dict.blobs
    bs = rafs.bootstrap(layers.root, blobs, opts.prefetch)
    used = {id(c.blob) for _, n in walk(layers.root) for c in n.chunks}
    dict_used = [b for b in chunk_dict.blobs if id(b) in used]
    with open(boot_path, "wb") as f:
        write_bootstrap(f, bs, layers.await_blobs)
    report.bootstrap_size = boot_path.stat().st_size
    layer_path = work / "bootstrap.tar.gz"
    digest, diff_id, size = img.write_bootstrap_layer(boot_path, layer_path)
    boot_layer = img.bootstrap_layer(layer_path, digest, size, rafs.fs_version)
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
    dict_layers = [chunk_dict.layer_for(b, opts.target, client) for b in dict_used]
    converted = img.nydus_image(
        source,
        blob_layers,
        boot_layer,
        diff_id,
        dict_layers,
        rafs.fs_version,
        opts.source,
        BUILDER,
        mt.NYDUS_CONFIG if opts.merge_platform else None,
    )
    report.target_digest = converted.digest
    report.stages["bootstrap"] = time.monotonic() - t1
    return converted
