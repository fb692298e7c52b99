"""`rconv convert` under registry faults and interruptions.

The source image (four layers of incompressible data) sits in a real registry behind the
fault-injecting proxy; the conversion reads it and writes the Nydus image through the proxy.
For each fault and phase (pull of manifest or blobs, existence check, blob push, manifest
push) exactly two outcomes are allowed: the conversion completes with the target digest of a
fault-free run, or it fails with a one-line error and the target tag is untouched (absent, or
its previous digest). Either way the work dir is left empty.

Interrupting the CLI with SIGINT or SIGTERM at points spread over pull, conversion and push
leaves no work-dir garbage, and the target tag is either absent or names an image whose every
blob exists.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from convert.errors import LayerError
from convert.options import ConvertOptions
from convert.pipeline import convert as run_convert
from convert.progress import Silent
from rafs.errors import RafsError
from registry.errors import RegistryError
from registry.medium import open_image, write_image
from registry.model import Image
from registry.reference import parse_reference
from tests.faults.proxy import Fault, FaultProxy
from tests.faults.registry import client_for, open_registry
from tests.registry.images import random_image


@pytest.fixture(autouse=True)
def _worker_processes(monkeypatch) -> None:
    """These images are small: without this they would be converted in threads, and the
    faults would never reach the pumps feeding the worker processes."""
    monkeypatch.setattr("convert.layerproc.THREADS_BELOW", 0)


REPO = Path(__file__).resolve().parents[2]
BLOB = r"^/v2/.+/blobs/sha256:"
MANIFEST = r"^/v2/.+/manifests/"
UPLOAD = r"^/v2/.+/blobs/uploads/$"
UPLOAD_SESSION = r"^/v2/.+/blobs/uploads/[^/]+$"


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    with open_registry(tmp_path_factory.mktemp("convert-faults")) as found:
        yield found


@pytest.fixture
def proxy(reg) -> FaultProxy:
    reg[1].clear()
    return reg[1]


@pytest.fixture(scope="module")
def source(reg, tmp_path_factory) -> str:
    """The source image, pushed straight to the registry; its name without a host."""
    image = random_image(21, ("gzip", "zstd", "gzip", "none"), files=3, size=120_000)
    work = tmp_path_factory.mktemp("src")
    with client_for(reg[0].host, work) as c:
        write_image(image, f"{reg[0].host}/convert/src:1", client=c)
    return "convert/src:1"


@pytest.fixture(scope="module")
def reference(reg, source, tmp_path_factory) -> str:
    """Target digest of a fault-free conversion (through the proxy, no rule set)."""
    work = tmp_path_factory.mktemp("ref")
    return convert(reg[1].host, source, "convert/ref:nydus", work)


def convert(host: str, source: str, target: str, work: Path, **options) -> str:
    opts = ConvertOptions(
        source=f"{host}/{source}", target=f"{host}/{target}", work_dir=work / "work", jobs=2
    )
    with client_for(host, work, **options) as client:
        return run_convert(opts, client, Silent()).target_digest


def tag_digest(reg, work: Path, ref: str) -> str | None:
    with client_for(reg[0].host, work) as c:
        try:
            return c.resolve(parse_reference(f"{reg[0].host}/{ref}")).digest
        except RegistryError as err:
            if err.status == 404:
                return None
            raise


def complete(reg, work: Path, ref: str) -> bool:
    """Every blob the tag's image references is in the registry (read and verified)."""
    with client_for(reg[0].host, work) as c:
        image = open_image(f"{reg[0].host}/{ref}", client=c)
        assert isinstance(image, Image)
        for desc in image.blob_descriptors():
            with image.open_blob(desc) as f:
                while f.read(1 << 20):
                    pass
    return True


def work_is_clean(work: Path) -> bool:
    return not (work / "work").exists() or not any((work / "work").iterdir())


PHASES = {
    "pull-manifest": ("GET", MANIFEST),
    "pull-blob": ("GET", BLOB),
    "check": ("HEAD", BLOB),
    "push-blob": ("PUT", UPLOAD_SESSION),
    "push-manifest": ("PUT", MANIFEST),
}
FAULTS = {
    "reset": lambda phase: Fault.reset(after=70_000 if phase == "pull-blob" else None),
    "truncated": lambda phase: Fault.truncate(after=70_000 if phase == "pull-blob" else 200),
    "http-503": lambda phase: Fault.http(503),
    "http-429": lambda phase: Fault.http(429, retry_after=1),
    "stalled": lambda phase: Fault.stall(),
    "lost-response": lambda phase: Fault.lose_response(),
    "cut-upload": lambda phase: Fault.reset_request(after=50_000),
}
# (fault, phase) pairs that make sense: bodies are cut only where there is one to cut
MATRIX = [
    (f, p)
    for p in PHASES
    for f in FAULTS
    if not (f == "truncated" and p in ("check", "push-blob", "push-manifest"))
    and not (f == "cut-upload" and p not in ("push-blob", "push-manifest"))
    and not (f == "lost-response" and p.startswith("pull"))
    and not (f == "http-429" and p in ("pull-manifest", "check", "push-blob"))  # 1 s each
]
# Faults on every attempt: one or two per phase (each costs retries x timeout)
ALWAYS = [("http-503", "pull-manifest"), ("reset", "pull-blob"), ("stalled", "pull-blob"),
          ("http-503", "check"), ("cut-upload", "push-blob"), ("stalled", "push-blob"),
          ("http-503", "push-manifest"), ("lost-response", "push-manifest"),
          ("stalled", "push-manifest")]  # fmt: skip
CASES = [pytest.param(f, p, False, id=f"once-{f}-{p}") for f, p in MATRIX] + [
    pytest.param(f, p, True, id=f"always-{f}-{p}") for f, p in ALWAYS
]


@pytest.mark.parametrize("fault, phase, every", CASES)
def test_convert_under_a_fault(reg, proxy, source, reference, tmp_path, fault, phase, every):
    target = f"convert/t{uuid.uuid4().hex[:8]}:nydus"
    previous = None
    if every:  # a tag that already exists must survive a failed conversion
        with client_for(reg[0].host, tmp_path) as c:
            previous = write_image(
                random_image(5, ("gzip",), files=1, size=10),
                f"{reg[0].host}/{target}",
                client=c,
            ).digest
    method, path = PHASES[phase]
    rule = proxy.add(FAULTS[fault](phase), method, path, nth=None if every else 1)
    try:
        limits = {"timeout": 0.5, "retries": 1} if every else {"timeout": 1.0, "retries": 2}
        digest = convert(proxy.host, source, target, tmp_path, **limits)
    except (RegistryError, LayerError, RafsError) as err:
        text = str(err)
        assert text and "\n" not in text, text
        assert tag_digest(reg, tmp_path, target) == previous, f"tag changed: {text}"
        assert every, f"a single {fault} during {phase} should be survived: {text}"
        outcome = f"error ({type(err).__name__}), tag untouched"
    else:
        assert digest == reference == tag_digest(reg, tmp_path, target)
        assert complete(reg, tmp_path, target)
        outcome = "identical digests"
    assert rule.fired >= 1, proxy.log
    assert work_is_clean(tmp_path), list((tmp_path / "work").iterdir())
    print(f"{fault} during {phase}, {'every time' if every else 'once'}: {outcome}")


def test_a_bomb_layer_fails_at_the_configured_limit(reg, proxy, tmp_path) -> None:
    import gzip

    from registry import mediatype as mt
    from registry.build import Blob, build_image
    from tests.tarmaker import END, header

    tar = header(b"zeros", size=32 << 20) + bytes(32 << 20) + END
    layer = gzip.compress(tar, compresslevel=1)
    config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers",
              "diff_ids": ["sha256:" + "0" * 64]}}  # fmt: skip
    image = build_image(config, [Blob.from_bytes(layer, mt.layer_type("gzip"))])
    with client_for(reg[0].host, tmp_path) as c:
        write_image(image, f"{reg[0].host}/convert/bomb:1", client=c)
    opts = ConvertOptions(
        source=f"{proxy.host}/convert/bomb:1",
        target=f"{proxy.host}/convert/bomb:nydus",
        work_dir=tmp_path / "work",
        max_layer_size=16 << 20,
    )
    with client_for(proxy.host, tmp_path) as client, pytest.raises(LayerError) as info:
        run_convert(opts, client, Silent())
    assert "configured limit" in str(info.value) and "\n" not in str(info.value)
    assert tag_digest(reg, tmp_path, "convert/bomb:nydus") is None
    assert work_is_clean(tmp_path)


def test_build_cache_records_survive_a_failed_target_push(
    reg, proxy, source, reference, tmp_path
) -> None:
    """The build cache is saved while the target's manifest is pushed: a push that fails
    leaves the target tag untouched and the records saved, so the retry converts nothing."""
    target = "convert/failed-push:nydus"
    proxy.add(Fault.http(500), "PUT", r"^/v2/convert/failed-push/manifests/nydus$", nth=None)
    opts = ConvertOptions(
        source=f"{proxy.host}/{source}",
        target=f"{proxy.host}/{target}",
        work_dir=tmp_path / "work",
        jobs=2,
        build_cache=f"{proxy.host}/convert/cache:failed-push",
    )
    with client_for(proxy.host, tmp_path) as client, pytest.raises(RegistryError):
        run_convert(opts, client, Silent())
    assert tag_digest(reg, tmp_path, target) is None
    assert work_is_clean(tmp_path)
    proxy.clear()
    with client_for(proxy.host, tmp_path) as client:
        report = run_convert(opts, client, Silent())
    assert report.target_digest == reference
    stats = report.platforms[0].cache
    assert stats is not None and (stats["hits"], stats["misses"]) == (4, 0)
    assert stats["bytes_not_pulled"] > 0
    with client_for(reg[0].host, tmp_path) as c:
        src = open_image(f"{reg[0].host}/{source}", client=c)
        assert isinstance(src, Image)
        layers = {d.digest for d in src.layer_descriptors}
    assert not [p for m, p, _ in proxy.log if m == "GET" and p.rsplit("/", 1)[-1] in layers]


# --------------------------------------------------------------------------- interruptions

# When the signal is sent (seconds after the start) and which one. The proxy stretches the run
# (slow blob reads, slow uploads) to about 4 s: interpreter start-up until ~0.8 s, pull and
# conversion until ~1.8 s, then the push (blobs, config, manifest).
SIGNAL_POINTS = [(0.3, signal.SIGINT), (1.0, signal.SIGTERM), (1.5, signal.SIGINT),
                 (2.2, signal.SIGTERM), (2.9, signal.SIGINT), (3.5, signal.SIGTERM)]  # fmt: skip


@pytest.mark.parametrize(
    "delay, signum", SIGNAL_POINTS, ids=[f"{d}s-{s.name}" for d, s in SIGNAL_POINTS]
)
def test_interrupted_convert_leaves_no_garbage(reg, proxy, source, tmp_path, signum, delay):
    proxy.add(Fault.trickle(64 << 10, 0.05), "GET", BLOB, nth=None)
    proxy.add(Fault.slow(0.4), "PUT", UPLOAD_SESSION, nth=None)
    proxy.add(Fault.slow(0.4), "PUT", MANIFEST, nth=None)
    target = f"convert/i{uuid.uuid4().hex[:8]}:nydus"
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "convert", "convert", "--source", f"{proxy.host}/{source}",
         "--target", f"{proxy.host}/{target}", "--work-dir", str(work)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "TMPDIR": str(work)},
    )  # fmt: skip
    time.sleep(delay)
    proc.send_signal(signum)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    lines = [line for line in err.splitlines() if line.startswith("rconv: error")]
    assert "Traceback" not in err, err[-2000:]  # not even while the CLI is still loading
    if proc.returncode == 0:  # finished before the signal
        assert tag_digest(reg, tmp_path, target) is not None
    elif proc.returncode == -signum and not lines:
        # Killed while Python was still loading the CLI, before rconv's handlers exist:
        # nothing was started, so nothing may exist.
        assert not out and tag_digest(reg, tmp_path, target) is None
    else:
        assert proc.returncode in (130, -signum, 128 + signum), err[-2000:]
        assert len(lines) <= 1, err
    if tag_digest(reg, tmp_path, target) is not None:
        assert complete(reg, tmp_path, target)
    assert list(work.iterdir()) == [], list(work.iterdir())
