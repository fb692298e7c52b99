"""The build cache's part in converting one image (issue 11; image.md §13.3).

A layer's record is keyed by the chain ID of the source layers up to it (rconv's layered
build makes a blob depend on every layer below) within a generation named by the hash of the
options that change bytes, so a record is only found where it gives exactly what a cold
conversion would. A hit supplies the final blob (in the cache repository) and the layer's
state (``rafs.layerstate``: its diff tree and stored chunks); the source layer is neither
downloaded nor parsed. Misses are recorded once their blob is complete and saved together at
the end. Without ``--build-cache`` the do-nothing ``NoLayerCache`` stands in.

Cache problems never break a conversion: they are one warning each, and a cold conversion.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

import isal

from convert.options import BUILDER
from rafs import layerstate
from rafs.options import RafsOptions
from registry import mediatype as mt
from registry.model import Descriptor, Image, Platform
from registry.reference import Reference

if TYPE_CHECKING:
    from convert.buildcache import BuildCache, CacheRecord
    from convert.finish import Finished
    from convert.layers import FinalLayer
    from registry.client import RegistryClient

CACHE_FORMAT = "rconv-v1"
# Version of the zran indexer's choices: 2 fills its input buffer whole, so the chunks'
# compressed offsets no longer follow how the registry's bytes arrived over the socket.
ZRAN_INDEX = 2
IMAGE_FORMAT = "rconv-image/2"  # the whole-image record: the bootstrap layer of a chain


def generation(rafs: RafsOptions, chunk_dict: str, oci_ref: bool = False) -> str:
    """The cache version annotation: rconv's format and a hash of what changes the bytes of
    a layer's blob and state (upstream tools see another version and leave it alone)."""
    key: dict[str, object] = {
        "fs_version": rafs.fs_version,
        "chunk_size": rafs.chunk_size,
        "compressor": rafs.compressor,
        "digester": rafs.digester,
        "chunk_dict": chunk_dict,
        "state": layerstate.FORMAT,
    }
    if oci_ref:  # zran records (a ref blob per layer): never mixed with native ones
        key["oci_ref"] = True
        key["zran_index"] = ZRAN_INDEX
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return f"{CACHE_FORMAT}-{digest[:16]}"


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI chain IDs: ChainID(L0) = DiffID(L0), ChainID(Ln) = sha256(ChainID(Ln-1) + " " +
    DiffID(Ln))."""
    out: list[str] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            text = f"{out[-1]} {diff_id}".encode()
            out.append("sha256:" + hashlib.sha256(text).hexdigest())
    return out


@dataclass
class Hit:
    record: CacheRecord
    state: bytes
    opener: Callable[[], BinaryIO]  # the blob, from the cache repository
    mount_from: Reference  # the cache repository


@dataclass
class WholeHit:
    """Every layer of the image and its bootstrap layer, as a conversion made them before."""

    layers: list[Hit]
    bootstrap: Hit
    finished: Finished
    counts: list[tuple[int, int]]  # (chunks stored, chunks deduplicated) per layer


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    bytes_not_pulled: int = 0  # compressed source bytes the hits did not download


class NoLayerCache:
    """No build cache: every layer is converted, nothing is recorded."""

    recording = False
    stats = CacheStats()

    def hits(self) -> dict[int, Hit]:
        return {}

    def whole_image(self, prefetch: tuple[bytes, ...]) -> WholeHit | None:
        return None

    def record_image(self, prefetch, finished, counts) -> None:
        pass

    def record(self, index: int, final: FinalLayer, snap: layerstate.TreeSnapshot,
               pushed: Descriptor | None = None) -> None:  # fmt: skip
        raise AssertionError("nothing is recorded without a build cache")

    def unusable(self, index: int, why: str) -> None:
        raise AssertionError("there are no hits without a build cache")

    def save(self, mount_from: Reference | None) -> None:
        pass


@dataclass
class LayerCache:
    """The build cache for one image's layers."""

    cache: BuildCache
    chains: list[str]
    sources: list[Descriptor]
    warn: Callable[[str], None]
    recording = True
    stats: CacheStats = field(default_factory=CacheStats)
    _records: dict[int, tuple[FinalLayer, layerstate.TreeSnapshot, Descriptor | None]] = field(
        default_factory=dict
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _image: tuple[tuple[bytes, ...], Finished, bytes] | None = None

    @classmethod
    def open(
        cls,
        ref: str | None,
        image: Image,
        platform: Platform | None,
        version: str,
        max_records: int,
        client: RegistryClient,
        warn: Callable[[str], None],
    ) -> LayerCache | NoLayerCache:
        if ref is None:
            return NoLayerCache()
        from convert.buildcache import BuildCache

        rootfs = image.config.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        layers = image.layer_descriptors
        if not isinstance(diff_ids, list) or len(diff_ids) != len(layers):
            warn(f"build cache: {image.name} has no diff_id per layer; converting without it")
            return NoLayerCache()
        plat = platform or image.platform or Platform("linux", "amd64")
        cache = BuildCache.open(ref, client, plat, version, max_records, warn)
        return cls(cache, chain_ids([str(d) for d in diff_ids]), layers, warn)

    def hits(self) -> dict[int, Hit]:
        """The layers whose record has its blob and state at hand, by index. Records are
        looked up in layer order (the cache's LRU order follows it); their blobs and states
        are checked and fetched concurrently, a round trip or two each."""
        records = [self.cache.get(chain) for chain in self.chains]
        cache = self.cache

        def fetch(record: CacheRecord | None) -> bytes | None:
            if record is None or not cache.blob_present(record):
                return None
            return cache.read_state(record)

        found = [r for r in records if r is not None]
        if found:
            with ThreadPoolExecutor(min(8, len(found)), thread_name_prefix="rconv-cache") as pool:
                states = list(pool.map(fetch, records))
        else:
            states = [None] * len(records)
        out: dict[int, Hit] = {}
        for index, (record, state) in enumerate(zip(records, states, strict=True)):
            if record is None or state is None:
                self.stats.misses += 1
                continue
            self.stats.hits += 1
            self.stats.bytes_not_pulled += self.sources[index].size
            out[index] = self._hit(record, state)
        return out

    def whole_image(self, prefetch: tuple[bytes, ...]) -> WholeHit | None:
        """The whole converted image when every layer and its bootstrap are in the cache:
        nothing to decode, nothing to write. None (and nothing counted) otherwise."""
        records = [self.cache.get(chain) for chain in self.chains]
        image = self.cache.get(self._image_key(prefetch))
        if image is None or any(r is None for r in records):
            return None
        found = [r for r in records if r is not None]
        if not all(self.cache.blob_present(r) for r in (*found, image)):
            return None
        from convert.finish import Finished  # finish's users import this module first

        state = self.cache.read_state(image)
        try:
            body = json.loads(state or b"")
            if body.get("format") != IMAGE_FORMAT or len(body["layers"]) != len(found):
                raise ValueError("another record")
            finished = Finished(None, image.blob.digest, image.blob.size, body["diff_id"],
                                body["bootstrap_size"], tuple(body["dict_blobs"]))  # fmt: skip
            counts = [(int(a), int(b)) for a, b in body["layers"]]
        except (ValueError, KeyError, TypeError) as exc:
            self.warn(f"build cache {self.cache.ref}: image record unusable ({exc})")
            return None
        self.stats.hits += len(found)
        self.stats.bytes_not_pulled += sum(d.size for d in self.sources)
        return WholeHit([self._hit(r, b"") for r in found], self._hit(image, b""), finished,
                        counts)  # fmt: skip

    def record_image(
        self, prefetch: tuple[bytes, ...], finished: Finished, counts: list[tuple[int, int]]
    ) -> None:
        """Keep the bootstrap layer of this conversion, saved after the layer records."""
        body = {
            "format": IMAGE_FORMAT,
            "diff_id": finished.diff_id,
            "bootstrap_size": finished.bootstrap_size,
            "dict_blobs": list(finished.dict_blobs),
            "layers": [list(c) for c in counts],
        }
        self._image = (prefetch, finished, json.dumps(body, sort_keys=True).encode())

    def _image_key(self, prefetch: tuple[bytes, ...]) -> str:
        """The whole-image record's key: the top layer's chain, the prefetch patterns, the
        bootstrap writer (rconv's version) and its compressor (the isal release), which the
        layer records do not cover."""
        prefetched = [p.hex() for p in prefetch]
        text = json.dumps([IMAGE_FORMAT, self.chains[-1], prefetched, BUILDER, isal.__version__])
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    def _hit(self, record: CacheRecord, state: bytes) -> Hit:
        cache = self.cache

        def opener() -> BinaryIO:
            return cache.open_blob(record)

        return Hit(record, state, opener, cache.ref)

    def unusable(self, index: int, why: str) -> None:
        """A hit whose state turned out unusable: one warning, counted as a miss after all
        (its source layer is downloaded and converted)."""
        self.warn(f"build cache: {why}")
        self.stats.hits -= 1
        self.stats.misses += 1
        self.stats.bytes_not_pulled -= self.sources[index].size

    def record(
        self,
        index: int,
        final: FinalLayer,
        snap: layerstate.TreeSnapshot,
        pushed: Descriptor | None = None,
    ) -> None:
        """Keep what a layer converted cold leaves (its tree taken before it was applied);
        encoded by ``save``, once every blob is complete and its id known. ``pushed`` is the
        layer's blob in the image when it is not its data blob (a zran ref blob)."""
        with self._lock:
            self._records[index] = (final, snap, pushed)

    def save(self, mount_from: Reference | None) -> None:
        """Write the new records, in layer order; ``mount_from`` is where their blobs were
        pushed (the target repository), so that the cache can mount rather than upload."""
        for index in sorted(self._records):
            final, snap, pushed = self._records[index]
            state = layerstate.encode(final.info, final.stored, snap, final.chunks_deduped)
            blob = pushed or blob_descriptor(
                "sha256:" + final.info.blob_id, final.info.compressed_size
            )
            self.cache.put(
                self.chains[index], self.sources[index].digest, blob, final.open, state,
                mount_from,
            )  # fmt: skip
        if self._image is not None:
            prefetch, finished, body = self._image
            path = finished.layer_path
            assert path is not None  # recorded by a conversion that wrote it
            self.cache.put(
                self._image_key(prefetch), self.sources[-1].digest,
                blob_descriptor(finished.digest, finished.size), lambda: open(path, "rb"),
                body, mount_from,
            )  # fmt: skip
        self.cache.save()


def blob_descriptor(digest: str, size: int) -> Descriptor:
    return Descriptor(mt.NYDUS_BLOB, digest, size)
