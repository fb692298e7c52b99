"""A conversion task as data: what the service puts on the queue and a worker reads back.

A task is JSON (Celery's JSON serializer): the pinned source (``repo@digest``), the target,
the conversion options that change the output (``TaskOptions``), and the idempotency key
``sha256(source digest, target, options)``: the same image pushed twice under the same rules
is the same task. Registry credentials never travel in a task: each worker reads its own
Docker config, as ``rconv convert`` does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from convert.options import SERVICE_JOBS, ConvertOptions
from rafs.options import RafsOptions
from registry.model import Platform
from registry.options import RegistryOptions


@dataclass(frozen=True)
class TaskOptions:
    """The ``rconv convert`` options a service applies to every task (its rules)."""

    fs_version: int = 6
    chunk_size: int = 0x100000
    compressor: str = "zstd"
    platforms: tuple[str, ...] = ()  # empty: the worker host's platform
    all_platforms: bool = False
    build_cache: str | None = None  # a tagged registry reference
    plain_http: bool = False
    insecure: bool = False
    jobs: int = SERVICE_JOBS
    max_layer_size: int | None = None

    def __post_init__(self) -> None:
        RafsOptions(self.fs_version, self.chunk_size, self.compressor)  # validated once, here
        for text in self.platforms:
            Platform.parse(text)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaskOptions:
        return cls(**{**data, "platforms": tuple(data.get("platforms", ()))})


@dataclass(frozen=True)
class ConversionTask:
    id: str
    source: str  # repo@digest: what was pushed, whatever the tag points to later
    source_tag: str  # repo:tag as pushed, for people
    source_digest: str
    target: str
    options: TaskOptions = field(default_factory=TaskOptions)

    @property
    def key(self) -> str:
        return idempotency_key(self.source_digest, self.target, self.options)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "options": self.options.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConversionTask:
        return cls(**{**data, "options": TaskOptions.from_json(data["options"])})

    def convert_options(self) -> ConvertOptions:
        o = self.options
        return ConvertOptions(
            source=self.source,
            target=self.target,
            rafs=RafsOptions(o.fs_version, o.chunk_size, o.compressor),
            platforms=tuple(Platform.parse(p) for p in o.platforms),
            all_platforms=o.all_platforms,
            jobs=o.jobs,
            max_layer_size=o.max_layer_size,
            build_cache=o.build_cache,
        )

    def registry_options(self) -> RegistryOptions:
        """Credentials come from the worker's Docker config, as for ``rconv convert``."""
        return RegistryOptions(plain_http=self.options.plain_http, insecure=self.options.insecure)


def idempotency_key(source_digest: str, target: str, options: TaskOptions) -> str:
    text = json.dumps([source_digest, target, options.to_json()], sort_keys=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
