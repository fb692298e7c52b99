"""`rconv convert`: OCI image (registry, OCI layout or docker archive) → Nydus image.

The stages, each in its own module:
1. the source and the platforms to convert (convert.platforms), the chunk dictionary
   (convert.dictionary);
2. per image, the layer stage (convert.layerstage over convert.layers): layers converted in
   parallel, deduplicated and applied in order, final blobs uploaded early (convert.upload);
3. per image, the merged bootstrap, bootstrap layer, config and manifest (convert.finish);
4. the top manifest or index (convert.image) and the push: blobs, then config, then the
   manifest (or index) last, so a failure never leaves the target tag pointing at missing
   blobs (image.md §18); the report (convert.report).
Thread pools are owned by convert.workers, sized from ``--jobs``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from convert import image as img
from convert.cachestage import LayerCache, NoLayerCache, WholeHit, generation
from convert.dictionary import ChunkDictSource
from convert.errors import ImageError
from convert.finish import assemble, finish_image
from convert.gcpause import paused_gc
from convert.layerstage import LayerStart, convert_layers, start_layers
from convert.ociref import check_options, convert_oci_ref
from convert.options import BUILDER, ConvertOptions
from convert.platforms import select
from convert.progress import Progress
from convert.report import ConvertReport, LayerReport, PlatformReport
from convert.upload import EarlyUpload
from convert.workers import Workers
from registry.client import RegistryClient
from registry.medium import open_image, parse_spec, write_image
from registry.model import Image, Index, Platform
from registry.reference import Reference


@paused_gc()
def convert(opts: ConvertOptions, client: RegistryClient, progress: Progress) -> ConvertReport:
    start = time.monotonic()
    report = ConvertReport(opts.source, opts.target)
    base = opts.work_dir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rconv-", dir=base))
    try:
        source = open_image(opts.source, client=client)
        parse_spec(opts.target)  # a bad target fails before any work
        if opts.oci_ref:
            check_options(opts)
        chunk_dict = ChunkDictSource.load(opts.chunk_dict, opts.rafs, client, work)
        selected = select(source, opts.platforms, opts.all_platforms, opts.source)
        results: list[tuple[Image, Image, Platform | None]] = []
        caches: list[LayerCache | NoLayerCache] = []
        with Workers(opts.jobs, opts.rafs, chunk_dict.chunks, opts.max_layer_size) as workers:
            prepared: dict[int, _Prepared] = {}

            def prepare(n: int) -> None:
                image, plat = selected[n]
                prepared[n] = _prepare(image, plat, opts, chunk_dict, client, workers,
                                       work / f"p{n}", progress)  # fmt: skip

            for n, (image, plat) in enumerate(selected):
                if n not in prepared:
                    prepare(n)
                ready = prepared.pop(n)
                caches.append(ready.cache)
                # The next platform's layers start while this one's bootstrap is written.
                ahead = partial(prepare, n + 1) if n + 1 < len(selected) else None
                converted, preport = _convert_image(
                    image, plat, opts, chunk_dict, client, workers, ready, progress, ahead
                )
                report.platforms.append(preport)
                results.append((image, converted, plat))
        top = _assemble_top(source, results, opts)
        spec = parse_spec(opts.target)
        # The records are saved while the target's config and manifest are pushed: every
        # blob is in the target repository by now (the uploads were awaited), so the cache
        # mounts them from there. A push that fails after that still leaves the records,
        # which the retry then finds.
        with ThreadPoolExecutor(1, thread_name_prefix="rconv-cache-save") as saver:
            saved = saver.submit(_save_caches, caches, report.platforms,
                                 spec.ref if spec.kind == "registry" else None)  # fmt: skip
            t0 = time.monotonic()
            progress.log(f"pushing {opts.target}")
            desc = write_image(top, opts.target, client=client, jobs=opts.jobs)
            report.target_digest = desc.digest
            for p in report.platforms:
                p.stages["push"] = time.monotonic() - t0
            saved.result()
    finally:
        if not opts.keep_work_dir:
            shutil.rmtree(work, ignore_errors=True)
        else:
            progress.log(f"work dir kept at {work}")
    report.seconds = time.monotonic() - start
    return report


def _save_caches(
    caches: list[LayerCache | NoLayerCache],
    platforms: list[PlatformReport],
    mount_from: Reference | None,
) -> None:
    """Save each platform's records, one platform after the other (they share the cache
    tag: one writer at a time from this process)."""
    for cache, p in zip(caches, platforms, strict=True):
        t1 = time.monotonic()
        cache.save(mount_from)
        p.stages["cache"] = time.monotonic() - t1


def _open_cache(
    image: Image,
    plat: Platform | None,
    opts: ConvertOptions,
    chunk_dict: ChunkDictSource,
    client: RegistryClient,
    progress: Progress,
) -> LayerCache | NoLayerCache:
    if opts.build_cache is None or img.is_nydus(image):
        return NoLayerCache()
    version = generation(opts.rafs, chunk_dict.identity, opts.oci_ref)

    def warn(message: str) -> None:  # a cache problem never stops the conversion
        progress.log(f"rconv: warning: {message}")

    return LayerCache.open(
        opts.build_cache, image, plat, version, opts.build_cache_max_records, client, warn
    )


@dataclass
class _Prepared:
    """One platform's conversion before its layer stage: its work directory, its build
    cache, and either the cache's whole image or its layers' stage 1, started."""

    work: Path
    cache: LayerCache | NoLayerCache
    whole: WholeHit | None = None
    layers: LayerStart | None = None


def _prepare(
    image: Image,
    plat: Platform | None,
    opts: ConvertOptions,
    chunk_dict: ChunkDictSource,
    client: RegistryClient,
    workers: Workers,
    work: Path,
    progress: Progress,
) -> _Prepared:
    work.mkdir()
    ready = _Prepared(work, _open_cache(image, plat, opts, chunk_dict, client, progress))
    if img.is_nydus(image) or opts.oci_ref:  # copied, or indexed by convert_oci_ref
        return ready
    ready.whole = ready.cache.whole_image(opts.prefetch)
    if ready.whole is None:
        ready.layers = start_layers(
            image, _where(opts, plat), chunk_dict, workers, work, progress, ready.cache
        )
    return ready


def _where(opts: ConvertOptions, plat: Platform | None) -> str:
    return f"{opts.source}" + (f" ({plat})" if plat else "")


def _convert_image(
    image: Image,
    plat: Platform | None,
    opts: ConvertOptions,
    chunk_dict: ChunkDictSource,
    client: RegistryClient,
    workers: Workers,
    ready: _Prepared,
    progress: Progress,
    ahead: Callable[[], None] | None,
) -> tuple[Image, PlatformReport]:
    """One platform converted; ``ahead`` starts the next platform's layers once this one's
    are in (otherwise ``convert`` prepares the next platform when it gets to it)."""
    where = _where(opts, plat)
    report = PlatformReport(str(plat or ""), image.digest, "")
    work, cache = ready.work, ready.cache
    if img.is_nydus(image):
        report.skipped = "already a Nydus image"
        progress.log(f"{where}: already a Nydus image, copied unchanged")
        return image, report
    t0 = time.monotonic()
    early = EarlyUpload(opts.target, client, workers.upload)
    if opts.oci_ref:  # looks the whole image up itself, after its own checks
        converted = convert_oci_ref(
            image, where, opts, client, workers, early, work, progress, report, cache
        )
    elif ready.whole is not None:  # converted before with these options: nothing to convert
        converted = _from_cache(image, ready.whole, opts, chunk_dict, client, early, report)
        progress.log(f"{where}: every layer and the bootstrap found in the build cache")
    else:
        assert ready.layers is not None
        layers = convert_layers(ready.layers, where, opts, chunk_dict, workers, early, work, cache)
        report.warnings += layers.warnings
        report.stages["layers"] = time.monotonic() - t0
        if ahead is not None:
            ahead()
        converted, finished = finish_image(image, layers, opts, chunk_dict, client, work, report)
        cache.record_image(
            opts.prefetch, finished, [(f.chunks_stored, f.chunks_deduped) for f in layers.finals]
        )
    if opts.build_cache is not None:
        report.cache = asdict(cache.stats)
    early.wait()  # the uploads overlapped the bootstrap; all must have succeeded
    return converted, report


def _from_cache(
    image: Image,
    whole: WholeHit,
    opts: ConvertOptions,
    chunk_dict: ChunkDictSource,
    client: RegistryClient,
    early: EarlyUpload,
    report: PlatformReport,
) -> Image:
    """The converted image from the build cache's records alone: blobs and the bootstrap
    layer are mounted from the cache repository, the config and manifest made as always."""
    blob_layers = []
    for hit, desc, (stored, deduped) in zip(
        whole.layers, image.layer_descriptors, whole.counts, strict=True
    ):
        blob = hit.record.blob
        early.submit(blob.digest, blob.size, hit.opener, mount_from=hit.mount_from)
        blob_layers.append(img.blob_layer(hit.opener, blob.digest, blob.size))
        report.layers.append(
            LayerReport(desc.digest, blob.digest, blob.size, stored, deduped, 0, 0.0, True)
        )
    boot = whole.bootstrap
    early.submit(boot.record.blob.digest, boot.record.blob.size, boot.opener,
                 mount_from=boot.mount_from)  # fmt: skip
    report.bootstrap_size = whole.finished.bootstrap_size
    report.bootstrap_digest = whole.finished.digest
    converted = assemble(image, blob_layers, whole.finished, boot.opener, opts, chunk_dict, client)
    report.target_digest = converted.digest
    return converted


def _assemble_top(
    source: Image | Index, results: list[tuple[Image, Image, Platform | None]], opts
) -> Image | Index:
    annotations = img.index_annotations(opts.rafs.fs_version, source, opts.source, BUILDER)
    if opts.merge_platform:
        pairs = []
        for original, converted, plat in results:
            plat = plat or img.platform_of(original)
            if plat is None:
                raise ImageError(f"{opts.source}: the config names no os/architecture")
            if converted is original:  # already Nydus: nothing to pair it with
                raise ImageError(f"{opts.source}: already a Nydus image, nothing to merge")
            pairs.append((original, img.with_empty_layer(original), converted, plat))
        return img.merged_platform_index(pairs, annotations)
    if len(results) == 1 and (isinstance(source, Image) or not opts.all_platforms):
        return results[0][1]
    return img.nydus_index([r[1] for r in results], [r[2] for r in results], annotations)
