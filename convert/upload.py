"""Early upload of final blobs, overlapping the network with the rest of the conversion.

Each final blob is pushed as soon as its layer is complete; the final push (blobs, config,
manifest) then finds the blobs present (HEAD) and sends config and manifest last. Blobs
without a manifest are invisible, so a failure later still leaves the target tag untouched
(image.md §18). Registry targets only: layouts and archives are written at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import BinaryIO

from registry.client import RegistryClient
from registry.medium import parse_spec
from registry.reference import Reference


class EarlyUpload:
    def __init__(self, target: str, client: RegistryClient, pool: Executor) -> None:
        spec = parse_spec(target)
        self.ref = spec.ref if spec.kind == "registry" else None
        self.client = client
        self.pool = pool
        self.futures: list[Future] = []

    def submit(
        self,
        digest: str,
        size: int,
        opener: Callable[[], BinaryIO],
        mount_from: Reference | None = None,
    ) -> None:
        """Upload one blob (``opener`` is called again on retries); ``mount_from`` names a
        repository of the same registry holding it (a build cache), mounted instead."""
        if self.ref is not None:
            self.futures.append(
                self.pool.submit(
                    self.client.upload_blob, self.ref, digest, size, opener, mount_from=mount_from
                )
            )

    def wait(self) -> None:
        """Every upload submitted so far has succeeded (or its error is raised)."""
        for future in self.futures:
            future.result()
