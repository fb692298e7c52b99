"""`rconv convert`: OCI image (registry, OCI layout or docker archive) → Nydus image.

Per platform: stage 1 converts the layers on a bounded pool, stage 2 assembles final blobs
in layer order with cross-layer dedup and applies each layer onto the tree (convert.layers),
then the merged bootstrap, the bootstrap layer, config and manifest are made
(convert.image) and everything is pushed: blobs, then config, then the manifest (or index)
last, so a failure never leaves the target tag pointing at missing blobs (image.md §18).
"""

from __future__ import annotations

import gc
import platform as host_platform
import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from convert import image as img
from convert.layers import (
    BlobOptions,
    FinalLayer,
    SpeculativeLayer,
    apply,
    assemble_layer,
    convert_layer,
)
from convert.progress import CountingStream, Progress
from rafs.bootstrap import read_bootstrap, write_bootstrap
from rafs.chunkdict import ChunkDict, NoChunkDict, chunk_dict_from_bootstrap
from rafs.errors import InvalidInput
from rafs.model import BlobInfo, Bootstrap, Chunk, new_root, walk
from registry.build import Blob
from registry.client import RegistryClient
from registry.medium import open_image, parse_spec, write_image
from registry.model import Image, Index, Platform

VERSION = "0.1.0"
BUILDER = f"rconv {VERSION}"


@dataclass(frozen=True)
class ConvertOptions:
    source: str
    target: str
    platforms: tuple[Platform, ...] = ()  # empty: the host's platform
    all_platforms: bool = False
    merge_platform: bool = False  # one index with the OCI and the Nydus manifests (§9.3)
    fs_version: int = 6
    compressor: str = "zstd"
    digester: str = "blake3"
    chunk_size: int = 0x100000
    chunk_dict: str | None = None  # "bootstrap:PATH", "registry:REF" (and nydusify forms)
    prefetch: tuple[bytes, ...] = (b"/",)
    jobs: int = 2
    work_dir: Path | None = None
    keep_work_dir: bool = False
    oci: bool = True
    max_layer_size: int | None = None


@dataclass
class LayerReport:
    source_digest: str
    blob_digest: str
    blob_size: int
    chunks_stored: int
    chunks_deduped: int
    bytes_in: int
    seconds: float


@dataclass
class PlatformReport:
    platform: str
    source_digest: str
    target_digest: str
    layers: list[LayerReport] = field(default_factory=list)
    bootstrap_size: int = 0
    stages: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    skipped: str | None = None  # why the image was passed through unchanged


@dataclass
class ConvertReport:
    source: str
    target: str
    target_digest: str = ""
    platforms: list[PlatformReport] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def host_platform_default() -> Platform:
    machine = host_platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}
    return Platform("linux", arch.get(machine, machine))


class _DictSource:
    """The external chunk dictionary: its chunks, its blobs and where to fetch them."""

    def __init__(self) -> None:
        self.chunks: ChunkDict = NoChunkDict()
        self.blobs: list[BlobInfo] = []
        self.layers: dict[str, Blob] = {}  # blob id -> layer to push with the image

    @classmethod
    def load(cls, spec: str | None, opts: ConvertOptions, client: RegistryClient, work: Path):
        self = cls()
        if not spec:
            return self
        kind, _, rest = spec.partition(":")
        if kind == "bootstrap" and rest.startswith(("registry:", "local:")):
            kind, _, rest = rest.partition(":")  # nydusify's bootstrap:registry:REF form
        if kind in ("bootstrap", "local"):
            try:
                with open(rest, "rb") as f:
                    bs = read_bootstrap(f)
            except OSError as exc:
                raise InvalidInput(f"chunk dict {rest}: {exc.strerror}") from exc
            source_image = None
        else:
            ref = rest if kind == "registry" else spec
            source_image = open_image(ref, client=client, platform=host_platform_default())
            if not img.is_nydus(source_image):
                raise InvalidInput(f"chunk dict {ref}: not a Nydus image (no bootstrap layer)")
            bs = _bootstrap_of(source_image, work / "dict.boot")
        self.chunks = chunk_dict_from_bootstrap(
            bs,
            version=opts.fs_version,
            chunk_size=opts.chunk_size,
            digester=opts.digester,
            explicit_uid_gid=True,
        )
        self.blobs = list(bs.blobs)
        if source_image is not None:
            for desc in source_image.layer_descriptors[:-1]:
                opener = _bind(source_image, desc)
                self.layers[desc.digest.removeprefix("sha256:")] = Blob(
                    img.NYDUS_BLOB, desc.digest, desc.size, opener, {img.A_BLOB: "true"}
                )
        return self

    def layer_for(self, blob: BlobInfo, target: str, client: RegistryClient) -> Blob:
        """The manifest layer of a dict blob; a local dictionary's blobs must already be in
        the target repository, since only their ids are known."""
        layer = self.layers.get(blob.blob_id)
        if layer is not None:
            return layer
        digest = "sha256:" + blob.blob_id
        spec = parse_spec(target)
        size = client.stat_blob(spec.ref, digest) if spec.ref is not None else None
        if size is None:
            raise InvalidInput(
                f"chunk dict blob {blob.blob_id} is not in {target}'s repository: copy the "
                "dictionary image there, or give it as registry:REF"
            )

        def unavailable():
            raise InvalidInput(f"chunk dict blob {blob.blob_id} vanished from {target}")

        return Blob(img.NYDUS_BLOB, digest, size, unavailable, {img.A_BLOB: "true"})


def _bind(image: Image, desc):
    return lambda: image.open_blob(desc)


def _bootstrap_of(image: Image, out: Path) -> Bootstrap:
    """Extract image/image.boot from a Nydus image's bootstrap layer."""
    import tarfile

    layer = image.layers()[-1]
    with layer.open_uncompressed() as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            if member.name in (img.BOOTSTRAP_NAME, "image.boot") and member.isfile():
                src = tar.extractfile(member)
                assert src is not None
                with open(out, "wb") as f:
                    shutil.copyfileobj(src, f, 1 << 20)
                break
        else:
            raise InvalidInput(f"{image.name}: bootstrap layer has no {img.BOOTSTRAP_NAME}")
    with open(out, "rb") as f:
        return read_bootstrap(f)


def convert(opts: ConvertOptions, client: RegistryClient, progress: Progress) -> ConvertReport:
    start = time.monotonic()
    report = ConvertReport(opts.source, opts.target)
    base = opts.work_dir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rconv-", dir=base))
    try:
        source = open_image(opts.source, client=client)
        parse_spec(opts.target)  # a bad target fails before any work
        chunk_dict = _DictSource.load(opts.chunk_dict, opts, client, work)
        selected = _select(source, opts)
        results: list[tuple[Image, Image, Platform | None]] = []
        for n, (image, plat) in enumerate(selected):
            pdir = work / f"p{n}"
            pdir.mkdir()
            converted, preport = _convert_image(
                image, plat, opts, chunk_dict, client, pdir, progress
            )
            report.platforms.append(preport)
            results.append((image, converted, plat))
        top = _assemble_top(source, results, opts)
        t0 = time.monotonic()
        progress.log(f"pushing {opts.target}")
        desc = write_image(top, opts.target, client=client, jobs=opts.jobs)
        report.target_digest = desc.digest
        for p in report.platforms:
            p.stages["push"] = time.monotonic() - t0
    finally:
        gc.unfreeze()
        if not opts.keep_work_dir:
            shutil.rmtree(work, ignore_errors=True)
        else:
            progress.log(f"work dir kept at {work}")
    report.seconds = time.monotonic() - start
    return report


def _select(source: Image | Index, opts: ConvertOptions) -> list[tuple[Image, Platform | None]]:
    if isinstance(source, Image):
        return [(source, img.platform_of(source))]
    wanted = list(opts.platforms) or [host_platform_default()]
    chosen: list[tuple[Image, Platform | None]] = []
    for desc in source.manifests:
        plat = desc.platform
        if plat is None or plat.os == "unknown":  # attestation manifests and the like
            continue
        if opts.all_platforms or any(w.matches(plat) for w in wanted):
            child = source.child(desc)
            if isinstance(child, Image):
                chosen.append((child, plat))
    if not chosen:
        names = ", ".join(str(p) for p in wanted)
        raise InvalidInput(f"{opts.source}: no manifest for platform {names} in the index")
    return chosen


def _assemble_top(source, results, opts: ConvertOptions):
    annotations = img.index_annotations(opts.fs_version, source, opts.source, BUILDER)
    if opts.merge_platform:
        pairs = []
        for original, converted, plat in results:
            plat = plat or img.platform_of(original)
            if plat is None:
                raise InvalidInput(f"{opts.source}: the config names no os/architecture")
            if converted is original:  # already Nydus: nothing to pair it with
                raise InvalidInput(f"{opts.source}: already a Nydus image, nothing to merge")
            pairs.append((original, img.with_empty_layer(original), converted, plat))
        return img.merged_platform_index(pairs, annotations)
    if len(results) == 1 and (isinstance(source, Image) or not opts.all_platforms):
        return results[0][1]
    return img.nydus_index([r[1] for r in results], [r[2] for r in results], annotations)


class _EarlyPush:
    """Uploads each final blob as soon as its layer is assembled, two at a time (the last
    layers' blobs tend to be finished together), overlapping the network with the layers
    still converting and with the bootstrap. Only for registry targets; the final push
    then finds the blobs present (HEAD) and sends config and manifest. Blobs without a
    manifest are invisible, so a failure later still leaves the target tag untouched."""

    def __init__(self, target: str, client: RegistryClient) -> None:
        spec = parse_spec(target)
        self.ref = spec.ref if spec.kind == "registry" else None
        self.client = client
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="rconv-push") if self.ref else None
        self.futures: list = []

    def submit(self, path: Path, digest: str, size: int) -> None:
        if self.pool is not None:
            opener = lambda: open(path, "rb")  # noqa: E731 - re-opened on retries
            self.futures.append(
                self.pool.submit(self.client.upload_blob, self.ref, digest, size, opener)
            )

    def wait(self) -> None:
        for future in self.futures:
            future.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def _convert_image(
    image: Image,
    plat: Platform | None,
    opts: ConvertOptions,
    chunk_dict: _DictSource,
    client: RegistryClient,
    work: Path,
    progress: Progress,
) -> tuple[Image, PlatformReport]:
    where = f"{opts.source}" + (f" ({plat})" if plat else "")
    report = PlatformReport(str(plat or ""), image.digest, "")
    if img.is_nydus(image):
        report.skipped = "already a Nydus image"
        progress.log(f"{where}: already a Nydus image, copied unchanged")
        return image, report
    blob_opts = BlobOptions(
        opts.fs_version, opts.chunk_size, opts.compressor, opts.digester, opts.max_layer_size
    )
    layers = image.layers()
    for layer in layers:
        layer.compression  # noqa: B018 - rejects unknown/foreign media types before any work
    t0 = time.monotonic()
    timings: dict[int, float] = {}

    def stage1(i: int) -> SpeculativeLayer:
        started = time.monotonic()
        layer = layers[i]
        key = f"{work}/{i}"
        label = f"layer {i + 1}/{len(layers)} {layer.digest[7:19]}"
        progress.layer_start(key, label, layer.size)

        def opener():
            return CountingStream(layer.open(), lambda n: progress.layer_advance(key, n))

        spec = convert_layer(
            layer.digest, opener, work / f"spec-{i}", blob_opts, chunk_dict.chunks, where
        )
        timings[i] = time.monotonic() - started
        progress.layer_done(
            key,
            f"{where}: {label}: {layer.size} bytes in, {spec.bytes_in} bytes of tar, "
            f"{len(spec.chunks)} new chunks ({timings[i]:.1f} s)",
        )
        return spec

    known: dict[bytes, Chunk] = {}
    root = new_root()
    finals: list[FinalLayer] = []
    early = _EarlyPush(opts.target, client)
    # Two threads: the copies of consecutive layers overlap (they are mostly I/O and SHA-256),
    # and they overlap the tree work that follows, up to the bootstrap's blob table.
    assembly = ThreadPoolExecutor(2, thread_name_prefix="rconv-assemble")
    completions: list[Future] = []

    def complete(final: FinalLayer) -> None:
        final.complete()
        early.submit(final.path, "sha256:" + final.info.blob_id, final.info.compressed_size)

    def await_blobs() -> None:
        for completion in completions:
            completion.result()

    try:
        with ThreadPoolExecutor(max(1, opts.jobs), thread_name_prefix="rconv-layer") as pool:
            submitted = {i: pool.submit(stage1, i) for i in _stage1_order(layers)}
            futures = [submitted[i] for i in range(len(layers))]
            try:
                for i, future in enumerate(futures):
                    spec = future.result()
                    final = assemble_layer(spec, known, work / f"blob-{i}", blob_opts)
                    completions.append(assembly.submit(complete, final))
                    root = apply(root, spec, where)
                    # The merged tree lives to the end: keep the collector from re-scanning
                    # its hundreds of thousands of objects on every full pass (it doubled
                    # the time of the bootstrap write). Frozen objects are still freed by
                    # refcount.
                    gc.freeze()
                    finals.append(final)
                    for warning in spec.warnings:
                        report.warnings.append(f"{where}: layer {spec.digest}: {warning}")
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        report.stages["layers"] = time.monotonic() - t0
        converted = _finish_image(
            image, root, finals, timings, opts, chunk_dict, client, work, report, await_blobs
        )
        await_blobs()  # already done unless the bootstrap had no blob table to write
        early.wait()  # the uploads overlapped the bootstrap; all must have succeeded
    finally:
        assembly.shutdown(cancel_futures=True)
        early.close()
    return converted, report


def _stage1_order(layers) -> list[int]:
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


def _finish_image(
    image, root, finals, timings, opts, chunk_dict, client, work, report, await_blobs
) -> Image:
    """Merged bootstrap, bootstrap layer, config and manifest of a converted image.

    The final blobs may still be finishing: ``await_blobs`` waits for them, and the
    bootstrap writer calls it once the tree is laid out."""

    t1 = time.monotonic()
    blob_infos = [f.info for f in finals if f.chunks_stored]
    boot_path = work / "image.boot"
    bs = Bootstrap(
        root=root,
        blobs=blob_infos + chunk_dict.blobs,
        version=opts.fs_version,
        chunk_size=opts.chunk_size,
        compressor=opts.compressor,
        digester=opts.digester,
        prefetch=list(opts.prefetch),
    )
    used = {id(c.blob) for _, n in walk(root) for c in n.chunks}
    dict_used = [b for b in chunk_dict.blobs if id(b) in used]
    with open(boot_path, "wb") as f:
        write_bootstrap(f, bs, await_blobs)
    report.bootstrap_size = boot_path.stat().st_size
    layer_path = work / "bootstrap.tar.gz"
    digest, diff_id, size = img.write_bootstrap_layer(boot_path, layer_path)
    boot_layer = img.bootstrap_layer(layer_path, digest, size, opts.fs_version, opts.oci)
    blob_layers = []
    for i, final in enumerate(finals):
        blob_digest = "sha256:" + final.info.blob_id
        blob_layers.append(img.blob_layer(final.path, blob_digest, final.info.compressed_size))
        report.layers.append(
            LayerReport(
                final.digest,
                blob_digest,
                final.info.compressed_size,
                final.chunks_stored,
                final.chunks_deduped,
                final.bytes_in,
                timings.get(i, 0.0),
            )
        )
    dict_layers = [chunk_dict.layer_for(b, opts.target, client) for b in dict_used]
    converted = img.nydus_image(
        image,
        blob_layers,
        boot_layer,
        diff_id,
        dict_layers,
        opts.fs_version,
        opts.source,
        BUILDER,
        opts.oci,
        img.NYDUS_CONFIG if opts.merge_platform else None,
    )
    report.target_digest = converted.digest
    report.stages["bootstrap"] = time.monotonic() - t1
    return converted
