"""The build cache store (convert.buildcache) against a real registry (distribution 2.8).

Records are put, saved and read back through fresh ``BuildCache`` objects; the cache image is
inspected as the registry holds it (index entries, manifest layer order) and pulled with
rconv and skopeo. Damage is done the way it happens in practice: a tag overwritten by an
image, a manifest written by something else, blobs deleted through the registry API.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import threading
import time
import uuid

import httpx
import pytest

from convert.buildcache import (
    GENERATION_PREFIX,
    MAX_GENERATIONS,
    STATE_MEDIA_TYPE,
    BuildCache,
    CacheRecord,
)
from convert.nydus import A_BLOB, A_CACHE_VERSION, A_SOURCE_CHAINID, A_SOURCE_DIGEST
from registry import mediatype as mt
from registry.build import Blob, build_image, dumps
from registry.errors import NotFound
from registry.medium import open_image, write_image
from registry.model import Descriptor, Image, Platform
from registry.reference import parse_reference
from tests.registry.images import random_image

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64", "v8")
V1 = "rconv-v1-0123456789abcdef"
V2 = "rconv-v1-fedcba9876543210"


class Warnings(list):
    def __call__(self, message: str) -> None:
        self.append(message)


def sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


class Layer:
    """What the pipeline hands the cache for one converted layer."""

    def __init__(self, name: str) -> None:
        rng = random.Random(name)
        self.chain_id = sha(f"chain {name}")
        self.source = sha(f"source {name}")
        self.data = rng.randbytes(rng.randrange(1000, 5000))
        self.state = rng.randbytes(rng.randrange(100, 800))
        self.blob = Descriptor(mt.NYDUS_BLOB, sha_bytes(self.data), len(self.data))

    def opener(self):
        return io.BytesIO(self.data)

    def put(self, cache: BuildCache, mount_from=None) -> None:
        cache.put(self.chain_id, self.source, self.blob, self.opener, self.state, mount_from)


def sha_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def ref(registry_server) -> str:
    return registry_server.ref(f"cache/{uuid.uuid4().hex[:10]}:nydus-cache")


@pytest.fixture
def client(registry_server):
    with registry_server.client() as c:
        yield c


def open_cache(ref, client, platform=AMD64, version=V1, **kw) -> tuple[BuildCache, Warnings]:
    warn = Warnings()
    return BuildCache.open(ref, client, platform, version, warn=warn, **kw), warn


def saved(ref, client, *layers: Layer, **kw) -> BuildCache:
    cache, warn = open_cache(ref, client, **kw)
    for layer in layers:
        layer.put(cache)
    cache.save()
    assert warn == []
    return cache


def index_of(ref, client) -> dict:
    raw, _ = client.get_manifest(parse_reference(ref))
    return json.loads(raw)


def chains_of(ref, client, platform=AMD64, version=V1) -> list[str]:
    """Chain IDs of a generation's manifest, in layer order (least recently used first)."""
    for e in index_of(ref, client)["manifests"]:
        plat = Platform.from_json(e["platform"])
        if plat.matches(platform) and e.get("annotations", {}).get(A_CACHE_VERSION) == version:
            raw, _ = client.get_manifest(parse_reference(ref).with_digest(e["digest"]))
            layers = json.loads(raw)["layers"]
            return [d["annotations"][A_SOURCE_CHAINID] for d in layers[::2]]
    raise AssertionError(f"no {platform} {version} entry")


def delete_blob(registry_server, ref: str, digest: str) -> None:
    repo = parse_reference(ref).repository
    resp = httpx.delete(f"http://{registry_server.host}/v2/{repo}/blobs/{digest}")
    assert resp.status_code == 202, resp.text


# ------------------------------------------------------------------ reading and writing


def test_missing_cache_is_empty_and_silent(ref, client):
    cache, warn = open_cache(ref, client)
    assert cache.get(Layer("a").chain_id) is None
    cache.save()  # nothing to record: nothing written
    assert warn == []
    with pytest.raises(NotFound):
        client.get_manifest(parse_reference(ref))


def test_put_save_reopen_hits(ref, client):
    layers = [Layer(n) for n in "abc"]
    saved(ref, client, *layers)
    cache, warn = open_cache(ref, client)
    assert cache.ref == parse_reference(ref)
    for layer in layers:
        record = cache.get(layer.chain_id)
        assert isinstance(record, CacheRecord)
        assert record.chain_id == layer.chain_id and record.source_digest == layer.source
        assert record.blob == layer.blob
        assert record.blob.annotations == {
            A_BLOB: "true",
            "containerd.io/uncompressed": layer.blob.digest,
            A_SOURCE_DIGEST: layer.source,
            A_SOURCE_CHAINID: layer.chain_id,
        }
        assert record.state == Descriptor(
            STATE_MEDIA_TYPE, sha_bytes(layer.state), len(layer.state)
        )
        assert record.state.annotations == {A_SOURCE_CHAINID: layer.chain_id}
        assert cache.blob_present(record)
        assert cache.read_state(record) == layer.state
        with cache.open_blob(record) as f:
            assert f.read() == layer.data
    assert cache.get(Layer("d").chain_id) is None
    assert warn == []
    assert chains_of(ref, client) == [layer.chain_id for layer in layers]


def test_put_record_is_usable_before_save(ref, client):
    cache, warn = open_cache(ref, client)
    layer = Layer("a")
    layer.put(cache)
    record = cache.get(layer.chain_id)
    assert record is not None and cache.blob_present(record)
    assert cache.read_state(record) == layer.state
    with cache.open_blob(record) as f:
        assert f.read() == layer.data
    assert warn == []


def test_blob_is_mounted_from_the_target_repository(registry_server, ref, client):
    layer = Layer("mounted")
    target = parse_reference(registry_server.ref(f"target/{uuid.uuid4().hex[:8]}:v1"))
    client.upload_blob(target, layer.blob.digest, layer.blob.size, layer.opener)

    def no_upload():
        raise AssertionError("the blob is in the target repository: mount it")

    cache, warn = open_cache(ref, client)
    cache.put(layer.chain_id, layer.source, layer.blob, no_upload, layer.state, target)
    cache.save()
    assert warn == []
    assert client.stat_blob(cache.ref, layer.blob.digest) == layer.blob.size


def test_warm_save_without_news_writes_nothing(ref, client):
    a, b, c = Layer("a"), Layer("b"), Layer("c")
    saved(ref, client, a, b, c)
    before = client.resolve(parse_reference(ref)).digest
    cache, warn = open_cache(ref, client)
    assert cache.get(c.chain_id) is not None  # already the most recently used
    cache.save()
    assert client.resolve(parse_reference(ref)).digest == before
    cache, warn = open_cache(ref, client)
    assert cache.get(a.chain_id) is not None  # moves to the end
    cache.save()
    assert warn == []
    assert chains_of(ref, client) == [b.chain_id, c.chain_id, a.chain_id]


# ------------------------------------------------------------------ generations and platforms


def upstream_cache_entry(client, ref) -> dict:
    """What acceld writes for its "v1" generation: an empty config, no entry annotation."""
    config = b"{}"
    blob = Layer("upstream")
    img = build_image(
        config,
        [Blob(mt.NYDUS_BLOB, blob.blob.digest, blob.blob.size, blob.opener,
              {A_BLOB: "true", A_SOURCE_DIGEST: blob.source})],
        annotations={A_CACHE_VERSION: "v1"},
    )  # fmt: skip
    write_image(img, f"{ref.rsplit(':', 1)[0]}@{img.digest}", client=client)
    return {"mediaType": mt.OCI_MANIFEST, "digest": img.digest, "size": img.size,
            "platform": AMD64.to_json()}  # fmt: skip


def test_generations_and_platforms_are_separate_and_kept(ref, client):
    upstream = upstream_cache_entry(client, ref)
    client.put_manifest(
        parse_reference(ref),
        dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [upstream]}),
        mt.OCI_INDEX,
    )
    a, b, c = Layer("a"), Layer("b"), Layer("c")
    saved(ref, client, a)  # upstream's v1 manifest is another generation: no warning
    cache, warn = open_cache(ref, client, version=V2)
    assert cache.get(a.chain_id) is None
    b.put(cache)
    cache.save()
    cache, warn2 = open_cache(ref, client, platform=Platform("linux", "arm64"))
    assert cache.get(a.chain_id) is None
    c.put(cache)
    cache.save()
    assert warn == warn2 == []

    entries = index_of(ref, client)["manifests"]
    assert entries[0] == upstream
    assert len(entries) == 4
    for platform, version, layer in ((AMD64, V1, a), (AMD64, V2, b), (ARM64, V1, c)):
        cache, warn = open_cache(ref, client, platform=platform, version=version)
        assert [x.chain_id for x in (a, b, c) if cache.get(x.chain_id)] == [layer.chain_id]
        assert warn == []
        assert chains_of(ref, client, platform, version) == [layer.chain_id]


def test_older_generations_leave_least_recently_saved_first(ref, client):
    """An option change or a new record format starts a generation; rconv keeps the last
    MAX_GENERATIONS of a platform, ordered by their last save, so the old ones stop pinning
    their blobs. Other platforms and other tools' entries are never dropped."""
    upstream = upstream_cache_entry(client, ref)
    client.put_manifest(
        parse_reference(ref),
        dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [upstream]}),
        mt.OCI_INDEX,
    )
    arm = Layer("arm")
    saved(ref, client, arm, platform=ARM64)
    versions = [f"rconv-v{n}-{n:016x}" for n in range(MAX_GENERATIONS + 2)]
    layers = {v: Layer(v) for v in versions}
    for v in versions[:MAX_GENERATIONS]:
        saved(ref, client, layers[v], version=v)
    # the first generation is used again: now the most recently saved
    cache, warn = open_cache(ref, client, version=versions[0])
    assert cache.get(layers[versions[0]].chain_id) is not None
    Layer("again").put(cache)
    cache.save()
    for v in versions[MAX_GENERATIONS:]:
        saved(ref, client, layers[v], version=v)

    entries = index_of(ref, client)["manifests"]
    kept = [e["annotations"][A_CACHE_VERSION] for e in entries[2:]]
    assert entries[:2] == [upstream, entries[1]]
    assert Platform.from_json(entries[1]["platform"]).matches(ARM64)
    saves = [*versions[1:MAX_GENERATIONS], versions[0], *versions[MAX_GENERATIONS:]]
    assert kept == saves[-MAX_GENERATIONS:]  # e.g. v3, v0, v4, v5: v1 and v2 are gone
    for v in versions:
        cache, warn = open_cache(ref, client, version=v)
        assert (cache.get(layers[v].chain_id) is not None) == (v in kept), v
        assert warn == []  # a dropped generation is simply empty
    cache, warn = open_cache(ref, client, platform=ARM64)
    assert cache.get(arm.chain_id) is not None


def test_rconv_generations_carry_the_prefix():
    from convert.cachestage import generation
    from rafs.options import RafsOptions

    assert generation(RafsOptions(), "").startswith(GENERATION_PREFIX)
    assert generation(RafsOptions(), "", oci_ref=True).startswith(GENERATION_PREFIX)


# ------------------------------------------------------------------ damage


def assert_repaired_with(layer: Layer, cache: BuildCache, warn: list[str], ref, client) -> None:
    """``layer`` recorded in a cache that opened with one warning: saving adds no other, and
    the cache then opens without a warning, holding it."""
    layer.put(cache)
    cache.save()
    assert len(warn) == 1
    cache, warn = open_cache(ref, client)
    assert warn == [] and cache.get(layer.chain_id) is not None


def test_tag_holding_an_image_is_ignored_then_repaired(ref, client):
    write_image(random_image(7), ref, client=client)
    cache, warn = open_cache(ref, client)
    assert len(warn) == 1 and ref in warn[0] and "not an index" in warn[0]
    a = Layer("a")
    assert cache.get(a.chain_id) is None
    assert_repaired_with(a, cache, warn, ref, client)


def test_legacy_cache_is_ignored_then_repaired_with_no_records(ref, client):
    """nydusify <= 2.1 wrote one manifest (image.md §13.2): foreign to this store."""
    legacy = build_image(
        {}, [], annotations={"containerd.io/snapshot/nydus-cache": "v1"}, name="legacy"
    )
    write_image(legacy, ref, client=client)
    cache, warn = open_cache(ref, client)
    assert len(warn) == 1 and ref in warn[0]
    cache.save()  # rewritten even with nothing to record
    assert len(warn) == 1
    cache, warn = open_cache(ref, client)
    assert warn == []
    assert chains_of(ref, client) == []


@pytest.mark.parametrize(
    "damage", ["config", "media-types", "annotations", "diff-ids", "odd-layers", "version"]
)
def test_corrupt_generation_manifest(ref, client, damage):
    """Our generation's entry points at a manifest that is not what this store writes."""
    a, b = Layer("a"), Layer("b")
    saved(ref, client, a)
    index = index_of(ref, client)
    entry = index["manifests"][0]
    raw, _ = client.get_manifest(parse_reference(ref).with_digest(entry["digest"]))
    manifest = json.loads(raw)
    cfg_ref = parse_reference(ref).with_digest(manifest["config"]["digest"])
    with client.open_blob(cfg_ref, cfg_ref.digest, manifest["config"]["size"]) as f:
        config = json.loads(f.read())
    if damage == "config":
        config = None
        cfg_bytes = b"\x00 garbage, not JSON"
    elif damage == "media-types":
        manifest["layers"][1]["mediaType"] = mt.OCI_LAYER_GZIP
    elif damage == "annotations":
        del manifest["layers"][0]["annotations"][A_SOURCE_CHAINID]
    elif damage == "version":
        manifest["annotations"][A_CACHE_VERSION] = V2  # the index entry says V1
    elif damage == "diff-ids":
        config["rootfs"]["diff_ids"].reverse()
    else:
        manifest["layers"].pop()
        config["rootfs"]["diff_ids"].pop()
    if config is not None:
        cfg_bytes = dumps(config)
    client.upload_blob(cfg_ref, sha_bytes(cfg_bytes), len(cfg_bytes), lambda: io.BytesIO(cfg_bytes))
    manifest["config"] = Descriptor.of(mt.OCI_CONFIG, cfg_bytes).to_json()
    m = dumps(manifest)
    client.put_manifest(parse_reference(ref).with_digest(sha_bytes(m)), m, mt.OCI_MANIFEST)
    entry.update(digest=sha_bytes(m), size=len(m))
    client.put_manifest(parse_reference(ref), dumps(index), mt.OCI_INDEX)

    cache, warn = open_cache(ref, client)
    assert len(warn) == 1 and ref in warn[0], warn
    assert cache.get(a.chain_id) is None
    assert_repaired_with(b, cache, warn, ref, client)
    assert chains_of(ref, client) == [b.chain_id]


def test_deleted_state_is_a_miss_and_dropped(registry_server, ref, client):
    a, b = Layer("a"), Layer("b")
    saved(ref, client, a, b)
    cache, _ = open_cache(ref, client)
    delete_blob(registry_server, ref, cache.get(a.chain_id).state.digest)  # type: ignore[union-attr]

    cache, warn = open_cache(ref, client)
    record = cache.get(a.chain_id)
    assert record is not None and cache.blob_present(record)
    assert cache.read_state(record) is None
    assert len(warn) == 1 and "unreadable" in warn[0]
    assert cache.get(a.chain_id) is None  # dropped for the rest of the conversion
    assert cache.get(b.chain_id) is not None
    cache.save()
    assert len(warn) == 1
    assert chains_of(ref, client) == [b.chain_id]


def test_deleted_blob_is_a_miss_and_dropped(registry_server, ref, client):
    a, b = Layer("a"), Layer("b")
    saved(ref, client, a, b)
    delete_blob(registry_server, ref, a.blob.digest)
    cache, warn = open_cache(ref, client)
    record = cache.get(a.chain_id)
    assert record is not None and not cache.blob_present(record)
    assert cache.get(a.chain_id) is None
    cache.save()
    assert warn == []
    assert chains_of(ref, client) == [b.chain_id]


def test_deleted_blob_nobody_looked_at(registry_server, ref, client):
    """A record whose blob is gone would make the manifest push fail: save finds it."""
    a, b, c = Layer("a"), Layer("b"), Layer("c")
    saved(ref, client, a, b)
    delete_blob(registry_server, ref, a.blob.digest)
    cache, warn = open_cache(ref, client)
    c.put(cache)
    cache.save()
    assert warn == []
    assert chains_of(ref, client) == [b.chain_id, c.chain_id]


def test_deleted_manifest_of_another_entry(registry_server, ref, client):
    """An entry of another platform whose manifest was deleted would make the index push
    fail: save leaves it out."""
    a, b = Layer("a"), Layer("b")
    saved(ref, client, a, platform=ARM64)
    saved(ref, client, b)
    arm = next(
        e for e in index_of(ref, client)["manifests"] if e["platform"]["architecture"] == "arm64"
    )
    repo = parse_reference(ref).repository
    resp = httpx.delete(f"http://{registry_server.host}/v2/{repo}/manifests/{arm['digest']}")
    assert resp.status_code == 202, resp.text
    c = Layer("c")
    saved(ref, client, c)
    assert [e["platform"]["architecture"] for e in index_of(ref, client)["manifests"]] == ["amd64"]
    assert chains_of(ref, client) == [b.chain_id, c.chain_id]


def test_failed_upload_loses_that_record_only(ref, client):
    a, b = Layer("a"), Layer("b")

    def broken():
        raise OSError("the converted blob vanished")

    cache, warn = open_cache(ref, client)
    a.put(cache)
    cache.put(b.chain_id, b.source, b.blob, broken, b.state)
    cache.save()
    assert len(warn) == 1 and "1 record not saved" in warn[0] and "vanished" in warn[0]
    assert chains_of(ref, client) == [a.chain_id]


def test_unreachable_registry_never_raises(registry_server):
    from tests.integration.conftest import free_port

    with registry_server.client(retries=0, timeout=2) as client:
        ref = f"127.0.0.1:{free_port()}/cache/x:nydus-cache"
        cache, warn = open_cache(ref, client)
        assert len(warn) == 1 and "unreadable" in warn[0]
        Layer("a").put(cache)
        cache.save()
        assert len(warn) == 2 and "not saved" in warn[1], warn


# ------------------------------------------------------------------ eviction and concurrency


def test_least_recently_used_records_leave_first(ref, client):
    a, b, c, d, e = (Layer(n) for n in "abcde")
    saved(ref, client, a, b, c, max_records=3)
    cache, warn = open_cache(ref, client, max_records=3)
    assert cache.get(a.chain_id) is not None  # a is now more recent than b and c
    d.put(cache)
    cache.save()
    assert chains_of(ref, client) == [c.chain_id, a.chain_id, d.chain_id]
    saved(ref, client, e, max_records=3)
    assert chains_of(ref, client) == [a.chain_id, d.chain_id, e.chain_id]
    cache, warn = open_cache(ref, client, max_records=3)
    assert cache.get(b.chain_id) is None and cache.get(c.chain_id) is None
    assert warn == []


def test_capacity_is_at_most_200(ref, client):
    layers = [Layer(f"l{i}") for i in range(205)]
    cache = saved(ref, client, *layers, max_records=1000)
    assert chains_of(ref, client) == [x.chain_id for x in layers[5:]]
    assert cache.get(layers[4].chain_id) is None


def test_two_writers_one_after_the_other(ref, client):
    a, b, c, d, e = (Layer(n) for n in "abcde")
    saved(ref, client, a)
    one, warn1 = open_cache(ref, client)
    two, warn2 = open_cache(ref, client)
    b.put(one)
    c.put(one)
    assert two.get(a.chain_id) is not None
    d.put(two)
    e.put(two)
    one.save()
    two.save()  # read again, merged: one's records stay
    assert warn1 == warn2 == []
    assert chains_of(ref, client) == [x.chain_id for x in (b, c, a, d, e)]


def test_writers_at_the_same_time(registry_server, ref):
    writers = 4
    layers = [[Layer(f"w{w}-{i}") for i in range(3)] for w in range(writers)]
    barrier = threading.Barrier(writers)
    warnings: list[str] = []

    def write(mine: list[Layer]) -> None:
        with registry_server.client() as client:
            cache, warn = open_cache(ref, client)
            for layer in mine:
                layer.put(cache)
            barrier.wait()
            cache.save()
            warnings.extend(warn)

    threads = [threading.Thread(target=write, args=(mine,)) for mine in layers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert warnings == []
    with registry_server.client() as client:
        got = chains_of(ref, client)
    assert sorted(got) == sorted(x.chain_id for mine in layers for x in mine)


def test_save_reads_the_cache_again_only_when_the_tag_moved(registry_server):
    """Save merges with the cache as it is: as ``open`` read it while the tag names the same
    index (one HEAD instead of reading index, manifest and config again), read anew when
    another writer moved it (whose records are then kept)."""
    from tests.faults.proxy import FaultProxy

    port = int(registry_server.host.rsplit(":", 1)[1])
    with FaultProxy(port) as proxy, registry_server.client() as client:
        ref = f"{proxy.host}/cache/{uuid.uuid4().hex[:10]}:nydus-cache"
        a, b, c, d = Layer("ra"), Layer("rb"), Layer("rc"), Layer("rd")
        saved(ref, client, a)
        cache, warn = open_cache(ref, client)
        proxy.clear()
        b.put(cache)
        cache.save()
        gets = [p for m, p, _ in proxy.log if m == "GET" and "/manifests/" in p]
        assert gets == [] and warn == []
        assert chains_of(ref, client) == [a.chain_id, b.chain_id]
        stale, warn = open_cache(ref, client)
        d.put(stale)
        saved(ref, client, c)  # another writer moves the tag
        proxy.clear()
        stale.save()
        assert [p for m, p, _ in proxy.log if m == "GET" and p.endswith("/manifests/nydus-cache")]
        assert chains_of(ref, client) == [x.chain_id for x in (a, b, c, d)] and warn == []


def test_settle_wait_grows_with_the_registry_latency(registry_server, monkeypatch):
    """After pushing the index, save waits before checking that it stayed: at least
    SETTLE_ROUNDS times its own check-and-push time, which measures the gap another writer
    has between its check and its push through the same registry."""
    from convert import buildcache
    from tests.faults.proxy import Fault, FaultProxy

    waits: list[float] = []

    class Clock:  # the module's ``time``, sleeps recorded instead of slept
        monotonic = staticmethod(time.monotonic)

        @staticmethod
        def sleep(seconds: float) -> None:
            waits.append(seconds)

    monkeypatch.setattr(buildcache, "time", Clock)
    port = int(registry_server.host.rsplit(":", 1)[1])
    with FaultProxy(port) as proxy, registry_server.client() as client:
        fast = f"{proxy.host}/cache/{uuid.uuid4().hex[:10]}:nydus-cache"
        saved(fast, client, Layer("f"))
        assert waits and buildcache.SETTLE <= waits[-1] < 1.0
        proxy.add(Fault.slow(0.4), "PUT", r"/manifests/nydus-cache$")
        slow = f"{proxy.host}/cache/{uuid.uuid4().hex[:10]}:nydus-cache"
        saved(slow, client, Layer("s"))
        assert waits[-1] >= buildcache.SETTLE_ROUNDS * 0.4


# ------------------------------------------------------------------ a pullable image


def test_cache_image_is_pullable(ref, client, skopeo, tmp_path):
    a, b = Layer("a"), Layer("b")
    saved(ref, client, a, b)
    saved(ref, client, Layer("c"), platform=ARM64)
    img = open_image(ref, client=client, platform=AMD64)
    assert isinstance(img, Image)
    assert img.config["rootfs"]["diff_ids"] == [d.digest for d in img.layer_descriptors]
    assert img.config["architecture"] == "amd64" and img.config["os"] == "linux"
    assert [d.media_type for d in img.layer_descriptors] == [mt.NYDUS_BLOB, STATE_MEDIA_TYPE] * 2
    assert img.annotations == {A_CACHE_VERSION: V1}
    arm = open_image(ref, client=client, platform=ARM64)
    assert isinstance(arm, Image) and arm.config["variant"] == "v8"

    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
    assert raw == client.get_manifest(parse_reference(ref))[0]
    skopeo("copy", "--all", "--preserve-digests", "--src-tls-verify=false", f"docker://{ref}",
           f"oci:{tmp_path}/cache:t")  # fmt: skip
    copied = open_image(f"oci:{tmp_path}/cache:t", platform=AMD64)
    assert isinstance(copied, Image) and copied.digest == img.digest
    with copied.open_blob(copied.layer_descriptors[0]) as f:
        assert f.read() == a.data
