"""``run_check``: prove a Nydus image equivalent to its source, without a Nydus daemon.

Per selected platform (image.md §17 order): manifest and config rules, the bootstrap layer
and the RAFS invariant checker over its bootstrap (v5 and v6), the blob table against the
layers, each blob's meta (TOC, ci array, digest array) through range reads, then every stored
chunk read once, verified and hashed into per-file SHA-256s (convert.check.lazy), and, with a
source, the path-by-path comparison against the source layers applied by the independent
model (convert.check.reference), which runs on its own thread meanwhile.
"""

from __future__ import annotations

import io
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from convert.check import rules
from convert.check.blobs import BlobAccess, check_blob_meta, verify_whole
from convert.check.bootlayer import find_bootstrap, read_bootstrap_layer
from convert.check.compare import compare_trees, view_of_bootstrap
from convert.check.errors import SourceError
from convert.check.index import Selected, select, source_for
from convert.check.lazy import Progress, read_contents
from convert.check.reference import SourceTree, build_tree
from convert.check.report import CheckReport, PlatformResult, RuleResult
from rafs.bootstrap import detect_version, read_bootstrap
from rafs.check import check_bootstrap
from rafs.errors import RafsError
from rafs.model import Bootstrap, walk
from registry.client import RegistryClient
from registry.medium import open_image
from registry.model import Image, Platform

Log = Callable[[str], None]


@dataclass(frozen=True)
class CheckOptions:
    platforms: tuple[Platform, ...] = ()  # empty: this host's platform (indexes only)
    all_platforms: bool = False
    full: bool = False  # also download whole blobs and verify their digests
    jobs: int = 8  # concurrent range requests
    max_range: int = 4 << 20  # bytes per coalesced range request
    cache_bytes: int = 256 << 20  # chunk data kept for files that need it later
    work_dir: Path | None = None


def run_check(
    target: str,
    source: str | None,
    client: RegistryClient | None,
    options: CheckOptions = CheckOptions(),
    log: Log | None = None,
    progress: Progress | None = None,
) -> CheckReport:
    """Check the Nydus image ``target`` (any medium spec), against ``source`` when given."""
    start = time.monotonic()
    say = log or (lambda _message: None)
    report = CheckReport(target, source)
    top = open_image(target, client=client)
    src_top = open_image(source, client=client) if source else None
    report.rules, selected = select(top, options.platforms, options.all_platforms)
    base = options.work_dir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rconv-check-", dir=base) as work:
        for n, sel in enumerate(selected):
            src = source_for(src_top, sel) if src_top is not None else None
            where = f"{target}" + (f" ({sel.platform})" if sel.platform else "")
            say(f"checking {where}")
            pdir = Path(work) / f"p{n}"
            pdir.mkdir()
            report.platforms.append(_check_image(sel, src, options, pdir, say, progress))
    report.seconds = time.monotonic() - start
    return report


def _build_source(image: Image, stop: threading.Event) -> tuple[SourceTree, list[str]]:
    computed: list[str] = []
    layers = [(layer.digest, layer.open) for layer in image.layers()]
    return build_tree(layers, computed, stop), computed


def _check_image(
    sel: Selected,
    source: Image | None,
    options: CheckOptions,
    work: Path,
    say: Log,
    progress: Progress | None,
) -> PlatformResult:
    image = sel.image
    source_digest = source.digest if source is not None else None
    result = PlatformResult(str(sel.platform or ""), image.digest, source_digest)
    stop = threading.Event()
    with ThreadPoolExecutor(1, thread_name_prefix="rconv-check-source") as pool:
        future = pool.submit(_build_source, source, stop) if source is not None else None
        try:
            bs = _check_target(image, source, options, work, say, progress, result)
        except BaseException:
            stop.set()  # the source thread stops at its next tar entry
            raise
        if future is not None:
            _compare(future, bs, source, result, say)  # type: ignore[arg-type]
    return result


def _check_target(
    image: Image,
    source: Image | None,
    options: CheckOptions,
    work: Path,
    say: Log,
    progress: Progress | None,
    result: PlatformResult,
) -> Bootstrap | None:
    """The target's rules and the lazy content read; the parsed bootstrap, if any."""
    add = result.rules.append
    layers = image.layer_descriptors
    add(rules.media_type(image))
    add(rules.subject(image))
    add(rules.config_platform(image, source))
    add(rules.bootstrap_last(layers))
    boot_index = find_bootstrap(layers)
    add(rules.blob_layers(layers, boot_index))
    dict_blobs = rules.dict_blob_count(layers, boot_index, source)
    if boot_index is None:
        add(rules.diff_ids(image, None))
        result.notes.append("no bootstrap layer found: nothing else can be checked")
        return None
    boot = read_bootstrap_layer(image, boot_index)
    add(rules.bootstrap_media_type(image, layers[boot_index]))
    add(rules.bootstrap_content(boot))
    bs, version, valid = None, None, RuleResult("bootstrap-valid", "image.md §17; rafs check")
    if boot.data is not None:
        valid.problems = check_bootstrap(boot.data, canonical=False)
        try:
            version = detect_version(boot.data[:1028])
            bs = read_bootstrap(io.BytesIO(boot.data))
        except RafsError:
            pass
    else:
        valid.skipped = "no bootstrap"
    add(valid)
    add(rules.bootstrap_fs_version(image, layers[boot_index], version))
    add(rules.diff_ids(image, boot))
    add(rules.config_config(image, source))
    add(rules.history(image, source, dict_blobs))
    add(rules.manifest_annotations(image, source, version))
    if bs is None:
        result.notes.append("the bootstrap cannot be read: its tree was not checked")
        return None
    add(rules.blob_table(bs, layers, boot_index))
    add(rules.layer_count(layers, boot_index, source, bs))
    add(rules.blobs_present(image))
    sizes = {d.digest.removeprefix("sha256:"): d.size for d in layers}
    access = BlobAccess(image, sizes, work, options.full)
    try:
        add(RuleResult("blob-meta", "blob.md §8-§10", problems=check_blob_meta(access, bs)))
        if options.full:
            ids = [
                d.digest.removeprefix("sha256:") for i, d in enumerate(layers) if i != boot_index
            ]
            problems = verify_whole(access, ids + [b.blob_id for b in bs.blobs])
            add(RuleResult("blob-digest", "image.md §4, §6.1", problems=problems))
        meta_bytes = access.bytes_fetched
        say(f"reading {sum(1 for _ in walk(bs.root))} paths' content through the blobs")
        content = read_contents(
            (node for _, node in walk(bs.root)),
            access.fetch,
            jobs=options.jobs,
            max_range=options.max_range,
            cache_bytes=options.cache_bytes,
            progress=progress,
            zran=access.zran,
        )
    finally:
        access.close()
    add(RuleResult("chunk-data", "blob.md §3, §4", problems=content.bad_chunks))
    result.stats.update(
        chunks=content.chunks,
        chunk_bytes=content.chunk_bytes,  # stored sizes of the distinct chunks
        chunk_bytes_read=content.fetched,  # what reading them took (refetches included)
        refetched=content.refetched,
        chunk_ranges=content.requests,
        meta_bytes_read=meta_bytes,
        bytes_fetched=access.bytes_fetched,  # from the registry or medium, in all
        requests=access.requests,  # range requests, or whole-blob downloads
        range_reads=access.ranged,
    )
    result.stats["digests"] = content.digests  # removed again by _compare (not JSON)
    return bs


def _compare(
    future: Future, bs: Bootstrap | None, source: Image, result: PlatformResult, say: Log
) -> None:
    digests = result.stats.pop("digests", {})
    fs = RuleResult("filesystem", "image.md §15, §17")
    try:
        tree, computed = future.result()
    except SourceError as exc:
        fs.problems.append(str(exc))
        result.rules.append(fs)
        return
    result.rules.append(rules.source_diff_ids(source, computed))
    result.stats["paths"] = len(tree.paths)
    if bs is None:
        fs.skipped = "no readable bootstrap"
        result.rules.append(fs)
        return
    say("comparing the trees")
    result.differences = compare_trees(tree.paths, view_of_bootstrap(bs.root, digests))
    if result.differences:
        fs.problems.append(f"{len(result.differences)} differences (listed below)")
    result.rules.append(fs)
    if tree.implicit_over_lower:
        names = ", ".join(p.decode(errors="replace") for p in sorted(tree.implicit_over_lower))
        result.notes.append(
            "implicit parent directories kept the metadata of the directory below them, as "
            "containerd does (image.md §15.5); nydusify check expects 0755 root:root there "
            f"and may report them: {names}"
        )


def progress_to(bar) -> Progress:
    """Adapt ``read_contents`` progress to a bar with layer_start/advance/done (the CLI's)."""
    state: dict = {"done": 0, "task": "", "passes": 0}

    def progress(done: int, total: int) -> None:
        if done < state["done"] or not state["task"]:  # a new pass (platform or refetch)
            if state["task"]:
                bar.layer_done(state["task"], f"read {state['done']} bytes of chunks")
            state["passes"] += 1
            state["task"] = f"check-chunks-{state['passes']}"
            state["done"] = 0
            bar.layer_start(state["task"], "reading chunks", total)
        bar.layer_advance(state["task"], done - state["done"])
        state["done"] = done
        if done >= total:
            bar.layer_done(state["task"], f"read {done} bytes of chunks")
            state["task"], state["done"] = "", 0

    return progress
