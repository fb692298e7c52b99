"""What a conversion reports: per platform, per layer, per stage (``--output-json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class LayerReport:
    source_digest: str
    blob_digest: str
    blob_size: int
    chunks_stored: int
    chunks_deduped: int
    bytes_in: int
    seconds: float
    cached: bool = False  # taken from the build cache: not downloaded, not converted


@dataclass
class PlatformReport:
    platform: str
    source_digest: str
    target_digest: str
    layers: list[LayerReport] = field(default_factory=list)
    bootstrap_size: int = 0
    bootstrap_digest: str = ""  # the bootstrap layer's digest, as in the manifest
    stages: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    skipped: str | None = None  # why the image was passed through unchanged
    cache: dict[str, int] = field(default_factory=dict)  # hits, misses, bytes_not_pulled


@dataclass
class ConvertReport:
    source: str
    target: str
    target_digest: str = ""
    platforms: list[PlatformReport] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)
