"""The operator's rules: which pushed images become tasks, and with which target and options.

As acceld's ``converter.rules`` (goharbor/acceleration-service ``pkg/adapter/rule.go``): the
target is the source tag plus ``target_suffix`` (``-nydus``); a source whose tag already ends
with the suffix is skipped (it is our own output), and so is the ``build_cache_tag`` (the
cache image that conversions push to the target repository). A source without a tag has no
target to derive and is skipped. Sources that are already Nydus images are recognised by the
worker, which reads the manifest (a webhook does not carry it).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from convert.serve.payload import Pushed
from convert.serve.task import ConversionTask, TaskOptions

DEFAULT_SUFFIX = "-nydus"


@dataclass(frozen=True)
class Skipped:
    source: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"source": self.source, "reason": self.reason}


@dataclass(frozen=True)
class Rules:
    target_suffix: str = DEFAULT_SUFFIX
    build_cache_tag: str | None = None
    options: TaskOptions = field(default_factory=TaskOptions)

    def skip_reason(self, pushed: Pushed) -> str | None:
        """Why ``pushed`` is not converted, or None."""
        tag = pushed.ref.tag
        if not tag:
            return "pushed without a tag: no target tag to derive"
        if tag.endswith(self.target_suffix):
            return f"already converted (the tag ends with {self.target_suffix})"
        if self.build_cache_tag and tag == self.build_cache_tag:
            return "the build cache image"
        return None

    def task(self, pushed: Pushed, digest: str) -> ConversionTask:
        """The task converting ``pushed`` (not skipped), whose manifest digest is ``digest``."""
        ref = pushed.ref
        assert ref.tag is not None
        target = ref.with_tag(ref.tag + self.target_suffix)
        options = self.options
        if self.build_cache_tag:
            cache = str(ref.with_tag(self.build_cache_tag))
            options = TaskOptions.from_json({**options.to_json(), "build_cache": cache})
        return ConversionTask(
            id=str(uuid.uuid4()),
            source=f"{ref.name}@{digest}",
            source_tag=f"{ref.name}:{ref.tag}",
            source_digest=digest,
            target=str(target),
            options=options,
        )
