"""Stage 1 and stage 2 of the layer conversion (convert.layers), without a registry.

Stage 2 (``assemble_layer``) must give the blob a serial build of the kept files gives, byte
for byte, point the tree at the chunks earlier layers stored, and keep the speculative blob
as it is (renamed) when nothing is dropped.
"""

from __future__ import annotations

import hashlib
import io
import random
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from convert.errors import LayerError
from convert.layers import SpeculativeLayer, assemble_layer, convert_layer
from rafs.chunkdict import NoChunkDict
from rafs.errors import InvalidImage
from rafs.model import Chunk, walk
from rafs.options import RafsOptions
from tests.rafs.chunking import chunk_files
from tests.tarmaker import END, entry

ROOT = Path(__file__).resolve().parents[2]
OPTS = RafsOptions(chunk_size=0x1000)
SHARED = random.Random(1).randbytes(3 * 0x1000 + 10)  # in both layers
LOWER_ONLY = random.Random(2).randbytes(2 * 0x1000)
UPPER_ONLY = random.Random(3).randbytes(0x1000 + 7)


def tar(*files: tuple[bytes, bytes]) -> bytes:
    return b"".join(entry(name, data) for name, data in files) + END


def stage1(tmp: Path, name: str, data: bytes, pool) -> SpeculativeLayer:
    return convert_layer(
        f"sha256:{name}", lambda: io.BytesIO(data), tmp / f"spec-{name}", OPTS, None,
        NoChunkDict(), pool, "test-image",
    )  # fmt: skip


def files_of(spec: SpeculativeLayer) -> dict[bytes, list[Chunk]]:
    return {path: node.chunks for path, node in walk(spec.tree.root) if node.chunks}


def test_stage2_drops_what_a_lower_layer_stored_and_matches_a_direct_build(tmp_path: Path):
    with ThreadPoolExecutor(2) as pool:
        lower = stage1(tmp_path, "lower", tar((b"a", SHARED), (b"b", LOWER_ONLY)), pool)
        upper = stage1(tmp_path, "upper", tar((b"c", SHARED), (b"d", UPPER_ONLY)), pool)
    known: dict[bytes, Chunk] = {}
    lower_spec_bytes = lower.path.read_bytes()
    first = assemble_layer(lower, known, tmp_path / "blob-0", OPTS)
    first.complete()
    # Nothing dropped: the speculative blob is the final blob, renamed.
    assert not lower.path.exists() and first.path.read_bytes() == lower_spec_bytes
    assert (first.chunks_stored, first.chunks_deduped) == (6, 0)

    upper_spec_bytes = upper.path.read_bytes()
    second = assemble_layer(upper, known, tmp_path / "blob-1", OPTS)
    second.complete()
    assert (second.chunks_stored, second.chunks_deduped) == (2, 4)
    # Nothing copied: the kept chunks are read where they lie in the speculative blob, and
    # the final blob's own file holds only its trailing sections.
    assert upper.path.read_bytes() == upper_spec_bytes
    with second.open() as f:
        data = f.read()
    assert data.endswith(second.path.read_bytes()) and len(data) > second.path.stat().st_size
    assert second.info.blob_id == hashlib.sha256(data).hexdigest()
    assert second.info.compressed_size == len(data)
    # Byte for byte what a serial build of the upper layer's new data alone writes.
    direct = io.BytesIO()
    writer, _ = chunk_files(direct, [UPPER_ONLY], chunk_size=0x1000)
    writer.close_data()
    writer.finish()
    assert data == direct.getvalue()
    # The tree references the lower blob for the shared file, its own blob for the rest.
    tree = files_of(upper)
    assert {c.blob.blob_id for c in tree[b"/c"]} == {first.info.blob_id}
    assert {c.blob.blob_id for c in tree[b"/d"]} == {second.info.blob_id}
    assert [c.index for c in tree[b"/d"]] == [0, 1]
    assert known[tree[b"/c"][0].digest] is tree[b"/c"][0]


def test_a_wholly_duplicate_layer_and_a_damaged_speculative_blob(tmp_path: Path):
    with ThreadPoolExecutor(2) as pool:
        lower = stage1(tmp_path, "lower", tar((b"a", SHARED), (b"b", LOWER_ONLY)), pool)
        same = stage1(tmp_path, "same", tar((b"c", SHARED)), pool)
        upper = stage1(tmp_path, "upper", tar((b"d", UPPER_ONLY), (b"e", SHARED)), pool)
    known: dict[bytes, Chunk] = {}
    assemble_layer(lower, known, tmp_path / "blob-0", OPTS).complete()
    # Every chunk dropped: the blob is its trailing sections alone, what a build of no
    # file writes.
    dup = assemble_layer(same, known, tmp_path / "blob-1", OPTS)
    dup.complete()
    with dup.open() as f:
        data = f.read()
    empty = io.BytesIO()
    writer, _ = chunk_files(empty, [], chunk_size=0x1000)
    writer.close_data()
    writer.finish()
    assert (dup.chunks_stored, dup.chunks_deduped) == (0, 4) and data == empty.getvalue()
    # The kept chunks are read from the speculative blob: cut short, it fails by name.
    kept = assemble_layer(upper, known, tmp_path / "blob-2", OPTS)
    kept.complete()
    with open(upper.path, "r+b") as f:
        f.truncate(10)
    with pytest.raises(OSError, match="spec-upper: ends .* bytes before its range"):
        with kept.open() as f:
            f.read()


def test_hashing_the_kept_chunks_keeps_memory_flat(tmp_path: Path):
    """Stage 2 reads a 256 MiB speculative blob's kept bytes through one buffer: the peak
    RSS grows by far less than the blob (a map of the file added all of it)."""
    code = textwrap.dedent(
        f"""
        import io, os, resource
        from pathlib import Path
        from convert.layers import _Kept, _finish_kept
        from rafs.blob.writer import BlobWriter
        from rafs.options import RafsOptions

        size = 256 << 20
        path = Path({str(tmp_path / "spec")!r})
        with open(path, "wb") as f:
            f.truncate(size)  # a hole: reads as zeros without disk space
        writer = BlobWriter(io.BytesIO(), RafsOptions())
        writer.place(b"\\0" * 32, size, size, False, None)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        _finish_kept(_Kept(path, [(0, size)]), writer, open(os.devnull, "wb"))
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(writer.info.compressed_size > size, grown // 1024)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    stored, grown_mib = done.stdout.split()
    assert stored == "True" and int(grown_mib) < 32, done.stdout


def test_the_result_does_not_depend_on_the_compression_pool(tmp_path: Path):
    layer = tar((b"a", SHARED), (b"b", LOWER_ONLY), (b"c", SHARED))
    blobs = set()
    for workers in (1, 2, 4):
        work = tmp_path / str(workers)
        work.mkdir()
        with ThreadPoolExecutor(workers) as pool:
            spec = stage1(work, "x", layer, pool)
        final = assemble_layer(spec, {}, work / "blob", OPTS)
        final.complete()
        with final.open() as f:
            blobs.add(f.read())
    assert len(blobs) == 1


def test_a_corrupt_layer_names_the_image_and_the_layer(tmp_path: Path):
    bad = tar((b"a", SHARED))[:700]  # cut inside the file data
    with ThreadPoolExecutor(1) as pool, pytest.raises(LayerError) as info:
        stage1(tmp_path, "cut", bad, pool)
    assert str(info.value).startswith("test-image: layer sha256:cut: ")


def test_a_layer_state_record_rebuilds_the_cold_tree_byte_for_byte(tmp_path: Path):
    """Build cache records (rafs.layerstate): a warm layer applied from its record gives the
    bootstrap a cold conversion gives."""
    import stat as st

    from rafs import layerstate
    from rafs.bootstrap import write_bootstrap
    from rafs.model import new_root
    from rafs.overlay import apply_layer
    from tests.tarmaker import header, pax

    upper_tar = (
        entry(b"dir/", flag=b"5", mode=0o750, uid=3)
        + entry(b"dir/c", SHARED)
        + entry(b"dir/hard", flag=b"1", link=b"dir/c")
        + entry(b"low-alias", flag=b"1", link=b"a")  # a hard link to the lower layer
        + pax([(b"SCHILY.xattr.user.k", b"\xffv")]) + entry(b"x\xfe", UPPER_ONLY)
        + entry(b".wh.b") + entry(b"deep/er/f", b"1") + header(b"sym", b"2", link=b"dir/c")
        + END
    )  # fmt: skip

    def cold() -> tuple[list, list]:
        with ThreadPoolExecutor(2) as pool:
            low = stage1(tmp_path, "l", tar((b"a", SHARED), (b"b", LOWER_ONLY)), pool)
            up = stage1(tmp_path, "u", upper_tar, pool)
        known: dict[bytes, Chunk] = {}
        finals = []
        for i, spec in enumerate((low, up)):
            final = assemble_layer(spec, known, tmp_path / f"final-{i}", OPTS)
            final.complete()
            finals.append(final)
        return [low, up], finals

    specs, finals = cold()
    root = new_root()
    for spec in specs:
        root = apply_layer(root, spec.tree, "oci")
    blobs = [f.info for f in finals]
    cold_boot = io.BytesIO()
    write_bootstrap(cold_boot, OPTS.bootstrap(root, blobs))

    # Warm: the lower layer cold again, the upper one from its record alone.
    specs, finals = cold()
    snap = layerstate.snapshot(specs[1].tree, finals[1].info)
    record = layerstate.encode(finals[1].info, finals[1].stored, snap, finals[1].chunks_deduped)
    again = layerstate.snapshot(specs[1].tree, finals[1].info)
    deduped = finals[1].chunks_deduped
    assert record == layerstate.encode(finals[1].info, finals[1].stored, again, deduped)
    lower_chunks = {finals[0].info.blob_id: finals[0].stored}
    state = layerstate.decode(record, lambda blob_id, i: lower_chunks[blob_id][i])
    assert state.deduped == deduped == 4
    root = apply_layer(new_root(), specs[0].tree, "oci")
    root = apply_layer(root, state.tree, "oci")
    warm_boot = io.BytesIO()
    write_bootstrap(warm_boot, OPTS.bootstrap(root, [finals[0].info, state.blob]))
    assert warm_boot.getvalue() == cold_boot.getvalue()
    assert st.S_ISLNK(lookup_path(root, b"sym").mode)
    with pytest.raises(InvalidImage):
        layerstate.decode(record[:-9], lambda blob_id, i: lower_chunks[blob_id][i])


def lookup_path(root, path: bytes):
    from rafs.model import lookup

    return lookup(root, path)
