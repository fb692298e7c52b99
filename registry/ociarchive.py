"""The oci-archive medium: an OCI image layout inside an uncompressed tar,
``oci-archive:FILE[:TAG]``, as BuildKit (``--output type=oci,dest=FILE``), buildah
(``push … oci-archive:FILE``) and skopeo write it.

Reading: the member headers are scanned once (``tarlayout.scan``; names with or without a
leading ``./``), then the layout rules of ``layout.py`` (``oci-layout`` version,
``index.json``, TAG = the ``org.opencontainers.image.ref.name`` annotation, the only entry
without TAG) run over the archive's members, and blobs are read in place as verified streams.
Nothing is unpacked. Nested indexes (multi-platform images) work as in a layout directory.

Writing: a new archive holding exactly the written image or index: ``blobs/<alg>/<hex>``
(each digest once, in the order ``transfer.write`` sends them), then ``index.json`` (one
entry, tagged with TAG when given) and ``oci-layout``. Fixed metadata and order make the
bytes deterministic. An existing FILE is replaced (as skopeo does), atomically: the archive
is written to a temporary file renamed over FILE once complete.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, BinaryIO

from . import mediatype as mt
from .build import dumps
from .errors import InvalidManifest
from .layout import LAYOUT_FILE, index_entry, open_layout_files
from .model import Image, Index
from .tarlayout import TarSink, open_member, scan

KIND = "oci-archive"


def open_oci_archive(path: str | os.PathLike[str], tag: str | None = None) -> Image | Index:
    """The image or index of the archive at ``path`` tagged ``tag`` (or its only entry)."""
    path = Path(path)
    where = f"{KIND}:{path}"
    members = scan(path, where)

    def open_file(name: str) -> BinaryIO:
        return open_member(path, members, name)

    name = where + (f":{tag}" if tag else "")
    return open_layout_files(open_file, tag, name, where, f"{KIND}:FILE:TAG")


class OciArchiveSink(TarSink):
    """Writes one image or index into a new oci-archive; ``close`` renames it into place."""

    kind = KIND

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self._index: dict[str, Any] | None = None

    def put_manifest(self, obj: Image | Index, tag: str | None, top: bool) -> None:
        raw = obj.raw_manifest()
        self.put_blob(obj.descriptor, lambda: io.BytesIO(raw))
        if top:
            self._index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                           "manifests": [index_entry(obj, tag)]}  # fmt: skip

    def finish(self) -> None:
        if self._index is None:
            raise InvalidManifest(f"{KIND}:{self.path}: no image was written")
        self.add("index.json", dumps(self._index))
        self.add("oci-layout", dumps(LAYOUT_FILE))
