"""``rconv check``: prove a Nydus image equivalent to its source image, without a Nydus daemon.

Modules: ``run`` (``run_check``, ``CheckOptions``), ``rules`` and ``index`` (manifest, config,
index and blob-table rules of image.md §17-§18), ``bootlayer`` (the bootstrap layer),
``blobs`` (blob access by id with Range requests, blob meta and TOC checks, ``--full``),
``lazy`` (every chunk read once, per-file SHA-256), ``reference`` (the source tree, an
independent model of containerd's layer apply), ``compare`` and ``report``.
"""

from importlib import import_module

from convert.check.errors import CheckError, SourceError

# Loaded on first use: the CLI imports CheckError for every command, the checker only for
# `rconv check` and `convert --check`.
_LAZY = {
    "CheckReport": "report",
    "Difference": "report",
    "PlatformResult": "report",
    "RuleResult": "report",
    "CheckOptions": "run",
    "run_check": "run",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"convert.check.{module}"), name)


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
