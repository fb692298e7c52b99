"""convert.image.write_bootstrap_layer: the same layer however the bootstrap is cut into
parts, and an error while a part is made reaches the caller."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import tarfile
from pathlib import Path

import pytest

from convert.image import write_bootstrap_layer

DATA = random.Random(3).randbytes(3 << 20) + bytes(1 << 20)


def _layer(tmp_path: Path, name: str, parts) -> tuple[tuple[str, str, int], bytes]:
    out = tmp_path / name
    return write_bootstrap_layer(len(DATA), iter(parts), out), out.read_bytes()


def test_parts_give_the_bytes_of_one_piece(tmp_path: Path) -> None:
    one, one_bytes = _layer(tmp_path, "one", [DATA])
    cut, cut_bytes = _layer(tmp_path, "cut", [DATA[:12345], bytearray(DATA[12345:]), b""])
    assert one == cut and one_bytes == cut_bytes
    digest, diff_id, size = one
    assert digest == "sha256:" + hashlib.sha256(one_bytes).hexdigest() and size == len(one_bytes)
    tar_bytes = gzip.decompress(one_bytes)
    assert diff_id == "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        assert tar.getnames() == ["image", "image/image.boot"]
        assert tar.extractfile("image/image.boot").read() == DATA  # type: ignore[union-attr]


def test_error_while_making_a_part_reaches_the_caller(tmp_path: Path) -> None:
    def parts():
        yield DATA[:1000]
        raise RuntimeError("chunk table broke")

    with pytest.raises(RuntimeError, match="chunk table broke"):
        write_bootstrap_layer(len(DATA), parts(), tmp_path / "bad")
