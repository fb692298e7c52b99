"""Writing an image or index to any medium, in the documented order, each digest once.

Order (what a registry needs so that no manifest ever points at a missing blob, see
``../shared/spec/image.md`` §18 item 10): all layer blobs (in parallel, bounded by the sink's
``jobs``), then config blobs, then the manifests of an index's children (by digest), then the
top manifest, under its tag, last. A blob shared by several images is written once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Protocol

from . import mediatype as mt
from .model import Descriptor, Image, Index, Opener
from .reference import Reference


class Sink(Protocol):
    """What a medium implements to be written to.

    ``put_blob`` gets an opener of a *verified* stream (``Image.open_blob``'s contract: size and
    digest checked at EOF), so a sink copies without hashing again; it must read to EOF.
    """

    jobs: int

    def put_blob(self, desc: Descriptor, opener: Opener, origin: Reference | None) -> None: ...

    def put_manifest(self, obj: Image | Index, tag: str | None, top: bool) -> None: ...


def walk(obj: Image | Index) -> list[Image | Index]:
    """Every manifest reachable from ``obj``, children before parents (``obj`` last)."""
    out: list[Image | Index] = []
    seen: set[str] = set()

    def visit(o: Image | Index) -> None:
        if isinstance(o, Index):
            for child in o.children():
                visit(child)
        if o.digest not in seen:
            seen.add(o.digest)
            out.append(o)

    visit(obj)
    return out


def parallel(jobs: int, tasks: Iterable[Callable[[], object]]) -> None:
    """Run ``tasks`` on at most ``jobs`` threads; the first failure cancels what has not begun."""
    tasks = list(tasks)
    if jobs <= 1 or len(tasks) <= 1:
        for t in tasks:
            t()
        return
    with ThreadPoolExecutor(max_workers=min(jobs, len(tasks))) as pool:
        futures = [pool.submit(t) for t in tasks]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in pending:
            f.cancel()
        for f in futures:
            if f.done() and not f.cancelled() and f.exception() is not None:
                raise f.exception()  # type: ignore[misc]


def write(obj: Image | Index, sink: Sink, tag: str | None = None) -> Descriptor:
    """Write ``obj`` and everything it references to ``sink``; returns its descriptor."""
    manifests = walk(obj)
    layers: dict[str, tuple[Descriptor, Image]] = {}
    configs: dict[str, tuple[Descriptor, Image]] = {}
    for m in manifests:
        if isinstance(m, Image):
            for d in m.layer_descriptors:
                if not mt.is_foreign(d.media_type):  # their bytes are not ours to copy
                    layers.setdefault(d.digest, (d, m))
            configs.setdefault(m.config_descriptor.digest, (m.config_descriptor, m))
    for digest in layers:
        configs.pop(digest, None)

    def blob_task(d: Descriptor, img: Image) -> Callable[[], None]:
        origin = getattr(img, "origin", None)
        return lambda: sink.put_blob(d, lambda: img.open_blob(d), origin)

    parallel(sink.jobs, (blob_task(d, img) for d, img in layers.values()))
    parallel(sink.jobs, (blob_task(d, img) for d, img in configs.values()))
    for m in manifests[:-1]:
        sink.put_manifest(m, None, False)
    sink.put_manifest(obj, tag, True)
    return obj.descriptor
