"""Images stored as files of an uncompressed tar: what docker-archive and oci-archive share.

Reading: ``scan`` walks the member headers once (never the data) and records where each
regular file's bytes lie; ``Section`` then reads one member in place, on its own file handle,
so nothing is extracted and blobs can be read from several threads. Names are normalised
(``./blobs/x`` and ``blobs/x`` are the same member); symlinks and hard links resolve to the
member they name. A tar that is cut short, compressed, or has a corrupt header raises
``InvalidArchive`` naming the file, before anything is read from it.

Writing: ``TarSink`` puts each blob once under ``blobs/<alg>/<hex>`` into a temporary file
(through ``tarwriter.open_tar_writer``: no record padding) that is renamed over the target
when the image is complete, with fixed metadata (mtime 0, uid/gid 0, no owner names) and a
fixed order, so the same image always gives the same bytes.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .digest import check_digest
from .errors import DigestMismatch, InvalidArchive, InvalidManifest, NotFound
from .model import MANIFEST_LIMIT, Descriptor, Image, Index, Opener
from .reference import Reference
from .tarwriter import open_tar_writer

SMALL_FILE_LIMIT = MANIFEST_LIMIT * 4  # index.json, manifest.json, configs read whole
_COMPRESSED = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"BZh": "bzip2",
               b"\xfd7zXZ\x00": "xz"}  # fmt: skip


@dataclass(frozen=True)
class Member:
    offset: int
    size: int


class Section(io.RawIOBase):
    """A byte range of a file, opened on its own handle (safe across threads)."""

    def __init__(self, path: Path, m: Member) -> None:
        super().__init__()
        self._f = open(path, "rb")
        self._f.seek(m.offset)
        self._left = m.size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._left <= 0:
            return 0
        n = self._f.readinto(memoryview(b)[: min(len(b), self._left)])
        self._left -= n or 0
        return n or 0

    def close(self) -> None:
        self._f.close()
        super().close()


def scan(path: Path, what: str) -> dict[str, Member]:
    """Regular files of the tar at ``path`` by normalised name; ``what`` names it in errors."""
    members: dict[str, Member] = {}
    links: dict[str, str] = {}
    try:
        with open(path, "rb") as f:
            _check_not_compressed(f.read(8), what)
            f.seek(0)
            with tarfile.open(fileobj=f, mode="r:") as tf:
                for info in tf:
                    name = norm(info.name)
                    if info.isfile():
                        members[name] = Member(info.offset_data, info.size)
                    elif info.issym():
                        links[name] = norm(str(PurePosixPath(name).parent / info.linkname))
                    elif info.islnk():
                        links[name] = norm(info.linkname)
                end = tf.offset
            # tarfile stops without a word at a cut or corrupt header after the first one, or
            # at the end of the file: what follows the last member must be the end-of-archive
            # marker, which every tar writer ends with (Go's reader would also take a file
            # that simply ends, but that is how a copy cut at a member boundary looks)
            f.seek(end)
            block = f.read(tarfile.BLOCKSIZE)
    except FileNotFoundError:
        raise NotFound(f"{what}: no such file") from None
    except IsADirectoryError:
        raise InvalidArchive(f"{what}: is a directory, not a tar file") from None
    except tarfile.TarError as e:
        if str(e) == "unexpected end of data":
            raise InvalidArchive(f"{what}: truncated tar archive (a member is cut short)") from None
        raise InvalidArchive(f"{what}: not an uncompressed tar archive ({e})") from None
    if not block:
        raise InvalidArchive(f"{what}: truncated tar archive (no end-of-archive marker)")
    if len(block) < tarfile.BLOCKSIZE:
        raise InvalidArchive(f"{what}: truncated tar archive (a header is cut short at {end})")
    if block.count(0) != tarfile.BLOCKSIZE:
        raise InvalidArchive(f"{what}: corrupt tar archive (invalid header at offset {end})")
    for name, target in links.items():
        for _ in range(16):  # symlink chains (legacy <id>/layer.tar -> ../<hex>.tar)
            target = links.get(target, target)
        if target in members:
            members[name] = members[target]
    return members


def _check_not_compressed(head: bytes, what: str) -> None:
    for magic, kind in _COMPRESSED.items():
        if head.startswith(magic):
            raise InvalidArchive(
                f"{what}: is {kind}-compressed; it must be an uncompressed tar "
                "(decompress it first)"
            )


def norm(name: str) -> str:
    """A member name as a relative path without ``.``/``..`` (``./a//b`` -> ``a/b``)."""
    parts: list[str] = []
    for p in PurePosixPath(name.lstrip("/")).parts:
        if p == "..":
            if parts:
                parts.pop()
        elif p != ".":
            parts.append(p)
    return "/".join(parts)


def open_member(path: Path, members: dict[str, Member], name: str) -> BinaryIO:
    """Member ``name`` read in place; FileNotFoundError when the archive has no such file."""
    m = members.get(norm(name))
    if m is None:
        raise FileNotFoundError(name)
    return io.BufferedReader(Section(path, m))


def read_small(path: Path, members: dict[str, Member], name: str, what: str) -> bytes:
    m = members.get(norm(name))
    if m is None:
        raise InvalidManifest(f"{what}: {name} is missing from the archive")
    if m.size > SMALL_FILE_LIMIT:
        raise InvalidManifest(f"{what}: {name} is too large")
    with Section(path, m) as f:
        return f.read()


class TarSink:
    """Base of the archive sinks: blobs go into a new tar, renamed into place by ``close``.

    Subclasses implement ``put_manifest`` and ``finish`` (the files written after the blobs).
    """

    jobs = 1  # a tar is written in sequence
    kind = "archive"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-")
        self._file = os.fdopen(fd, "wb")
        self._tar = open_tar_writer(self._file)
        self._written: set[str] = set()
        self._dirs: set[str] = set()

    @staticmethod
    def info(name: str, size: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uid, info.gid = size, 0, 0o644, 0, 0
        info.uname = info.gname = ""
        return info

    def blob_name(self, digest: str) -> str:
        algo, hexpart = check_digest(digest).split(":", 1)
        return f"blobs/{algo}/{hexpart}"

    def _mkdirs(self, name: str) -> None:
        parent = PurePosixPath(name).parent
        for d in reversed([*parent.parents][:-1]):  # outermost first, without "."
            self._mkdir(str(d))
        self._mkdir(str(parent))

    def _mkdir(self, d: str) -> None:
        if d in self._dirs:
            return
        info = self.info(d, 0)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        self._tar.addfile(info)
        self._dirs.add(d)

    def put_blob(self, desc: Descriptor, opener: Opener, origin: Reference | None = None) -> None:
        if desc.digest in self._written:
            return
        name = self.blob_name(desc.digest)
        self._mkdirs(name)
        with opener() as src:  # a verified stream (Image.open_blob's contract)
            self._tar.addfile(self.info(name, desc.size), src)
            if src.read(1):  # reaching EOF makes the source check its digest
                raise DigestMismatch(f"blob {desc.digest}: longer than {desc.size} bytes")
        self._written.add(desc.digest)

    def put_manifest(self, obj: Image | Index, tag: str | None, top: bool) -> None:
        raise NotImplementedError

    def add(self, name: str, data: bytes) -> None:
        self._tar.addfile(self.info(name, len(data)), io.BytesIO(data))

    def finish(self) -> None:
        """Write what follows the blobs (index.json…); raise if no image was written."""
        raise NotImplementedError

    def close(self, ok: bool = True) -> None:
        """End the archive; with ``ok`` rename it over ``path``, else drop it."""
        try:
            if ok:
                self.finish()
            self._tar.close()
            self._file.close()
            if ok:
                os.chmod(self._tmp, 0o644)
                os.replace(self._tmp, self.path)
        finally:
            self._file.close()
            Path(self._tmp).unlink(missing_ok=True)
