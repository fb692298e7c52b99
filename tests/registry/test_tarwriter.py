"""Tars rconv writes end at the end-of-archive marker: what Go's reader consumes is all of it."""

from __future__ import annotations

import io
import tarfile

import pytest

from registry.tarwriter import END_OF_ARCHIVE, open_tar_writer
from tests.gotar import go_tar_digest


class _Pipe(io.RawIOBase):
    """A write-only, non-seekable sink (stdout, a socket)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.data += b
        return len(b)


def _entries(tar: tarfile.TarFile) -> None:
    d = tarfile.TarInfo("image")
    d.type, d.mode = tarfile.DIRTYPE, 0o755
    tar.addfile(d)
    f = tarfile.TarInfo("image/image.boot")
    f.size = 700
    tar.addfile(f, io.BytesIO(b"x" * 700))


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT])
def test_archive_ends_right_after_the_marker(fmt: int) -> None:
    out = _Pipe()
    with open_tar_writer(out, format=fmt) as tar:
        _entries(tar)
    data = bytes(out.data)
    assert len(data) == 512 + 512 + 1024 + len(END_OF_ARCHIVE)  # no record padding
    assert data.endswith(END_OF_ARCHIVE) and data[-1536:-1024] != bytes(512)
    assert go_tar_digest(io.BytesIO(data))[1] == len(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as back:
        assert back.getnames() == ["image", "image/image.boot"]
        assert back.extractfile("image/image.boot").read() == b"x" * 700


def test_the_go_reader_model_stops_where_python_padding_begins() -> None:
    """The check this module exists for can fail: Python's own padding is what Go skips."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        _entries(tar)
    padded = buf.getvalue()
    assert len(padded) == tarfile.RECORDSIZE
    assert go_tar_digest(io.BytesIO(padded))[1] == 512 + 512 + 1024 + 1024


def test_a_lone_zero_block_followed_by_data_is_an_error_as_in_go() -> None:
    with pytest.raises(ValueError, match="lone zero block"):
        go_tar_digest(io.BytesIO(bytes(512) + b"x" * 512))
