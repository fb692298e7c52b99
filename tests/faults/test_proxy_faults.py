"""The registry client against a real registry behind a fault-injecting proxy.

Each fault is injected into one phase: manifest pull, blob pull, blob existence check (HEAD),
upload start (POST), blob upload (PUT, or PATCH when chunked) and manifest push (PUT). Two
outcomes are allowed: the operation completes with exactly the digests of a fault-free run, or
it fails with a typed one-line ``RegistryError``; after a failed push the target tag still
names its previous image. A fault injected once must be survived (retries, resumes); a fault
on every attempt must fail cleanly and within the configured time.
"""

from __future__ import annotations

import time
import uuid

import pytest

from registry.errors import AuthError, RegistryError
from registry.medium import open_image, write_image
from registry.model import Image
from registry.reference import parse_reference
from tests.faults.proxy import Fault, FaultProxy
from tests.faults.registry import client_for, open_registry, token_registry
from tests.registry.images import blobs_of, random_image, validate

BLOB = r"^/v2/.+/blobs/sha256:"
MANIFEST = r"^/v2/.+/manifests/"
UPLOAD = r"^/v2/.+/blobs/uploads/$"
UPLOAD_SESSION = r"^/v2/.+/blobs/uploads/[^/]+$"


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    with open_registry(tmp_path_factory.mktemp("faults")) as (server, proxy):
        yield server, proxy


@pytest.fixture(scope="module")
def image() -> Image:
    """Four layers of ~300 KiB of incompressible data (gzip, zstd, none, gzip)."""
    return random_image(7, ("gzip", "zstd", "none", "gzip"), files=3, size=100_000)


@pytest.fixture(scope="module")
def other() -> Image:
    return random_image(8, ("gzip", "gzip"), files=2, size=50_000)


@pytest.fixture
def proxy(reg) -> FaultProxy:
    reg[1].clear()
    return reg[1]


def repo() -> str:
    return "faults/" + uuid.uuid4().hex[:10]


def one_line(err: BaseException) -> str:
    assert isinstance(err, RegistryError), repr(err)
    text = str(err)
    assert text and "\n" not in text
    return text


def direct(reg, tmp_path, **kw):
    """A client talking to the registry itself, not through the proxy (the ground truth)."""
    return client_for(reg[0].host, tmp_path, **kw)


def tag_digest(reg, tmp_path, ref: str) -> str | None:
    with direct(reg, tmp_path) as c:
        try:
            return c.resolve(parse_reference(f"{reg[0].host}/{ref}")).digest
        except RegistryError as err:
            if err.status == 404:
                return None
            raise


# --------------------------------------------------------------------------- pull

PULL_FAULTS = {
    "reset-mid-body": Fault.reset(after=300),  # blobs: 70 KB, see cut()
    "reset-before-answer": Fault.reset(after=None),
    "truncated": Fault.truncate(after=300),
    "http-500": Fault.http(500),
    "http-502": Fault.http(502),
    "http-503": Fault.http(503),
    "http-429-retry-after": Fault.http(429, retry_after=1),
    "trickle": Fault.trickle(32 << 10, 0.002),
    "stalled": Fault.stall(),
}


def cut(fault: Fault, phase: str) -> Fault:
    """Blobs are cut deep inside (70 KB), manifests (~1 KB) after 300 bytes."""
    if phase == "blob" and fault.kind in ("reset", "truncate") and fault.after:
        return Fault(fault.kind, after=70_000)
    return fault


PULL_PHASES = {"manifest": ("GET", MANIFEST), "blob": ("GET", BLOB)}


def pull(host: str, name: str, tmp_path, **options) -> dict[str, bytes]:
    with client_for(host, tmp_path, **options) as c:
        img = open_image(f"{host}/{name}", client=c)
        validate(img)
        return blobs_of(img)


# test_convert_faults.py injects reset, truncation, 503, 429 and stalls into the pulls of a
# conversion; here the client alone meets those and the rest.
PULL_ONCE = [(f, p) for p in PULL_PHASES for f in PULL_FAULTS]
PULL_ONCE = [
    (f, p) for f, p in PULL_ONCE if f not in ("http-503", "http-429-retry-after", "stalled")
] + [("http-429-retry-after", "blob")]


@pytest.mark.parametrize("fault, phase", PULL_ONCE)
def test_pull_survives_a_fault_once(reg, proxy, image, tmp_path, fault, phase) -> None:
    name = repo() + ":v1"
    with direct(reg, tmp_path) as c:
        write_image(image, f"{reg[0].host}/{name}", client=c)
    method, path = PULL_PHASES[phase]
    rule = proxy.add(cut(PULL_FAULTS[fault], phase), method, path, nth=1)
    started = time.monotonic()
    got = pull(proxy.host, name, tmp_path, timeout=1.0)
    assert rule.fired == 1, proxy.log
    assert got == blobs_of(image)  # every digest identical to the fault-free source
    if fault == "http-429-retry-after":
        assert time.monotonic() - started >= 1.0  # Retry-After honoured


@pytest.mark.parametrize(
    "fault, phase",
    [("reset-mid-body", "blob"), ("truncated", "blob"), ("http-503", "manifest"),
     ("http-500", "blob"), ("reset-before-answer", "manifest"), ("stalled", "blob")],
)  # fmt: skip
def test_pull_fault_on_every_attempt_fails_with_one_line(
    reg, proxy, image, tmp_path, fault, phase
) -> None:
    name = repo() + ":v1"
    with direct(reg, tmp_path) as c:
        write_image(image, f"{reg[0].host}/{name}", client=c)
    method, path = PULL_PHASES[phase]
    rule = proxy.add(cut(PULL_FAULTS[fault], phase), method, path, nth=None)
    timeout, retries = 1.0, 2
    started = time.monotonic()
    with pytest.raises(RegistryError) as info:
        pull(proxy.host, name, tmp_path, timeout=timeout, retries=retries)
    elapsed = time.monotonic() - started
    text = one_line(info.value)
    assert rule.fired >= 1 and info.value.temporary, text
    # one operation: at most retries + 1 attempts, each bounded by the timeout
    assert elapsed < (retries + 1) * (timeout + 0.5) + 2, f"{elapsed:.1f} s: {text}"


# --------------------------------------------------------------------------- push

PUSH_FAULTS = {
    "reset-request-body": Fault.reset_request(after=50_000),
    "reset-before-answer": Fault.reset(after=None),
    "lost-response": Fault.lose_response(),
    "http-500": Fault.http(500),
    "http-502": Fault.http(502),
    "http-503": Fault.http(503),
    "http-429-retry-after": Fault.http(429, retry_after=1),
    "stalled": Fault.stall(),
    "stalled-after-forwarding": Fault.stall(forward=True),
}
PUSH_PHASES = {
    "check": ("HEAD", BLOB),
    "upload-start": ("POST", UPLOAD),
    "blob": ("PUT", UPLOAD_SESSION),
    "manifest": ("PUT", MANIFEST),
}


def push(host: str, img: Image, ref: str, tmp_path, **options) -> str:
    with client_for(host, tmp_path, **options) as c:
        return write_image(img, f"{host}/{ref}", client=c, jobs=1).digest


def pushed_blobs(reg, tmp_path, ref: str) -> dict[str, bytes]:
    with direct(reg, tmp_path) as c:
        return blobs_of(open_image(f"{reg[0].host}/{ref}", client=c))


# Which faults each push phase meets here. test_convert_faults.py covers reset, 503, 429,
# stalls, lost answers and cut uploads in every push phase of a conversion; this adds the
# upload start, the other status codes and stalls after the registry did the work.
PUSH_MATRIX = {
    "check": ["reset-before-answer", "http-500"],
    "upload-start": ["reset-before-answer", "lost-response", "http-502", "stalled"],
    "blob": ["reset-request-body", "http-500", "http-502", "stalled-after-forwarding"],
    "manifest": ["reset-request-body", "http-500", "stalled-after-forwarding"],
}


def push_cases():
    return [(fault, phase) for phase, faults in PUSH_MATRIX.items() for fault in faults]


@pytest.mark.parametrize("fault, phase", push_cases())
def test_push_survives_a_fault_once(reg, proxy, image, tmp_path, fault, phase) -> None:
    ref = repo() + ":v1"
    method, path = PUSH_PHASES[phase]
    rule = proxy.add(PUSH_FAULTS[fault], method, path, nth=1)
    digest = push(proxy.host, image, ref, tmp_path, timeout=1.0)
    assert rule.fired == 1, proxy.log
    assert digest == image.digest == tag_digest(reg, tmp_path, ref)
    assert pushed_blobs(reg, tmp_path, ref) == blobs_of(image)


@pytest.mark.parametrize(
    "fault, phase",
    [("http-503", "blob"), ("reset-request-body", "blob"), ("http-500", "upload-start"),
     ("http-502", "manifest"), ("reset-before-answer", "manifest"), ("stalled", "manifest"),
     ("http-503", "check")],
)  # fmt: skip
def test_failed_push_leaves_the_tag_as_it_was(
    reg, proxy, image, other, tmp_path, fault, phase
) -> None:
    name = repo()
    for tag, before in (("fresh", None), ("taken", other)):
        ref = f"{name}:{tag}"
        if before is not None:
            push(reg[0].host, before, ref, tmp_path)
        proxy.clear()
        method, path = PUSH_PHASES[phase]
        rule = proxy.add(PUSH_FAULTS[fault], method, path, nth=None)
        with pytest.raises(RegistryError) as info:
            push(proxy.host, image, ref, tmp_path, timeout=0.5, retries=1)
        one_line(info.value)
        assert rule.fired >= 1
        assert tag_digest(reg, tmp_path, ref) == (before.digest if before else None)


@pytest.mark.parametrize("fault", ["lost-response", "stalled-after-forwarding"])
def test_push_whose_manifest_answer_is_always_lost_checks_the_tag(
    reg, proxy, image, other, tmp_path, fault
) -> None:
    # The registry stores the manifest but the client never hears so: the client looks the
    # tag up, finds its own digest there and reports success (not an error with a moved tag).
    ref = repo() + ":taken"
    push(reg[0].host, other, ref, tmp_path)
    rule = proxy.add(PUSH_FAULTS[fault], "PUT", MANIFEST, nth=None)
    assert push(proxy.host, image, ref, tmp_path, timeout=1.0, retries=1) == image.digest
    assert rule.fired == 2  # both attempts lost their answer
    assert tag_digest(reg, tmp_path, ref) == image.digest
    assert pushed_blobs(reg, tmp_path, ref) == blobs_of(image)


@pytest.mark.parametrize("fault", ["reset-request-body", "http-503", "lost-response"])
def test_chunked_upload_survives_a_fault_on_a_patch(reg, proxy, image, tmp_path, fault) -> None:
    ref = repo() + ":chunked"
    rule = proxy.add(PUSH_FAULTS[fault], "PATCH", UPLOAD_SESSION, nth=2)
    digest = push(proxy.host, image, ref, tmp_path, chunk_size=64 << 10)
    assert rule.fired == 1 and digest == tag_digest(reg, tmp_path, ref)
    assert pushed_blobs(reg, tmp_path, ref) == blobs_of(image)


# --------------------------------------------------------------------------- timeouts


def test_stalled_registry_fails_within_the_timeout(reg, proxy, tmp_path) -> None:
    proxy.add(Fault.stall(), "GET", MANIFEST, nth=None)
    for timeout in (0.5, 1.5):
        started = time.monotonic()
        with pytest.raises(RegistryError) as info:
            pull(proxy.host, "faults/stalled:v1", tmp_path, timeout=timeout, retries=0)
        elapsed = time.monotonic() - started
        assert "ReadTimeout" in one_line(info.value)
        assert timeout <= elapsed < timeout + 2.0


def test_stall_inside_a_blob_resumes_or_fails_in_time(reg, proxy, image, tmp_path) -> None:
    name = repo() + ":v1"
    with direct(reg, tmp_path) as c:
        write_image(image, f"{reg[0].host}/{name}", client=c)
    # The first blob GET sends 100 KB, then stalls: after the timeout the reader resumes with
    # a Range request and gets the same bytes. Stalling every time fails within the bound.
    proxy.add(Fault.stall_body(after=100_000), "GET", BLOB, nth=1)
    assert pull(proxy.host, name, tmp_path, timeout=1.0) == blobs_of(image)
    assert [what for _, _, what in proxy.log].count("stall_body@100000") == 1
    proxy.clear()
    proxy.add(Fault.stall_body(after=100_000), "GET", BLOB, nth=None)
    started = time.monotonic()
    with pytest.raises(RegistryError) as info:
        pull(proxy.host, name, tmp_path, timeout=0.5, retries=2)
    assert "ReadTimeout" in one_line(info.value) and "at byte" in str(info.value)
    assert time.monotonic() - started < 3 * 0.5 + 2


# --------------------------------------------------------------------------- tokens


@pytest.fixture(scope="module")
def treg(tmp_path_factory):
    with token_registry(tmp_path_factory.mktemp("faults-token")) as found:
        yield found


def test_token_expired_early_is_refreshed(treg, image, tmp_path) -> None:
    server, proxy, tokens = treg
    ref = repo() + ":v1"
    tokens.expire_next = 1  # the first token handed out is already dead
    assert push(proxy.host, image, ref, tmp_path, creds=True) == image.digest
    tokens.expire_next = 1
    assert pull(proxy.host, ref, tmp_path, creds=True) == blobs_of(image)
    assert tokens.issued.count(True) == 2 and tokens.issued.count(False) >= 2


def test_token_endpoint_that_only_gives_dead_tokens_fails_with_auth_error(
    treg, image, tmp_path
) -> None:
    server, proxy, tokens = treg
    tokens.expire_next = 1000
    try:
        with pytest.raises(AuthError) as info:
            push(proxy.host, image, repo() + ":v1", tmp_path, creds=True)
        assert "401" in one_line(info.value)
    finally:
        tokens.expire_next = 0
