"""The build cache store: records of converted layers, kept as an image in a registry.

Spec: ../shared/spec/image.md §13.1 (the container acceld and nydusify use) and §13.3 (rconv's
keys). The cache reference holds an OCI index with one entry per (platform, generation): the
generation is the ``A_CACHE_VERSION`` annotation, a hash of the options that change bytes, so
upstream's ``v1`` manifests and ours ignore each other; a save puts its generation last and
keeps rconv's ``MAX_GENERATIONS`` most recently saved ones per platform. A generation's
manifest lists its records from least to most recently used, two layers each: the Nydus blob
(annotated with the source digest and the chain ID, as upstream annotates its blob layers)
and the layer state (``rafs.layerstate`` bytes, opaque here). Its config is a valid image
config whose diff_ids list every layer, so the cache image can be pulled and copied
(upstream's cannot: acceld#243).

A cache problem never raises: a missing cache is empty, an unreadable, corrupt or foreign one
gives one warning and an empty cache, and ``save`` rewrites it. ``save`` reads the index again,
merges (records of other writers are kept), evicts the least recently used records beyond the
capacity, pushes, and retries when the tag moved underneath, so that concurrent conversions
sharing a cache keep each other's records.
"""

from __future__ import annotations

import io
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from registry import mediatype as mt
from registry.build import dumps
from registry.client import RegistryClient
from registry.digest import check_digest, digest_of, verifying
from registry.errors import (
    DigestMismatch,
    InvalidManifest,
    InvalidReference,
    NotFound,
    RegistryError,
    Unsupported,
)
from registry.model import Descriptor, Platform, load_json, manifest_media_type
from registry.reference import Reference, parse_reference

from .nydus import A_BLOB, A_CACHE_VERSION, A_SOURCE_CHAINID, A_SOURCE_DIGEST, A_UNCOMPRESSED

STATE_MEDIA_TYPE = "application/vnd.rconv.nydus.layer-state.v2+gzip"

MAX_RECORDS = 200  # upstream's default and maximum capacity
# rconv's generations of one platform kept in a cache, ours included: an option change or a
# new record format starts a generation, and the old one would otherwise pin its blobs forever.
MAX_GENERATIONS = 4
GENERATION_PREFIX = "rconv-"  # every cache version rconv writes (cachestage.generation)
STATE_LIMIT = 64 << 20  # a layer state is a few KiB to a few MiB; refuse to buffer more
CONFIG_LIMIT = 4 << 20
SAVE_ATTEMPTS = 5
# Seconds between pushing the index and checking that it stayed: at least SETTLE, and
# SETTLE_ROUNDS times our own check-and-push time, a measure of another writer's gap between
# its check and its push through the same registry (a far registry needs a longer wait).
SETTLE = 0.05
SETTLE_ROUNDS = 4

log = logging.getLogger("rconv.convert")


@dataclass(frozen=True)
class CacheRecord:
    chain_id: str  # chain ID of the source layers up to this one (OCI image spec)
    source_digest: str  # the source layer's digest
    blob: Descriptor  # the Nydus blob layer (NYDUS_BLOB) in the cache repository
    state: Descriptor  # the layer-state record (rafs.layerstate bytes) in the cache repository


class _Corrupt(Exception):
    """Cache content that is not what this module writes (the message says why)."""


# What reading a cache can run into that says "this content is not a usable cache", as
# opposed to a registry that cannot be reached or refuses (those stop a save).
_CONTENT_ERRORS = (_Corrupt, InvalidManifest, Unsupported, DigestMismatch, NotFound)


@dataclass
class _Remote:
    """The cache as read from the registry: what a save merges with and writes back."""

    digest: str | None = None  # of the manifest under the tag; None when the tag is absent
    entries: list[dict[str, Any]] = field(default_factory=list)  # index entries, raw JSON
    annotations: dict[str, str] | None = None  # the index's own
    ours: int | None = None  # position of our (platform, version) entry in ``entries``
    records: list[CacheRecord] = field(default_factory=list)  # least recently used first
    problem: str | None = None  # why (part of) the cache was unusable


@dataclass
class _Pending:
    """A record put since the last save: what uploading it needs."""

    record: CacheRecord
    opener: Callable[[], BinaryIO]
    state: bytes
    mount_from: Reference | None


class BuildCache:
    """The build cache of one platform and one generation at a registry reference.

    ``get``, ``put``, ``read_state``, ``blob_present`` and ``open_blob`` may be called from
    any thread; ``save`` once the conversion is done.
    """

    def __init__(
        self,
        ref: Reference,
        client: RegistryClient,
        platform: Platform,
        version: str,
        max_records: int,
        warn: Callable[[str], None],
    ) -> None:
        self.ref = ref
        self._client = client
        self._platform = platform
        self._version = version
        self._max = max(1, min(MAX_RECORDS, max_records))
        self._warn = warn
        self._lock = threading.Lock()
        self._records: OrderedDict[str, CacheRecord] = OrderedDict()  # LRU first
        self._touched: OrderedDict[str, None] = OrderedDict()  # used or put since the last save
        self._pending: dict[str, _Pending] = {}
        self._dead: dict[str, CacheRecord] = {}  # records whose blob or state is gone
        self._repair = False  # the cache was unreadable: rewrite it even with no news
        self._gone_entries: set[str] = set()  # index entries whose manifest was deleted
        self._lookup_failed = False
        self._opened: _Remote | None = None  # the cache as ``open`` read it

    @classmethod
    def open(
        cls,
        ref: str,
        client: RegistryClient,
        platform: Platform,
        version: str,
        max_records: int = MAX_RECORDS,
        warn: Callable[[str], None] = lambda m: None,
    ) -> BuildCache:
        """Read the cache at ``ref`` (a reference with a tag; ``latest`` when it has none).

        Never raises for a cache problem: a missing cache is silently empty; an unreadable,
        corrupt or foreign one gives one ``warn`` line and an empty cache. A reference that
        does not parse, or that names a digest, is a usage error (``InvalidReference``).
        """
        parsed = parse_reference(ref)
        if parsed.digest is not None:
            raise InvalidReference(f"build cache {ref}: needs a tag, not a digest")
        cache = cls(parsed, client, platform, version, max_records, warn)
        try:
            remote = cache._load()
        except Exception as err:  # a cache problem never breaks a conversion
            log.debug("build cache %s", parsed, exc_info=True)
            warn(f"build cache {parsed}: unreadable ({_why(err)}); converting without it")
            return cache
        cache._opened = remote
        if remote.problem is not None:
            warn(f"build cache {parsed}: ignored ({remote.problem}); converting without it")
            cache._repair = True
        for record in remote.records:
            cache._records[record.chain_id] = record
        return cache

    # ----------------------------------------------------------------- lookups

    def get(self, chain_id: str) -> CacheRecord | None:
        """The record of ``chain_id``; a hit becomes the most recently used record."""
        with self._lock:
            record = self._records.get(chain_id)
            if record is None:
                return None
            self._records.move_to_end(chain_id)
            self._touched[chain_id] = None
            self._touched.move_to_end(chain_id)
            return record

    def read_state(self, record: CacheRecord) -> bytes | None:
        """The record's state bytes, digest and size verified; None (plus one warn line) when
        unreadable, and the record is dropped."""
        pending = self._pending_of(record)
        if pending is not None:
            return pending.state
        d = record.state
        try:
            with self._client.open_blob(self.ref, d.digest, d.size) as f:
                data = f.read(STATE_LIMIT + 1)
                f.read()  # EOF: the digest is checked
            if len(data) > STATE_LIMIT:
                raise _Corrupt(f"state over {STATE_LIMIT} bytes")
        except Exception as err:
            log.debug("build cache %s: state %s", self.ref, d.digest, exc_info=True)
            self._drop(record, isinstance(err, _CONTENT_ERRORS))
            self._warn(
                f"build cache {self.ref}: the state of layer chain {_short(record.chain_id)} "
                f"is unreadable ({_why(err)}); converting that layer"
            )
            return None
        return data

    def blob_present(self, record: CacheRecord) -> bool:
        """Whether the record's blob is in the cache repository (HEAD); a record whose blob
        is gone is dropped."""
        if self._pending_of(record) is not None:
            return True
        try:
            size = self._client.stat_blob(self.ref, record.blob.digest)
        except RegistryError as err:
            if not self._lookup_failed:  # one line, not one per layer
                self._lookup_failed = True
                self._warn(f"build cache {self.ref}: cannot look blobs up ({_why(err)})")
            return False
        if size is None or (size >= 0 and size != record.blob.size):
            self._drop(record, True)
            return False
        return True

    def open_blob(self, record: CacheRecord) -> BinaryIO:
        """Verified stream of the record's blob from the cache repository."""
        d = record.blob
        pending = self._pending_of(record)
        if pending is not None:
            return verifying(pending.opener(), d.digest, d.size, f"blob {d.digest}")
        return self._client.open_blob(self.ref, d.digest, d.size)

    # ----------------------------------------------------------------- updates

    def put(
        self,
        chain_id: str,
        source_digest: str,
        blob: Descriptor,
        blob_opener: Callable[[], BinaryIO],
        state: bytes,
        mount_from: Reference | None = None,
    ) -> None:
        """Queue a new (or refreshed) record, the most recently used; ``save`` uploads it."""
        record = CacheRecord(
            chain_id,
            source_digest,
            _blob_descriptor(blob.digest, blob.size, source_digest, chain_id),
            _state_descriptor(digest_of(state), len(state), chain_id),
        )
        with self._lock:
            self._records[chain_id] = record
            self._records.move_to_end(chain_id)
            self._touched[chain_id] = None
            self._touched.move_to_end(chain_id)
            self._pending[chain_id] = _Pending(record, blob_opener, state, mount_from)
            self._dead.pop(chain_id, None)

    def save(self) -> None:
        """Upload the queued records, then write the generation's manifest and the index
        (read, merge, push, retried when the tag moved). Never raises: a failure is one
        ``warn`` line."""
        try:
            problem = self._save()
        except Exception as err:  # a cache problem never breaks a conversion
            log.debug("build cache %s: save", self.ref, exc_info=True)
            problem = f"not saved ({_why(err)})"
        if problem:
            self._warn(f"build cache {self.ref}: {problem}")

    # ----------------------------------------------------------------- internals

    def _pending_of(self, record: CacheRecord) -> _Pending | None:
        with self._lock:
            p = self._pending.get(record.chain_id)
        return p if p is not None and p.record == record else None

    def _drop(self, record: CacheRecord, gone: bool) -> None:
        """Forget ``record`` for this conversion; when its content is ``gone`` from the
        registry (not merely unreachable), the next save removes it from the cache too."""
        with self._lock:
            if self._records.get(record.chain_id) == record:
                del self._records[record.chain_id]
                self._touched.pop(record.chain_id, None)
            if gone:
                self._dead[record.chain_id] = record

    def _save(self) -> str | None:
        """Returns what went wrong, if anything."""
        with self._lock:
            touched = [self._records[c] for c in self._touched if c in self._records]
            pending = dict(self._pending)
            dead = dict(self._dead)
        failed, problem = self._upload_records(pending.values())
        touched = [r for r in touched if r.chain_id not in failed]
        put = set(pending) - failed
        if not touched and not dead and not self._repair:
            return problem
        pushed = unchanged = False
        for attempt in range(SAVE_ATTEMPTS):
            if attempt:
                time.sleep(random.uniform(0.05, 0.2) * attempt)
            remote = self._reload()
            merged = self._merge(remote.records, touched, put, dead)
            if pushed:
                # the tag moved after our push: did that writer keep our records?
                if all(r in remote.records for r in merged if r in touched):
                    break
            elif remote.ours is not None and remote.problem is None and merged == remote.records:
                unchanged = True
                break  # the cache already says exactly this
            try:
                manifest = self._push_manifest(merged)
            except RegistryError as err:
                if "MANIFEST_BLOB_UNKNOWN" not in err.codes and "BLOB_UNKNOWN" not in err.codes:
                    raise
                dead.update(self._missing(merged))  # blobs deleted from the registry
                continue
            index = self._index(remote, manifest)
            checked = time.monotonic()
            if self._tag_digest() != remote.digest:
                continue  # another writer saved since we read: merge again
            try:
                self._client.put_manifest(self.ref, index, mt.OCI_INDEX)
            except RegistryError as err:
                if "MANIFEST_BLOB_UNKNOWN" not in err.codes:
                    raise
                self._gone_entries |= self._missing_entries(remote)
                continue
            pushed = True
            # A writer that checked the tag just before our push pushes right after it, and
            # would drop our records: give it the time to, then look.
            gap = time.monotonic() - checked
            time.sleep(max(SETTLE, SETTLE_ROUNDS * gap) * random.uniform(1.0, 1.5))
            if self._tag_digest() == digest_of(index):
                break
        if not pushed and not unchanged:
            return f"not saved (the cache tag kept moving: {SAVE_ATTEMPTS} attempts)"
        with self._lock:
            self._records = OrderedDict((r.chain_id, r) for r in merged)
            self._touched.clear()
            self._pending.clear()
            self._dead.clear()
            self._repair = False
        return problem

    def _upload_records(self, pending: Iterable[_Pending]) -> tuple[set[str], str | None]:
        """Upload the blobs and states of ``pending``; returns the chain IDs that failed and
        what to say about them."""
        failed: set[str] = set()
        first: list[str] = []
        items = list(pending)
        if not items:
            return failed, None

        def upload(p: _Pending) -> None:
            b, s = p.record.blob, p.record.state
            try:
                self._client.upload_blob(
                    self.ref, b.digest, b.size, p.opener, mount_from=p.mount_from
                )
                self._client.upload_blob(self.ref, s.digest, s.size, _bytes_opener(p.state))
            except Exception as err:
                log.debug("build cache %s: upload", self.ref, exc_info=True)
                failed.add(p.record.chain_id)
                first.append(f"layer chain {_short(p.record.chain_id)}: {_why(err)}")

        jobs = max(1, min(self._client.options.jobs, len(items)))
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(upload, items))
        if not failed:
            return failed, None
        n = len(failed)
        return failed, f"{n} record{'s' if n > 1 else ''} not saved ({first[0]})"

    def _merge(
        self,
        theirs: list[CacheRecord],
        ours: list[CacheRecord],
        put: set[str],
        dead: dict[str, CacheRecord],
    ) -> list[CacheRecord]:
        """Their records we did not use, in their order, then ours in the order we used
        them; without the dead ones; trimmed from the least recently used end."""
        used = {r.chain_id for r in ours}
        fresh = {r.chain_id: r for r in theirs}
        out = [r for r in theirs if r.chain_id not in used and dead.get(r.chain_id) != r]
        for r in ours:
            if r.chain_id not in put:
                # only looked up: another writer may have refreshed it since we read it
                r = fresh.get(r.chain_id, r)
            if dead.get(r.chain_id) != r:
                out.append(r)
        return out[-self._max :]

    def _push_manifest(self, records: list[CacheRecord]) -> Descriptor:
        config, manifest = _cache_image(records, self._platform, self._version)
        cfg = digest_of(config)
        self._client.upload_blob(self.ref, cfg, len(config), _bytes_opener(config))
        desc = Descriptor.of(mt.OCI_MANIFEST, manifest)
        self._client.put_manifest(self.ref.with_digest(desc.digest), manifest, mt.OCI_MANIFEST)
        return desc

    def _index(self, remote: _Remote, manifest: Descriptor) -> bytes:
        """The index read, with our generation's entry last (the most recently saved), entries
        whose manifest is gone left out, and rconv's older generations of our platform beyond
        ``MAX_GENERATIONS`` dropped, least recently saved first; other platforms and other
        tools' entries stay as they are."""
        entry = {
            "mediaType": mt.OCI_MANIFEST,
            "digest": manifest.digest,
            "size": manifest.size,
            "platform": self._platform.to_json(),
            "annotations": {A_CACHE_VERSION: self._version},
        }
        entries = [
            e
            for e in remote.entries
            if not self._is_ours(e) and e.get("digest") not in self._gone_entries
        ]
        older = [i for i, e in enumerate(entries) if self._is_ours(e, any_generation=True)]
        dropped = set(older[: max(0, len(older) - (MAX_GENERATIONS - 1))])
        entries = [e for i, e in enumerate(entries) if i not in dropped]
        entries.append(entry)
        index: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": entries,
        }
        if remote.annotations:
            index["annotations"] = remote.annotations
        return dumps(index)

    def _is_ours(self, entry: dict[str, Any], any_generation: bool = False) -> bool:
        """Whether ``entry`` is our platform's manifest of our generation (of any generation
        rconv writes, with ``any_generation``)."""
        try:
            d = Descriptor.from_json(entry, "index entry")
            p = d.platform
            version = d.annotations.get(A_CACHE_VERSION, "")
            return (
                mt.is_image(d.media_type)
                and p is not None
                and p.matches(self._platform)
                and (
                    version.startswith(GENERATION_PREFIX)
                    if any_generation
                    else version == self._version
                )
            )
        except RegistryError:
            return False

    def _tag_digest(self) -> str | None:
        try:
            return self._client.resolve(self.ref).digest
        except NotFound:
            return None

    def _missing(self, records: list[CacheRecord]) -> dict[str, CacheRecord]:
        """Records whose blob or state the cache repository no longer has."""
        gone: dict[str, CacheRecord] = {}
        for r in records:
            for d in (r.blob, r.state):
                if self._client.stat_blob(self.ref, d.digest) is None:
                    gone[r.chain_id] = r
        return gone

    def _missing_entries(self, remote: _Remote) -> set[str]:
        """Digests of the index entries whose manifest the repository no longer has."""
        gone = set()
        for i, e in enumerate(remote.entries):
            if i != remote.ours:
                try:
                    self._client.resolve(self.ref.with_digest(e["digest"]))
                except NotFound:
                    gone.add(e["digest"])
        return gone

    def _reload(self) -> _Remote:
        """The cache as it is now: as ``open`` read it when the tag still names the same
        index (one HEAD: the index names its manifests by digest, so they are the same
        too), else read again."""
        opened, self._opened = self._opened, None  # once: a retry means the tag moved
        if opened is not None and opened.digest is not None:
            if self._tag_digest() == opened.digest:
                return opened
        return self._load()

    def _load(self) -> _Remote:
        """The cache as it is now in the registry. Registry failures raise; content that is
        not a cache gives ``problem`` and whatever was usable."""
        remote = _Remote()
        try:
            raw, announced = self._client.get_manifest(self.ref)
        except NotFound:
            return remote
        remote.digest = digest_of(raw)
        try:
            _read_index(remote, raw, announced, self._is_ours)
        except _CONTENT_ERRORS as err:
            remote.entries, remote.annotations, remote.ours = [], None, None
            remote.problem = _why(err)
            return remote
        if remote.ours is None:
            return remote
        entry = Descriptor.from_json(remote.entries[remote.ours], "index entry")
        try:
            remote.records = self._read_records(entry)
        except _CONTENT_ERRORS as err:
            remote.problem = f"manifest {entry.digest}: {_why(err)}"
        return remote

    def _read_records(self, entry: Descriptor) -> list[CacheRecord]:
        ref = self.ref.with_digest(entry.digest)
        raw, _ = self._client.get_manifest(ref)
        what = f"manifest {entry.digest}"
        if not mt.is_image(manifest_media_type(raw, entry.media_type, what)):
            raise _Corrupt(f"{what} is not an image manifest")
        obj = load_json(raw, what)
        annotations = obj.get("annotations")
        if not isinstance(annotations, dict) or annotations.get(A_CACHE_VERSION) != self._version:
            raise _Corrupt(f"{what} is not of cache version {self._version}")
        layers_json = obj.get("layers")
        if not isinstance(layers_json, list) or len(layers_json) % 2:
            raise _Corrupt(f"{what}: layers are not (blob, state) pairs")
        layers = [Descriptor.from_json(d, f"{what} layer {i}") for i, d in enumerate(layers_json)]
        config = Descriptor.from_json(obj.get("config"), f"{what} config")
        if config.size > CONFIG_LIMIT:
            raise _Corrupt(f"{what}: config over {CONFIG_LIMIT} bytes")
        with self._client.open_blob(self.ref, config.digest, config.size) as f:
            cfg = load_json(f.read(), f"{what} config")
        rootfs = cfg.get("rootfs") if isinstance(cfg, dict) else None
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if diff_ids != [d.digest for d in layers]:
            raise _Corrupt(f"{what}: config diff_ids do not list the layers")
        records: dict[str, CacheRecord] = {}
        for i in range(0, len(layers), 2):
            record = _record(layers[i], layers[i + 1], f"{what} layer {i}")
            records.pop(record.chain_id, None)  # twice: the later one is the more recent
            records[record.chain_id] = record
        return list(records.values())


def _read_index(
    remote: _Remote, raw: bytes, announced: str, is_ours: Callable[[dict[str, Any]], bool]
) -> None:
    what = "the cache reference"
    media_type = manifest_media_type(raw, announced or None, what)
    if not mt.is_index(media_type):
        raise _Corrupt(f"it holds a {media_type}, not an index")
    obj = load_json(raw, what)
    entries = obj.get("manifests")
    if not isinstance(entries, list):
        raise _Corrupt("the index has no manifests list")
    for i, e in enumerate(entries):
        Descriptor.from_json(e, f"index entry {i}")  # well-formed, or the index is corrupt
        if remote.ours is None and is_ours(e):
            remote.ours = i
    annotations = obj.get("annotations")
    if annotations is not None and not isinstance(annotations, dict):
        raise _Corrupt("the index annotations are not a map")
    remote.entries = list(entries)
    remote.annotations = annotations


def _record(blob: Descriptor, state: Descriptor, what: str) -> CacheRecord:
    if blob.media_type != mt.NYDUS_BLOB or state.media_type != STATE_MEDIA_TYPE:
        raise _Corrupt(f"{what}: media types {blob.media_type}, {state.media_type}")
    ba, sa = blob.annotations, state.annotations
    chain, source = ba.get(A_SOURCE_CHAINID), ba.get(A_SOURCE_DIGEST)
    if chain is None or source is None or sa.get(A_SOURCE_CHAINID) != chain:
        raise _Corrupt(f"{what}: no chain ID or source digest")
    try:
        check_digest(chain)
        check_digest(source)
    except InvalidReference as err:
        raise _Corrupt(f"{what}: {err}") from None
    if state.size > STATE_LIMIT:
        raise _Corrupt(f"{what}: state over {STATE_LIMIT} bytes")
    return CacheRecord(
        chain,
        source,
        _blob_descriptor(blob.digest, blob.size, source, chain),
        _state_descriptor(state.digest, state.size, chain),
    )


def _blob_descriptor(digest: str, size: int, source: str, chain: str) -> Descriptor:
    annotations = {
        A_BLOB: "true",
        A_UNCOMPRESSED: digest,
        A_SOURCE_DIGEST: source,
        A_SOURCE_CHAINID: chain,
    }
    raw = {"mediaType": mt.NYDUS_BLOB, "digest": digest, "size": size, "annotations": annotations}
    return Descriptor(mt.NYDUS_BLOB, digest, size, raw)


def _state_descriptor(digest: str, size: int, chain: str) -> Descriptor:
    raw = {
        "mediaType": STATE_MEDIA_TYPE,
        "digest": digest,
        "size": size,
        "annotations": {A_SOURCE_CHAINID: chain},
    }
    return Descriptor(STATE_MEDIA_TYPE, digest, size, raw)


def _cache_image(
    records: list[CacheRecord], platform: Platform, version: str
) -> tuple[bytes, bytes]:
    """Config and manifest bytes of a generation: a pullable image of (blob, state) pairs."""
    layers = [d for r in records for d in (r.blob, r.state)]
    history = []
    for r in records:
        history.append({"created_by": f"rconv build cache: nydus blob of {r.source_digest}"})
        history.append({"created_by": f"rconv build cache: layer state of {r.chain_id}"})
    config: dict[str, Any] = {"architecture": platform.architecture, "os": platform.os}
    if platform.variant:
        config["variant"] = platform.variant
    config["rootfs"] = {"type": "layers", "diff_ids": [d.digest for d in layers]}
    config["history"] = history
    config_bytes = dumps(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": Descriptor.of(mt.OCI_CONFIG, config_bytes).to_json(),
        "layers": [d.to_json() for d in layers],
        "annotations": {A_CACHE_VERSION: version},
    }
    return config_bytes, dumps(manifest)


def _bytes_opener(data: bytes) -> Callable[[], BinaryIO]:
    return lambda: io.BytesIO(data)


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def _why(err: BaseException) -> str:
    return str(err) or type(err).__name__
