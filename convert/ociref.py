"""`rconv convert --oci-ref`: Nydus images whose data blobs are the source's own gzip layers.

Spec: ../shared/spec/image.md §11 (zran / OCI-ref mode), §6 rule 2 (blob ids = original layer
digests, ref blob digest/size as the blob entries' meta digest/size), §3.1 (``nydus-ref``),
blob.md §6.3 and §12. Per image: each gzip layer is read once (``rafs.zran.layer``) on the
layer pool, giving its diff tree and a small ref blob; the trees are applied in layer order
(no cross-layer dedup: each blob is its own layer), the merged bootstrap is written, and the
manifest lists the ref blobs and the bootstrap. The original layers are not uploaded: they
must be in the target repository already, or be mounted there from the source repository of
the same registry; otherwise the conversion stops before anything is pushed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from convert import image as img
from convert.cachestage import Hit, LayerCache, NoLayerCache, WholeHit
from convert.errors import ImageError, LayerError
from convert.finish import Finished
from convert.heap import trim_heap
from convert.layers import FinalLayer, apply
from convert.layerstage import stage1_order, start_layer
from convert.nydus import A_BLOB, A_REF
from convert.options import BUILDER, ConvertOptions
from convert.progress import Progress, human_size
from convert.report import LayerReport, PlatformReport
from convert.upload import EarlyUpload
from convert.workers import Workers
from rafs import layerstate
from rafs.blob.ondisk import BlobFeature
from rafs.bootstrap import bootstrap_parts
from rafs.errors import InvalidImage, RafsError
from rafs.model import BlobInfo, Bootstrap, Chunk, LayerTree, new_root
from rafs.zran.chunker import COMPRESSOR, DIGESTER
from registry import mediatype as mt
from registry.build import Blob
from registry.client import RegistryClient
from registry.errors import RegistryError
from registry.medium import parse_spec
from registry.model import Descriptor, Image, Layer
from registry.reference import Reference


def check_options(opts: ConvertOptions) -> None:
    """Options --oci-ref cannot be combined with, refused before any work."""
    if opts.rafs.fs_version != 6:
        raise ImageError("--oci-ref needs RAFS v6 (zran blobs do not exist in RAFS v5)")
    if opts.chunk_dict is not None:
        raise ImageError("--oci-ref cannot use a chunk dictionary (upstream does not combine them)")
    if parse_spec(opts.target).kind != "registry":
        raise ImageError("--oci-ref needs a registry target: the source layers stay there")


@dataclass
class _RefLayer:
    """One source layer's zran result: indexed here, or taken from the build cache."""

    tree: LayerTree | None  # None once applied
    info: BlobInfo  # the data blob: the source layer
    ref: Descriptor  # the ref blob pushed as the image's layer
    opener: Callable[[], BinaryIO]
    mount_from: Reference | None = None  # the build cache repository, on a hit
    bytes_in: int = 0
    warnings: list[str] = field(default_factory=list)


def convert_oci_ref(
    image: Image,
    where: str,
    opts: ConvertOptions,
    client: RegistryClient,
    workers: Workers,
    early: EarlyUpload,
    work: Path,
    progress: Progress,
    report: PlatformReport,
    cache: LayerCache | NoLayerCache,
) -> Image:
    t0 = time.monotonic()
    layers = image.layers()
    for layer in layers:
        if layer.compression != "gzip":
            raise LayerError(
                f"{where}: layer {layer.digest} is {layer.compression}, not gzip: "
                "--oci-ref can only reference gzip layers"
            )
    _ensure_in_target(layers, where, opts, client)
    # image.md §11: registry GC of the OCI image would break this one; say so once.
    progress.log(f"{where}: the Nydus image reads the OCI image's layers in place: keep them")
    whole = cache.whole_image(opts.prefetch)
    if whole is not None:  # converted before with these options: nothing to index again
        progress.log(f"{where}: every layer and the bootstrap found in the build cache")
        return _whole_from_cache(image, layers, whole, opts, early, report)
    seconds: dict[int, float] = {}
    hits = cache.hits()

    def index(i: int) -> _RefLayer:
        started = time.monotonic()
        layer = layers[i]
        key = f"{work}/z{i}"
        label, opener = start_layer(layers, i, progress, key)
        path = work / f"ref-{i}"
        zl = workers.processes.index_zran(layer.digest, opener, path, where)
        seconds[i] = time.monotonic() - started
        progress.layer_done(
            key,
            f"{where}: {label}: {human_size(layer.size)} indexed, {zl.info.chunk_count} chunks, "
            f"{zl.contexts} checkpoints, ref blob {human_size(zl.ref_size)} ({seconds[i]:.1f} s)",
        )
        ref = Descriptor(mt.NYDUS_BLOB, "sha256:" + zl.info.meta_digest.hex(), zl.ref_size)
        final = FinalLayer(layer.digest, path, zl.info, zl.chunks, 0, [], zl.bytes_in)
        if cache.recording:  # the tree as it is before it is applied (and consumed)
            cache.record(i, final, layerstate.snapshot(zl.tree, zl.info), ref)
        return _RefLayer(zl.tree, zl.info, ref, final.open, None, zl.bytes_in,
                         zl.warnings)  # fmt: skip

    # Largest first, as native conversion starts them; the trees are applied in layer order.
    order = stage1_order(layers, hits)
    if order:
        workers.processes.start(sum(layers[i].size for i in order))
    futures = {i: workers.layers.submit(index, i) for i in order}
    root = new_root()
    refs: list[_RefLayer] = []
    try:
        for i, layer in enumerate(layers):
            hit = hits.get(i)
            got = _from_cache(hit, layer, where, cache, i) if hit is not None else None
            if got is None:
                got = (futures.get(i) or workers.layers.submit(index, i)).result()
            report.warnings += [f"{where}: layer {layer.digest}: {w}" for w in got.warnings]
            assert got.tree is not None
            root = apply(root, got.tree, layer.digest, where)
            got.tree = None  # applied: the merged tree owns it now
            refs.append(got)
            # pushed while the layers above are indexed and the bootstrap written
            early.submit(got.ref.digest, got.ref.size, got.opener, mount_from=got.mount_from)
    except BaseException:
        for future in futures.values():
            future.cancel()
        raise
    report.stages["layers"] = time.monotonic() - t0

    t1 = time.monotonic()
    blobs = [r.info for r in refs if r.info.chunk_count]
    bs = Bootstrap(
        root=root, blobs=blobs, version=6, chunk_size=opts.rafs.chunk_size,
        compressor=COMPRESSOR, digester=DIGESTER, prefetch=list(opts.prefetch),
    )  # fmt: skip
    trim_heap()  # as finish_image: the tree is freed while the bootstrap is written
    report.bootstrap_size, parts = bootstrap_parts(bs, release_tree=True)
    layer_path = work / "bootstrap.tar.gz"
    digest, diff_id, size = img.write_bootstrap_layer(report.bootstrap_size, parts, layer_path)
    report.bootstrap_digest = digest
    ref_layers = []
    for i, (layer, r) in enumerate(zip(layers, refs, strict=True)):
        ref_layers.append(_ref_layer(layer.digest, r.ref, r.opener))
        report.layers.append(
            LayerReport(
                layer.digest,
                r.ref.digest,
                r.ref.size,
                r.info.chunk_count,
                0,
                r.bytes_in,
                seconds.get(i, 0.0),
                r.mount_from is not None,
            )  # fmt: skip
        )
    boot_layer = img.bootstrap_layer(lambda: open(layer_path, "rb"), digest, size, 6, True)
    converted = _nydus_image(image, ref_layers, boot_layer, diff_id, opts)
    if cache.recording:
        finished = Finished(layer_path, digest, size, diff_id, report.bootstrap_size, ())
        cache.record_image(opts.prefetch, finished, [(r.info.chunk_count, 0) for r in refs])
    report.target_digest = converted.digest
    report.stages["bootstrap"] = time.monotonic() - t1
    return converted


def _whole_from_cache(
    image: Image,
    layers: list[Layer],
    whole: WholeHit,
    opts: ConvertOptions,
    early: EarlyUpload,
    report: PlatformReport,
) -> Image:
    """The image from the build cache's records alone: ref blobs and the bootstrap layer are
    mounted from the cache repository."""
    ref_layers = []
    for hit, layer, (chunks, _) in zip(whole.layers, layers, whole.counts, strict=True):
        ref = hit.record.blob
        early.submit(ref.digest, ref.size, hit.opener, mount_from=hit.mount_from)
        ref_layers.append(_ref_layer(layer.digest, ref, hit.opener))
        report.layers.append(
            LayerReport(layer.digest, ref.digest, ref.size, chunks, 0, 0, 0.0, True)
        )
    boot, finished = whole.bootstrap, whole.finished
    early.submit(boot.record.blob.digest, boot.record.blob.size, boot.opener,
                 mount_from=boot.mount_from)  # fmt: skip
    report.bootstrap_size = finished.bootstrap_size
    report.bootstrap_digest = finished.digest
    boot_layer = img.bootstrap_layer(boot.opener, finished.digest, finished.size, 6, False)
    converted = _nydus_image(image, ref_layers, boot_layer, finished.diff_id, opts)
    report.target_digest = converted.digest
    return converted


def _ref_layer(source_digest: str, ref: Descriptor, opener: Callable[[], BinaryIO]) -> Blob:
    """A ref blob as the image's layer (image.md §3.1, §11)."""
    annotations = {A_BLOB: "true", A_REF: source_digest}
    return Blob(mt.NYDUS_BLOB, ref.digest, ref.size, opener, annotations=annotations)


def _nydus_image(
    image: Image, ref_layers: list[Blob], boot_layer: Blob, diff_id: str, opts: ConvertOptions
) -> Image:
    config_type = mt.NYDUS_CONFIG if opts.merge_platform else None
    return img.nydus_image(
        image, ref_layers, boot_layer, diff_id, [], 6, opts.source, BUILDER, config_type
    )


def _from_cache(
    hit: Hit, layer: Layer, where: str, cache: LayerCache | NoLayerCache, index: int
) -> _RefLayer | None:
    """A layer's zran result from its build cache record; None when the record cannot be used
    (one warning; the layer is then indexed)."""
    try:
        state = layerstate.decode(hit.state, _no_lower_chunks)
        if not state.blob.features & BlobFeature.ZRAN or state.blob.blob_id != layer.digest[7:]:
            raise InvalidImage("not a zran record of this layer")
    except (RafsError, KeyError, IndexError) as exc:
        cache.unusable(index, f"{where}: layer {layer.digest}: record unusable ({exc})")
        return None
    blob = hit.record.blob
    ref = Descriptor(mt.NYDUS_BLOB, blob.digest, blob.size)
    return _RefLayer(state.tree, state.blob, ref, hit.opener, hit.mount_from)


def _no_lower_chunks(blob_id: str, index: int) -> Chunk:
    """A zran layer's tree references its own blob only."""
    raise KeyError(f"chunk {index} of blob {blob_id} below a zran layer")


def _ensure_in_target(
    layers: list[Layer], where: str, opts: ConvertOptions, client: RegistryClient
) -> None:
    """Every source layer present in the target repository, mounted from the source's when
    needed (same registry); ImageError naming the layer otherwise. Runs before any push."""
    target = parse_spec(opts.target).ref
    assert target is not None  # check_options: a registry target
    source_spec = parse_spec(opts.source)
    source = source_spec.ref if source_spec.kind == "registry" else None
    for layer in layers:
        try:
            if client.stat_blob(target, layer.digest, push=True) is not None:
                continue
            if source is None or source.registry != target.registry:
                raise ImageError(
                    f"{where}: layer {layer.digest} is not in {target.registry}/"
                    f"{target.repository} and cannot be mounted there from the source; push "
                    "the OCI image to the target repository first (rconv copy)"
                )
            how = client.upload_blob(target, layer.digest, layer.size, _refuse, mount_from=source)
        except RegistryError as exc:
            raise ImageError(
                f"{where}: layer {layer.digest} could not be mounted into "
                f"{target.registry}/{target.repository}: {exc}"
            ) from exc
        if how not in ("exists", "mounted"):  # pragma: no cover - _refuse raises first
            raise ImageError(f"{where}: layer {layer.digest} was not mounted")


def _refuse():
    """Opener of a blob that must be mounted, never uploaded."""
    raise RegistryError("the registry refused to mount the layer (it would have to be uploaded)")
