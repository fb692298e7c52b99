"""Fuzz targets, the mutation strategy and the time guard shared by the CI budget and
``fuzz/run_fuzz.py``.

A target takes bytes, runs one parser on them and lets only its package's own error types
escape (``RafsError`` for ``rafs``, ``RegistryError`` for ``registry``); any other exception,
or a call running longer than the time guard, is a bug. Inputs are seeds (valid files made by
``tests.fuzz.seeds``) with a few structured mutations applied: byte flips and overwrites,
"interesting" integers written over fields, inserted, deleted and duplicated ranges,
truncation. For tars and blob trailers the ustar checksums can be recomputed after mutating,
so that the mutation reaches the code behind the checksum check.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from rafs.blob.reader import read_blob_meta, read_sections, read_toc
from rafs.bootstrap import read_bootstrap
from rafs.errors import RafsError
from rafs.layerstream import open_layer
from rafs.model import BlobInfo, Chunk
from rafs.tarstream import read_layer
from rafs.v5.reader import check_digests as check_v5_digests
from rafs.v5.reader import parse as parse_v5
from rafs.v5.reader import read_bootstrap as read_v5
from rafs.v6.reader import parse as parse_v6
from registry.auth import parse_challenges
from registry.errors import RegistryError
from registry.medium import parse_spec
from registry.model import Descriptor, LazyIndex, Platform, StaticImage, manifest_media_type
from registry.reference import parse_reference

# Longest a single call may take (seconds). The inputs are a few KiB and parse in
# milliseconds: anything near this is a hang (a loop driven by a hostile count), not slowness.
# The per-example deadline is lower, so slow-but-finishing inputs are reported too.
CALL_LIMIT = 10.0
DEADLINE = timedelta(seconds=3)
FILE_READ_LIMIT = 256 << 10  # bytes a fuzzed add_file reads before leaving the rest unread
LAYER_LIMIT = 64 << 20  # decompressed-size bound for fuzzed compressed layers


def budget(examples: int) -> settings:
    """Fixed-seed settings for the CI budget: same inputs on every run, no example database."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=DEADLINE,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class Hang(BaseException):
    """Raised by the time guard; a BaseException so that no ``except Exception`` hides it."""


@contextlib.contextmanager
def time_limit(seconds: float = CALL_LIMIT) -> Iterator[None]:
    """Interrupt the block after ``seconds`` of wall time (main thread only, POSIX)."""

    def expired(signum, frame):
        raise Hang(f"call did not finish within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------- mutations

INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0xFFF, 0x1000, 0x7FFF, 0x8000, 0xFFFF, 0x10000,
               0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x100000000, 2**63 - 1, 2**64 - 1)  # fmt: skip


@dataclass(frozen=True)
class Mutation:
    kind: str
    where: float  # position as a fraction of the current length, so it survives resizes
    value: int
    length: int
    hot: bool  # aim at a non-zero byte of the seed (a field, not padding)


OVERWRITES = ["flip", "byte", "int16", "int32", "int64", "octal"]
RESIZES = ["insert", "delete", "dup", "cut"]


def mutations(resize: bool = True):
    return st.builds(
        Mutation,
        kind=st.sampled_from(OVERWRITES + RESIZES if resize else OVERWRITES),
        # from raw bytes: hypothesis's floats and integers favour 0, a poor position
        where=st.binary(min_size=3, max_size=3).map(lambda b: int.from_bytes(b, "big") / (1 << 24)),
        value=st.one_of(st.sampled_from(INTERESTING), st.integers(0, 2**64 - 1)),
        length=st.integers(1, 700),
        hot=st.booleans(),
    )


_HOT: dict[bytes, list[int]] = {}


def _hot(seed: bytes) -> list[int]:
    """Offsets of the non-zero bytes of a seed (cached: seeds are few and immutable)."""
    found = _HOT.get(seed)
    if found is None:
        found = _HOT[seed] = [i for i, b in enumerate(seed) if b] or [0]
    return found


def mutate(data: bytes, ops: list[Mutation]) -> bytes:
    hot = _hot(data)
    buf = bytearray(data)
    for op in ops:
        pos = min(int(op.where * len(buf)), max(len(buf) - 1, 0))
        if op.hot:
            pos = min(hot[int(op.where * (len(hot) - 1))], max(len(buf) - 1, 0))
        if op.kind == "cut":
            del buf[pos:]
        elif op.kind == "insert":
            buf[pos:pos] = op.value.to_bytes(8, "little") * (op.length // 8 + 1)
        elif op.kind == "delete":
            del buf[pos : pos + op.length]
        elif op.kind == "dup":
            buf[pos:pos] = buf[pos : pos + op.length]
        elif not buf:
            continue
        elif op.kind == "flip":
            buf[pos] ^= 1 << (op.value % 8)
        elif op.kind == "byte":
            buf[pos] = op.value & 0xFF
        elif op.kind == "octal":  # tar number fields: 11 octal digits and a NUL
            field = b"%011o\0" % (op.value % 8**11)
            buf[pos : pos + len(field)] = field[: len(buf) - pos]
        else:
            width = {"int16": 2, "int32": 4, "int64": 8}[op.kind]
            raw = (op.value % 256**width).to_bytes(width, "little")
            buf[pos : pos + width] = raw[: len(buf) - pos]
    return bytes(buf)


def fix_tar_checksums(data: bytes) -> bytes:
    """Recompute the checksum of every 512-byte block that carries the ustar magic."""
    buf = bytearray(data)
    for at in range(0, len(buf) - 511, 512):
        if buf[at + 257 : at + 262] == b"ustar":
            buf[at + 148 : at + 156] = b"        "
            buf[at + 148 : at + 156] = b"%06o\0 " % sum(buf[at : at + 512])
    return bytes(buf)


def fix_trailer_checksum(data: bytes) -> bytes:
    """The blob's last 512 bytes are a section tar header: make its checksum valid again."""
    if len(data) < 512 or len(data) % 512 == 0:
        return data[:-512] + fix_tar_checksums(data[-512:]) if len(data) >= 512 else data
    head, tail = data[:-512], bytearray(data[-512:])
    tail[148:156] = b"        "
    tail[148:156] = b"%06o\0 " % sum(tail)
    return head + bytes(tail)


def mutated(
    seeds: list[bytes], *, tar_checksums: bool = False, trailer: bool = False, resize: bool = True
):
    """Strategy: a seed with 1-6 mutations (and checksums recomputed when asked).

    ``resize=False`` keeps the length in most inputs (block-aligned formats reject any other
    length at once, so size changes would hide everything behind that first check).
    """

    @st.composite
    def build(draw) -> bytes:
        seed = draw(st.sampled_from(seeds))
        may_resize = resize or draw(st.integers(0, 7)) == 0
        data = mutate(seed, draw(st.lists(mutations(may_resize), min_size=1, max_size=6)))
        if tar_checksums and draw(st.integers(0, 3)):
            data = fix_tar_checksums(data)
        if trailer and draw(st.integers(0, 3)):
            data = fix_trailer_checksum(data)
        return data

    return build()


# --------------------------------------------------------------------------- JSON mutations

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(obj, prefix=()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def json_mutated(seeds: list[bytes]):
    """Strategy: a JSON seed with values replaced or deleted at random paths, or its bytes
    mutated."""

    @st.composite
    def build(draw) -> bytes:
        seed = draw(st.sampled_from(seeds))
        if draw(st.integers(0, 3)) == 0:
            return mutate(seed, draw(st.lists(mutations(), min_size=1, max_size=4)))
        obj = json.loads(seed)
        for _ in range(draw(st.integers(1, 3))):
            path = draw(st.sampled_from(_paths(obj)))
            value = draw(json_values)
            if not path:
                obj = value
                continue
            parent = obj
            try:
                for key in path[:-1]:
                    parent = parent[key]
                if draw(st.booleans()) and isinstance(parent, dict):
                    parent.pop(path[-1], None)
                else:
                    parent[path[-1]] = value
            except (KeyError, IndexError, TypeError):
                pass
        return json.dumps(obj).encode()

    return build()


# --------------------------------------------------------------------------- targets


def _read_some(reader, size: int) -> list[Chunk]:
    """A fuzzing add_file: reads a bounded amount, so a 1 EiB sparse entry costs nothing."""
    left = min(size, FILE_READ_LIMIT)
    while left:
        got = reader.read(min(left, 65536))
        if not got:
            break
        left -= len(got)
    return []


def run_tar(data: bytes) -> None:
    read_layer(io.BytesIO(data), _read_some, [])


def run_layer(data: bytes) -> None:
    read_layer(open_layer(io.BytesIO(data), max_bytes=LAYER_LIMIT), _read_some, [])


def run_v6(data: bytes) -> None:
    parse_v6(data)


def run_v5(data: bytes) -> None:
    read_v5(io.BytesIO(data))  # the tree, as a build reads a parent bootstrap
    check_v5_digests(parse_v5(io.BytesIO(data)))


def run_bootstrap(data: bytes) -> None:
    read_bootstrap(io.BytesIO(data))


def run_toc(data: bytes) -> None:
    read_toc(io.BytesIO(data), len(data))
    with contextlib.suppress(RafsError):  # a v5 blob has no headers; the walk may refuse
        read_sections(io.BytesIO(data), len(data))


_BLOB_META = struct.Struct("<IIIIQ")  # ci compressor, chunk count, uncompressed size, sizes


def run_blob_meta(data: bytes) -> None:
    """Blob bytes preceded by a 24-byte header giving the blob-table fields to check them by."""
    if len(data) < 24:
        return
    ci_comp, count, ci_csize, ci_usize, ci_offset = _BLOB_META.unpack_from(data)
    blob = data[24:]
    info = BlobInfo(
        chunk_size=0x1000,
        compressor="zstd",
        chunk_count=count,
        uncompressed_size=count * 0x1000,
        compressed_size=len(blob),
        ci_compressor=("none", "lz4_block", "gzip", "zstd")[ci_comp % 4],
        ci_offset=ci_offset,
        ci_compressed_size=ci_csize,
        ci_uncompressed_size=ci_usize,
    )
    read_blob_meta(io.BytesIO(blob), info)


def blob_meta_input(info: BlobInfo, blob: bytes) -> bytes:
    """The input ``run_blob_meta`` expects for a real blob and its blob-table entry."""
    comp = ("none", "lz4_block", "gzip", "zstd").index(info.ci_compressor)
    head = _BLOB_META.pack(
        comp, info.chunk_count, info.ci_compressed_size, info.ci_uncompressed_size, info.ci_offset
    )
    return head + blob


def _use(*values: object) -> None:
    """Properties are evaluated by naming them; this makes that explicit."""


def _config_opener(config: bytes):
    def open_blob(desc: Descriptor):
        return io.BytesIO(config)

    return open_blob


def run_manifest(data: bytes) -> None:
    """An image manifest (or index) read through the model as a converter would."""
    manifest_media_type(data, None, "fuzz")
    image = StaticImage(data, _config_opener(data), name="fuzz")
    _use(image.media_type, image.descriptor, image.annotations, image.config_descriptor)
    for layer in image.layers():
        _use(layer.digest, layer.compression, layer.diff_id)
    image.blob_descriptors()
    for d in image.layer_descriptors:
        _use(d.annotations, d.platform, d.urls)


def run_config(data: bytes) -> None:
    """A config blob under a fixed, valid manifest (diff_ids, platform, rootfs)."""
    manifest = json.dumps(
        {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": "sha256:" + "0" * 64, "size": len(data)},
         "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                     "digest": "sha256:" + "1" * 64, "size": 1}] * 2}
    ).encode()  # fmt: skip
    image = StaticImage(manifest, _config_opener(data), name="fuzz")
    _use(image.config, [layer.diff_id for layer in image.layers()])


def run_index(data: bytes) -> None:
    manifest_media_type(data, None, "fuzz")
    index = LazyIndex(data, None, _config_opener(b"{}"), name="fuzz")
    _use(index.media_type, index.annotations)
    for d in index.manifests:
        _use(d.platform, d.annotations)
    with contextlib.suppress(RegistryError):
        index.image_for(Platform("linux", "arm64", "v8"))


def run_reference(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    with contextlib.suppress(RegistryError):
        ref = parse_reference(text)
        str(ref), ref.familiar(), ref.identifier
        again = parse_reference(str(ref))
        assert again == ref, f"{text!r} does not survive a round trip: {ref} -> {again}"
    parse_spec(text)


def run_challenge(data: bytes) -> None:
    for ch in parse_challenges(data.decode("utf-8", "replace")):
        _use(ch.realm, ch.service, ch.scopes, ch.error)


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    allowed: type[BaseException]


TARGETS = {
    t.name: t
    for t in (
        Target("tar", run_tar, RafsError),
        Target("layer", run_layer, RafsError),
        Target("v6", run_v6, RafsError),
        Target("v5", run_v5, RafsError),
        Target("bootstrap", run_bootstrap, RafsError),
        Target("toc", run_toc, RafsError),
        Target("blob_meta", run_blob_meta, RafsError),
        Target("manifest", run_manifest, RegistryError),
        Target("config", run_config, RegistryError),
        Target("index", run_index, RegistryError),
        Target("reference", run_reference, RegistryError),
        Target("challenge", run_challenge, RegistryError),
    )
}


def check(target: Target, data: bytes, limit: float = CALL_LIMIT) -> None:
    """Run one input: allowed errors are swallowed, anything else (or a hang) propagates."""
    with time_limit(limit):
        try:
            target.run(data)
        except target.allowed as exc:
            message = str(exc)
            assert message and "\n" not in message, f"error is not one line: {message!r}"
