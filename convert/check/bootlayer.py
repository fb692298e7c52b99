"""The bootstrap layer of a Nydus image: find it, stream it, take ``image/image.boot`` out.

Spec: ../shared/spec/image.md §1 (bootstrap last), §5.1 (tar content: ``image/image.boot``
exactly, gzip), §5.2 (diff_id = SHA-256 of the uncompressed tar). The layer is read once as a
stream; its diff_id is computed on the way and the stored stream is read to EOF so the registry
layer verifies its digest. Nothing may follow the tar's end-of-archive marker: Go's reader
stops there, and a Go tool that hashes the layer while unpacking it gets another diff_id. Only
the bootstrap file itself is kept in memory (the RAFS readers take bytes).
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass, field

import zstandard

from convert.check.streams import Hashing, decompressed, drain
from convert.nydus import A_BOOTSTRAP, BOOTSTRAP_NAME, LEGACY_BOOTSTRAP_NAME
from registry.errors import RegistryError
from registry.model import Descriptor, Image


@dataclass
class BootstrapLayer:
    index: int  # position in the manifest's layers
    descriptor: Descriptor
    data: bytes | None = None  # the RAFS bootstrap
    diff_id: str = ""
    names: list[str] = field(default_factory=list)  # tar entries, in order
    problems: list[str] = field(default_factory=list)


def find_bootstrap(layers: list[Descriptor]) -> int | None:
    """Index of the bootstrap layer: the last one if annotated, else the only annotated one."""
    marked = [i for i, d in enumerate(layers) if d.annotations.get(A_BOOTSTRAP) == "true"]
    if layers and marked and marked[-1] == len(layers) - 1:
        return len(layers) - 1
    return marked[0] if len(marked) == 1 else None


def read_bootstrap_layer(image: Image, index: int) -> BootstrapLayer:
    """Stream layer ``index`` and extract its bootstrap; every problem is collected."""
    desc = image.layer_descriptors[index]
    out = BootstrapLayer(index, desc)
    legacy = None
    try:
        with image.open_blob(desc) as raw:
            stream, compression = decompressed(raw)
            if compression != "gzip":
                out.problems.append(f"the bootstrap layer is {compression}-compressed, not gzip")
            data = Hashing(stream)
            # Stream mode only calls read(); the stubs want a full file object.
            with tarfile.open(fileobj=data, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    out.names.append(member.name)
                    if member.name in (BOOTSTRAP_NAME, LEGACY_BOOTSTRAP_NAME) and member.isfile():
                        src = tar.extractfile(member)
                        assert src is not None
                        if member.name == BOOTSTRAP_NAME:
                            out.data = src.read()
                        else:
                            legacy = src.read()
                # Go's archive/tar stops after the two zero blocks at tar.offset, so a Go tool
                # hashing the layer as it unpacks it (nydusify check) never reads what follows.
                end_marker = tar.offset + 2 * tarfile.BLOCKSIZE
            drain(data)
            drain(raw)
            out.diff_id = data.digest()
            if data.size > end_marker:
                out.problems.append(
                    f"the bootstrap layer's tar has {data.size - end_marker} bytes after its "
                    "end-of-archive marker: Go readers (nydusify check) stop there and compute "
                    "another diff_id"
                )
    except (tarfile.TarError, EOFError, OSError, zstandard.ZstdError) as exc:
        out.problems.append(f"the bootstrap layer is not a readable tar: {exc}")
    except RegistryError as exc:
        out.problems.append(f"the bootstrap layer cannot be read: {exc}")
    if out.data is None:
        if legacy is not None:
            out.problems.append(
                f"the bootstrap is at {LEGACY_BOOTSTRAP_NAME!r}, not {BOOTSTRAP_NAME!r}"
            )
            out.data = legacy
        else:
            out.problems.append(f"the bootstrap layer has no regular file {BOOTSTRAP_NAME!r}")
    return out
