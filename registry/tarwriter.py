"""Tar archives that end right after the end-of-archive marker (two 512-byte zero blocks).

Spec: ../shared/spec/image.md §5.1, §5.2. Python's ``tarfile`` pads every archive it writes
to a 10,240-byte record. Go's ``archive/tar`` reader stops at the end-of-archive marker, and
Go tools that hash a layer while unpacking it (``nydusify check``, acceld, buildkit's differ)
never see the padding: their diff_id would differ from the OCI one (the SHA-256 of every byte)
and they reject the image. Go's writer never pads, so an archive that ends at the marker has
one diff_id for every reader. Every tar rconv writes goes through ``open_tar_writer``.
"""

from __future__ import annotations

import tarfile
from typing import BinaryIO

END_OF_ARCHIVE = bytes(2 * tarfile.BLOCKSIZE)


class _UnpaddedTarFile(tarfile.TarFile):
    def close(self) -> None:
        # TarFile.close without its record padding; the rest is what it does.
        if self.closed:
            return
        self.closed = True
        try:
            if self.mode in ("a", "w", "x"):
                self.fileobj.write(END_OF_ARCHIVE)
                self.offset += len(END_OF_ARCHIVE)
        finally:
            if not self._extfileobj:  # the stream wrapper tarfile made; never the caller's file
                self.fileobj.close()


def open_tar_writer(out: BinaryIO, format: int = tarfile.PAX_FORMAT) -> tarfile.TarFile:
    """A stream-mode tar writer over ``out`` (seekable or not) that ends at the marker."""
    return _UnpaddedTarFile.open(fileobj=out, mode="w|", format=format)
