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
from typing import Protocol

END_OF_ARCHIVE = bytes(2 * tarfile.BLOCKSIZE)


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _UnpaddedTarFile(tarfile.TarFile):
    def close(self) -> None:
        # TarFile.close without its record padding; the rest is what it does. The stubs
        # declare neither ``closed``'s type nor the private ``_extfileobj``.
        if self.closed:  # type: ignore[has-type]
            return
        self.closed = True
        try:
            if self.mode in ("a", "w", "x"):
                self.fileobj.write(END_OF_ARCHIVE)
                self.offset += len(END_OF_ARCHIVE)
        finally:
            if not self._extfileobj:  # type: ignore[attr-defined]  # tarfile's own stream wrapper
                self.fileobj.close()


def open_tar_writer(out: Writable, format: int = tarfile.PAX_FORMAT) -> tarfile.TarFile:
    """A stream-mode tar writer over ``out`` (seekable or not) that ends at the marker."""
    # Stream mode only calls write(); the stubs want a full file object.
    return _UnpaddedTarFile.open(fileobj=out, mode="w|", format=format)  # type: ignore[call-overload]
