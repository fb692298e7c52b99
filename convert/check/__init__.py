"""``rconv check``: prove a Nydus image equivalent to its source image, without a Nydus daemon.

Modules: ``run`` (``run_check``, ``CheckOptions``), ``rules`` and ``index`` (manifest, config,
index and blob-table rules of image.md §17-§18), ``bootlayer`` (the bootstrap layer),
``blobs`` (blob access by id with Range requests, blob meta and TOC checks, ``--full``),
``lazy`` (every chunk read once, per-file SHA-256), ``reference`` (the source tree, an
independent model of containerd's layer apply), ``compare`` and ``report``.
"""

from convert.check.errors import CheckError, SourceError
from convert.check.report import CheckReport, Difference, PlatformResult, RuleResult
from convert.check.run import CheckOptions, run_check

__all__ = [
    "CheckError",
    "CheckOptions",
    "CheckReport",
    "Difference",
    "PlatformResult",
    "RuleResult",
    "SourceError",
    "run_check",
]
