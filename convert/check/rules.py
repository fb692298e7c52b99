"""Manifest, config and blob-table rules of a Nydus image, each a named ``RuleResult``.

They implement every MUST of ../shared/spec/image.md §17 (what ``nydusify check`` enforces)
and the checklist of §18, with the sections named in each result: media types (§2),
annotations (§3), the bootstrap layer (§1, §5), the blob table against the layers (§6), the
config rewrite (§7), the manifest rewrite (§8, §9.5). SHOULD rules are warnings.
"""

from __future__ import annotations

import json
import re
from typing import Any

from convert.check.bootlayer import BootstrapLayer
from convert.check.report import WARNING, RuleResult
from convert.nydus import (
    A_BLOB,
    A_BOOTSTRAP,
    A_BUILDER,
    A_FS_VERSION,
    A_REF,
    A_SOURCE_DIGEST,
    A_SOURCE_REF,
)
from rafs.blob.ondisk import BlobFeature
from rafs.model import Bootstrap
from registry import mediatype as mt
from registry.errors import RegistryError
from registry.model import Descriptor, Image

BOOTSTRAP_HISTORY = {"created_by": "Nydus Converter", "comment": "Nydus Bootstrap Layer"}
DICT_HISTORY = {"created_by": "Nydus Converter", "comment": "Nydus Chunk Dict Blob"}
GZIP_LAYERS = {mt.OCI_MANIFEST: mt.OCI_LAYER_GZIP, mt.DOCKER_MANIFEST: mt.DOCKER_LAYER_GZIP}
_BLOB_META_NAME = re.compile(r"image/[0-9a-f]{64}\.blob\.meta")


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


def media_type(image: Image) -> RuleResult:
    r = RuleResult("manifest-media-type", "image.md §2, §18.9")
    if "mediaType" not in image.manifest:
        r.problems.append("the manifest has no top-level mediaType")
    return r


def subject(image: Image) -> RuleResult:
    r = RuleResult("subject", "image.md §9.5, §18.8")
    subj = image.manifest.get("subject")
    if isinstance(subj, dict) and "platform" in subj:
        r.problems.append("the subject descriptor carries a platform")
    return r


def config_platform(image: Image, source: Image | None) -> RuleResult:
    r = RuleResult("config-platform", "image.md §7, §17")
    cfg = image.config
    for key in ("os", "architecture"):
        if not cfg.get(key):
            r.problems.append(f"the config has no {key!r}")
    if source is not None:
        for key in ("os", "architecture", "variant", "os.version"):
            if cfg.get(key) != source.config.get(key):
                r.problems.append(
                    f"{key} is {cfg.get(key)!r}, the source's is {source.config.get(key)!r}"
                )
    return r


def bootstrap_last(layers: list[Descriptor]) -> RuleResult:
    r = RuleResult("bootstrap-last", "image.md §1, §17")
    marked = [i for i, d in enumerate(layers) if d.annotations.get(A_BOOTSTRAP) == "true"]
    if not layers:
        r.problems.append("the manifest has no layers")
    elif marked != [len(layers) - 1]:
        last = layers[-1].annotations.get(A_BOOTSTRAP)
        if last != "true":
            r.problems.append(f"the last layer's {A_BOOTSTRAP} annotation is {last!r}, not 'true'")
        for i in marked:
            if i != len(layers) - 1:
                r.problems.append(f"layer {i} (not the last) is annotated as the bootstrap")
    return r


def blob_layers(layers: list[Descriptor], boot: int | None) -> RuleResult:
    r = RuleResult("blob-layers", "image.md §2, §3.1, §17, §18.2")
    for i, d in enumerate(layers):
        if i == boot or i == len(layers) - 1:
            continue  # the bootstrap's own rules judge it (bootstrap-last when misplaced)
        if d.media_type != mt.NYDUS_BLOB:
            r.problems.append(f"layer {i} has media type {d.media_type}, not {mt.NYDUS_BLOB}")
        if d.annotations.get(A_BLOB) != "true":
            r.problems.append(f"layer {i} lacks the annotation {A_BLOB}: 'true'")
    return r


def bootstrap_media_type(image: Image, desc: Descriptor) -> RuleResult:
    r = RuleResult("bootstrap-media-type", "image.md §2, §5.2, §18.1")
    want = GZIP_LAYERS.get(image.media_type, mt.OCI_LAYER_GZIP)
    if desc.media_type != want:
        r.problems.append(f"the bootstrap layer is {desc.media_type}, expected {want}")
    return r


def bootstrap_content(boot: BootstrapLayer) -> RuleResult:
    r = RuleResult("bootstrap-content", "image.md §5.1")
    r.problems += boot.problems
    for name in boot.names:
        if name.startswith(("./", "/")):
            r.problems.append(f"tar entry {name!r} is not a plain relative name")
        elif name not in ("image", "image/") and not name.startswith("image/"):
            r.problems.append(f"unexpected tar entry {name!r} outside image/")
        elif name.endswith(".blob.meta") and not _BLOB_META_NAME.fullmatch(name):
            r.problems.append(f"blob meta entry {name!r} is not image/<blob-id>.blob.meta")
    return r


def bootstrap_fs_version(image: Image, desc: Descriptor, version: int | None) -> RuleResult:
    r = RuleResult("bootstrap-fs-version", "image.md §3.1, §18.1")
    value = desc.annotations.get(A_FS_VERSION)
    if value not in ("5", "6"):
        r.problems.append(f"the bootstrap layer's {A_FS_VERSION} is {value!r}, not '5' or '6'")
    elif version is not None and value != str(version):
        r.problems.append(f"{A_FS_VERSION} says {value}, the bootstrap is RAFS v{version}")
    return r


def diff_ids(image: Image, boot: BootstrapLayer | None) -> RuleResult:
    r = RuleResult("diff-ids", "image.md §5.2, §7, §17, §18.4")
    rootfs = image.config.get("rootfs") or {}
    ids = rootfs.get("diff_ids") or []
    layers = image.layer_descriptors
    if rootfs.get("type") != "layers":
        r.problems.append(f"rootfs.type is {rootfs.get('type')!r}, not 'layers'")
    if len(ids) != len(layers):
        r.problems.append(f"{len(ids)} diff_ids for {len(layers)} layers")
        return r
    for i, (d, diff_id) in enumerate(zip(layers, ids, strict=True)):
        if boot is not None and i == boot.index:
            if boot.diff_id and diff_id != boot.diff_id:
                r.problems.append(
                    f"bootstrap layer diff_id {diff_id} != {boot.diff_id} (its uncompressed tar)"
                )
        elif d.media_type == mt.NYDUS_BLOB and diff_id != d.digest:
            r.problems.append(f"layer {i}: diff_id {diff_id} is not its digest {d.digest}")
    return r


def source_diff_ids(source: Image, computed: list[str]) -> RuleResult:
    r = RuleResult("source-diff-ids", "image.md §17")
    ids = (source.config.get("rootfs") or {}).get("diff_ids") or []
    if len(ids) != len(source.layer_descriptors):
        r.problems.append(f"{len(ids)} diff_ids for {len(source.layer_descriptors)} layers")
        return r
    for i, (want, got) in enumerate(zip(ids, computed, strict=False)):
        if want != got:
            r.problems.append(f"source layer {i}: diff_id {want} but its tar hashes to {got}")
    return r


def _config_object(image: Image) -> dict[str, Any]:
    obj = dict(image.config.get("config") or {})
    obj.pop("ArgsEscaped", None)
    return obj


def config_config(image: Image, source: Image | None) -> RuleResult:
    r = RuleResult("config-config", "image.md §7, §17, §18.5")
    if source is None:
        r.skipped = "no --source"
        return r
    mine, theirs = _config_object(image), _config_object(source)
    for key in sorted(mine.keys() | theirs.keys()):
        if mine.get(key) != theirs.get(key):
            mine_text, theirs_text = _short(mine.get(key)), _short(theirs.get(key))
            r.problems.append(f"config.{key} is {mine_text}, the source's is {theirs_text}")
    return r


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def history(image: Image, source: Image | None, dict_blobs: int) -> RuleResult:
    r = RuleResult("config-history", "image.md §7, §18.5")
    if source is None:
        r.skipped = "no --source"
        return r
    mine = list(image.config.get("history") or [])
    theirs = list(source.config.get("history") or [])
    want = theirs + [DICT_HISTORY] * dict_blobs + [BOOTSTRAP_HISTORY]
    if mine[: len(theirs)] != theirs:
        r.problems.append("the source's history entries are not kept in order")
    elif [_plain(h) for h in mine[len(theirs) :]] != want[len(theirs) :]:
        r.problems.append(
            f"expected {dict_blobs} chunk-dict entries and then {BOOTSTRAP_HISTORY} after "
            f"the source's {len(theirs)} entries, found {mine[len(theirs) :]}"
        )
    return r


def _plain(entry: Any) -> Any:
    if isinstance(entry, dict):
        return {k: v for k, v in entry.items() if k in ("created_by", "comment")}
    return entry


def manifest_annotations(image: Image, source: Image | None, version: int | None) -> RuleResult:
    r = RuleResult("manifest-annotations", "image.md §3.2", level=WARNING)
    found = image.annotations
    for key in (A_SOURCE_DIGEST, A_SOURCE_REF, A_FS_VERSION, A_BUILDER):
        if key not in found:
            r.problems.append(f"the manifest lacks the annotation {key}")
    if version is not None and found.get(A_FS_VERSION, str(version)) != str(version):
        r.problems.append(f"{A_FS_VERSION} says {found[A_FS_VERSION]}, the bootstrap is v{version}")
    if source is not None and found.get(A_SOURCE_DIGEST, source.digest) != source.digest:
        r.problems.append(f"{A_SOURCE_DIGEST} is {found[A_SOURCE_DIGEST]}, not {source.digest}")
    return r


def blob_table(bs: Bootstrap, layers: list[Descriptor], boot: int) -> RuleResult:
    r = RuleResult("blob-table", "image.md §6, §17, §18.3")
    blob_layers = [d for i, d in enumerate(layers) if i != boot]
    candidates = {_hex(d.digest): d for d in blob_layers if A_REF not in d.annotations}
    refs = {_hex(d.annotations[A_REF]): d for d in blob_layers if A_REF in d.annotations}
    for blob in bs.blobs:
        if blob.chunk_size != bs.chunk_size:
            r.problems.append(
                f"blob {blob.blob_id[:12]} has chunk size {blob.chunk_size:#x}, "
                f"the bootstrap {bs.chunk_size:#x}"
            )
    if not blob_layers:
        return r  # backend mode: the blobs are not in the manifest (§10)
    for blob in bs.blobs:
        if blob.features & BlobFeature.ZRAN:  # data = the source layer, named by nydus-ref
            ref = refs.get(blob.blob_id)
            if ref is None:
                r.problems.append(f"zran blob {blob.blob_id} is named by no nydus-ref layer")
            elif (_hex(ref.digest), ref.size) != (blob.meta_digest.hex(), blob.meta_size):
                r.problems.append(
                    f"zran blob {blob.blob_id[:12]}: its ref layer {ref.digest} ({ref.size} "
                    f"bytes) is not the blob table's meta blob"
                )
            continue
        d = candidates.get(blob.blob_id)
        if d is None:
            r.problems.append(f"blob id {blob.blob_id} is not the digest of any blob layer")
        elif d.size != blob.compressed_size:
            r.problems.append(
                f"blob {blob.blob_id[:12]}: layer size {d.size}, blob table {blob.compressed_size}"
            )
    return r


def layer_count(layers: list[Descriptor], boot: int, source: Image | None, bs: Bootstrap):
    r = RuleResult("layer-count", "image.md §1, §4, §14.4, §18.2")
    if source is None:
        r.skipped = "no --source"
        return r
    blobs = [d for i, d in enumerate(layers) if i != boot]
    want = len(source.layer_descriptors)
    if len(blobs) < want:
        r.problems.append(f"{len(blobs)} blob layers for {want} source layers")
        return r
    table = {b.blob_id for b in bs.blobs}
    for i, d in enumerate(blobs[want:], start=want):
        if _hex(d.digest) not in table:
            r.problems.append(f"layer {i} is neither a source layer's blob nor a used dict blob")
    return r


def dict_blob_count(layers: list[Descriptor], boot: int | None, source: Image | None) -> int:
    if source is None:
        return 0
    return max(0, len(layers) - 1 - len(source.layer_descriptors)) if boot is not None else 0


def blobs_present(image: Image) -> RuleResult:
    r = RuleResult("blobs-present", "image.md §18.10")
    if not image.ranged:
        r.skipped = "not a registry image"
        return r
    for i, d in enumerate(image.layer_descriptors):
        try:
            size = image.stat_blob(d.digest)
        except RegistryError as exc:
            r.problems.append(f"layer {i} {d.digest}: {exc}")
            continue
        if size is None:
            r.problems.append(f"layer {i} {d.digest} is not in the repository")
        elif size >= 0 and size != d.size:
            r.problems.append(f"layer {i} {d.digest}: {size} bytes, the descriptor says {d.size}")
    return r
