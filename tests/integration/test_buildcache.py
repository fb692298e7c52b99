"""`rconv convert --build-cache` end to end against a real registry (issue 11).

The contract: a warm conversion gives exactly the image a cold one gives (same manifest
digest), without downloading the source layers it finds in the cache; only changed layers (and
the layers above them: a record is keyed by the chain of layers up to it) are converted.
"""

from __future__ import annotations

import tarfile
import threading
from dataclasses import replace

import pytest

from convert.options import ConvertOptions
from convert.pipeline import convert
from convert.progress import Silent
from rafs.options import RafsOptions
from registry.client import RegistryClient
from registry.medium import open_image
from tests.cli import rconv
from tests.integration.nydus import layer_tar, make_image, push

pytestmark = pytest.mark.integration

REG, LNK = tarfile.REGTYPE, tarfile.LNKTYPE
BIG = bytes(range(256)) * 5000  # more than one chunk of 1 MiB


class CountingClient(RegistryClient):
    """Records the digest of every blob opened for reading."""

    def __init__(self, options) -> None:
        super().__init__(options)
        self.opened: list[str] = []
        self._lock = threading.Lock()

    def open_blob(self, ref, digest: str, size: int | None):
        with self._lock:
            self.opened.append(digest)
        return super().open_blob(ref, digest, size)


def layers(top: bytes = b"v1") -> list[bytes]:
    base = layer_tar([("etc", tarfile.DIRTYPE, b""), ("etc/os", REG, b"debian\n"),
                      ("big", REG, BIG), ("big-link", LNK, "big")])  # fmt: skip
    mid = layer_tar([("app", tarfile.DIRTYPE, b""), ("app/copy", REG, BIG),
                     ("etc/.wh.os", REG, b"")])  # fmt: skip
    upper = layer_tar([("app/version", REG, top), ("app/big2", REG, BIG + top)])
    return [base, mid, upper]


def run(registry_server, source: str, target: str, cache: str | None, prefetch=(b"/",), **rafs):
    client = CountingClient(registry_server.options())
    opts = ConvertOptions(source=source, target=registry_server.ref(target), build_cache=cache,
                          rafs=RafsOptions(**rafs), prefetch=prefetch)  # fmt: skip
    report = convert(opts, client, Silent())
    return report, client.opened


def test_warm_equals_cold_and_pulls_nothing_it_has(registry_server):
    client = registry_server.client()
    image = make_image(layers())
    source = registry_server.ref("cached/app:1")
    push(image, source, client)
    cache = registry_server.ref("cached/app:nydus-cache")
    sources = [d.digest for d in image.layer_descriptors]

    plain, _ = run(registry_server, source, "cached/app:plain", None)
    cold, opened = run(registry_server, source, "cached/app:cold", cache)
    assert cold.target_digest == plain.target_digest  # the cache changes no byte
    assert cold.platforms[0].cache == {"hits": 0, "misses": 3, "bytes_not_pulled": 0}
    assert set(sources) <= set(opened)

    warm, opened = run(registry_server, source, "cached/app:warm", cache)
    assert warm.target_digest == cold.target_digest
    assert warm.platforms[0].cache["hits"] == 3 and warm.platforms[0].cache["misses"] == 0
    assert warm.platforms[0].cache["bytes_not_pulled"] == sum(d.size for d in
                                                              image.layer_descriptors)  # fmt: skip
    assert not set(sources) & set(opened)  # no source layer was downloaded
    assert all(layer.cached for layer in warm.platforms[0].layers)
    # Other prefetch patterns: another bootstrap, so every layer from its record, and the
    # bootstrap written anew; still the cold result.
    plain_etc, _ = run(registry_server, source, "cached/app:plain-etc", None, (b"/etc",))
    warm_etc, opened = run(registry_server, source, "cached/app:warm-etc", cache, (b"/etc",))
    assert warm_etc.platforms[0].cache["hits"] == 3 and not set(sources) & set(opened)
    assert warm_etc.target_digest == plain_etc.target_digest != warm.target_digest
    checked = rconv("check", "--target", registry_server.ref("cached/app:warm"),
                    "--source", source, check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("fs_version", [6, 5])
def test_a_changed_top_layer_is_the_only_miss(registry_server, fs_version):
    client = registry_server.client()
    repo = f"cached/top{fs_version}"
    cache = registry_server.ref(f"{repo}:nydus-cache")
    first = registry_server.ref(f"{repo}:1")
    push(make_image(layers(b"v1")), first, client)
    run(registry_server, first, f"{repo}:1-nydus", cache, fs_version=fs_version)

    changed = make_image(layers(b"v2"))
    second = registry_server.ref(f"{repo}:2")
    push(changed, second, client)
    plain, _ = run(registry_server, second, f"{repo}:2-plain", None, fs_version=fs_version)
    warm, opened = run(registry_server, second, f"{repo}:2-nydus", cache, fs_version=fs_version)
    assert warm.platforms[0].cache["hits"] == 2 and warm.platforms[0].cache["misses"] == 1
    descs = changed.layer_descriptors
    assert descs[2].digest in opened
    assert descs[0].digest not in opened and descs[1].digest not in opened
    assert warm.target_digest == plain.target_digest


def test_other_byte_changing_options_are_another_generation(registry_server):
    client = registry_server.client()
    cache = registry_server.ref("cached/opts:nydus-cache")
    source = registry_server.ref("cached/opts:1")
    push(make_image(layers()), source, client)
    run(registry_server, source, "cached/opts:zstd", cache)
    lz4, _ = run(registry_server, source, "cached/opts:lz4", cache, compressor="lz4_block")
    assert lz4.platforms[0].cache["hits"] == 0
    small, _ = run(registry_server, source, "cached/opts:small", cache, chunk_size=0x40000)
    assert small.platforms[0].cache["hits"] == 0
    again, _ = run(registry_server, source, "cached/opts:zstd-again", cache)
    assert again.platforms[0].cache["hits"] == 3  # the first generation is still there
    v5_cold, _ = run(registry_server, source, "cached/opts:v5", cache, fs_version=5)
    v5_warm, _ = run(registry_server, source, "cached/opts:v5-again", cache, fs_version=5)
    assert v5_cold.platforms[0].cache["hits"] == 0 and v5_warm.platforms[0].cache["hits"] == 3
    assert v5_warm.target_digest == v5_cold.target_digest
    index = open_image(cache, client=client)
    assert len(index.manifest["manifests"]) == 4  # one generation per option set


def test_cli_flags_and_one_warning_for_a_broken_cache(registry_server, tmp_path):
    client = registry_server.client()
    source = registry_server.ref("cached/cli:1")
    push(make_image(layers()), source, client)
    # A cache tag that holds something else entirely: one warning, then a cold conversion.
    push(
        make_image([layer_tar([("x", REG, b"x")])]), registry_server.ref("cached/cli:junk"), client
    )
    result = rconv("convert", "--source", source, "--target-suffix", "-nydus",
                   "--build-cache-tag", "junk", "--output-json", tmp_path / "r.json",
                   check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "build cache" in line]
    assert len(warnings) == 1 and "cached/cli:junk" in warnings[0]
    warm = rconv("convert", "--source", source, "--target", registry_server.ref("cached/cli:w"),
                 "--build-cache-tag", "junk", "--output-json", tmp_path / "w.json")  # fmt: skip
    assert warm.returncode == 0 and "rconv: warning" not in warm.stderr  # all hits: all well
    assert "every layer and the bootstrap found in the build cache" in warm.stderr
    import json

    report = json.loads((tmp_path / "w.json").read_text())
    assert report["platforms"][0]["cache"]["hits"] == 3
    bootstrap = open_image(registry_server.ref("cached/cli:w"), client=client).layers()[-1]
    assert report["platforms"][0]["bootstrap_digest"] == bootstrap.digest  # from the cache
    both = rconv("convert", "--source", source, "--target", registry_server.ref("cached/cli:x"),
                 "--build-cache", registry_server.ref("c:1"), "--build-cache-tag", "t",
                 check=False)  # fmt: skip
    assert both.returncode != 0 and "not both" in both.stderr


def test_two_conversions_at_once_keep_each_others_records(registry_server):
    import subprocess
    import sys

    from tests.cli import REPO

    client = registry_server.client()
    cache = registry_server.ref("cached/both:nydus-cache")
    refs = []
    for n, top in enumerate((b"one", b"two")):
        ref = registry_server.ref(f"cached/both:{n}")
        push(make_image(layers(top)), ref, client)
        refs.append(ref)
    procs = [
        subprocess.Popen([sys.executable, "-m", "convert", "convert", "--source", ref,
                          "--target", ref + "-nydus", "--build-cache", cache], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for ref in refs
    ]  # fmt: skip
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    for ref in refs:  # both images are now entirely in the cache
        warm, opened = run(registry_server, ref, "cached/both:again", cache)
        assert warm.platforms[0].cache["hits"] == 3, warm.platforms[0].cache


def test_records_that_reference_a_chunk_dictionary(registry_server):
    """Chunks a dictionary holds are referenced, not stored; a record names them by the
    dictionary's blob and index, and the dictionary's digest is part of the generation."""
    client = registry_server.client()
    base = registry_server.ref("cached/dict:base")
    push(make_image([layer_tar([("shared", REG, BIG)])]), base, client)
    dictionary = registry_server.ref("cached/dict:base-nydus")
    run(registry_server, base, "cached/dict:base-nydus", None)
    cache = registry_server.ref("cached/dict:cache")
    results = {}
    for top in (b"v1", b"v2"):
        source = registry_server.ref(f"cached/dict:{top.decode()}")
        push(make_image(layers(top)), source, client)
        opts = ConvertOptions(source=source, target=source + "-plain",
                              chunk_dict="registry:" + dictionary)  # fmt: skip
        plain = convert(opts, client, Silent())
        warm = convert(replace(opts, target=source + "-cached", build_cache=cache), client,
                       Silent())  # fmt: skip
        assert warm.target_digest == plain.target_digest
        results[top] = warm.platforms[0].cache
    assert results[b"v1"]["hits"] == 0 and results[b"v2"]["hits"] == 2  # only the top missed


def test_a_layout_target_reads_cached_blobs_through_the_cache(registry_server, tmp_path):
    client = registry_server.client()
    source = registry_server.ref("cached/layout:1")
    push(make_image(layers()), source, client)
    cache = registry_server.ref("cached/layout:cache")
    plain = convert(ConvertOptions(source=source, target=f"oci:{tmp_path}/plain:n"), client,
                    Silent())  # fmt: skip
    for name in ("cold", "warm"):
        opts = ConvertOptions(source=source, target=f"oci:{tmp_path}/{name}:n", build_cache=cache)
        report = convert(opts, client, Silent())
        assert report.target_digest == plain.target_digest
    assert report.platforms[0].cache["hits"] == 3
    checked = rconv("check", "--target", f"oci:{tmp_path}/warm:n", "--source", source,
                    check=False)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_undecodable_record_is_one_warning_and_a_cold_layer(registry_server):
    from convert.buildcache import BuildCache
    from convert.cachestage import chain_ids, generation
    from registry.model import Platform

    client = registry_server.client()
    image = make_image(layers())
    source = registry_server.ref("cached/garbage:1")
    push(image, source, client)
    cache = registry_server.ref("cached/garbage:cache")
    run(registry_server, source, "cached/garbage:cold", cache)
    # Replace the base layer's record with one whose state is not a layer state.
    store = BuildCache.open(cache, client, Platform("linux", "amd64"),
                            generation(RafsOptions(), ""), 200)  # fmt: skip
    chain = chain_ids(image.config["rootfs"]["diff_ids"])[0]
    record = store.get(chain)
    assert record is not None
    store.put(chain, record.source_digest, record.blob, lambda: store.open_blob(record),
              b"not a layer state")  # fmt: skip
    store.save()
    warnings: list[str] = []

    class Collect(Silent):
        def log(self, message: str) -> None:
            warnings.append(message)

    opts = ConvertOptions(source=source, target=registry_server.ref("cached/garbage:warm"),
                          build_cache=cache, prefetch=(b"/usr",))  # fmt: skip
    counting = CountingClient(registry_server.options())
    report = convert(opts, counting, Collect())
    plain_usr, _ = run(registry_server, source, "cached/garbage:plain-usr", None, (b"/usr",))
    assert report.target_digest == plain_usr.target_digest
    rest = sum(d.size for d in image.layer_descriptors[1:])
    assert report.platforms[0].cache == {"hits": 2, "misses": 1, "bytes_not_pulled": rest}
    assert image.layer_descriptors[0].digest in counting.opened
    assert len([w for w in warnings if "record unusable" in w]) == 1
