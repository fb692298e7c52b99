"""The Python API of rconv: what the command line does, as functions (docs/api.md).

    from convert import api

    report = api.convert(api.ConvertOptions(source="reg/app:1", target="reg/app:1-nydus"))
    checked = api.check(report.target, source=report.source)
    assert checked.ok

Every function takes its options as one frozen object (``ConvertOptions``, ``CheckOptions``,
``BuildOptions``, with the byte-changing format options in ``RafsOptions``), and registry
access as ``RegistryOptions`` (credentials otherwise come from the Docker config, as for the
command line). Errors: ``ConvertError`` (a layer, an image or a dictionary that cannot be used),
``RafsError`` (bad layer or bootstrap bytes), ``RegistryError`` (registry, layout and archive
problems) and ``OSError`` (files); each message is one line naming what is at fault. A
conversion that fails leaves the target tag untouched.

This module only gathers and forwards: the command line calls the same functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convert.build import BuildOptions, BuildResult, load_bootstrap
from convert.check.errors import CheckError
from convert.check.report import CheckReport
from convert.check.run import CheckOptions, run_check
from convert.errors import ConvertError, ImageError, LayerError
from convert.gcpause import paused_gc
from convert.options import ConvertOptions
from convert.pipeline import convert as _convert
from convert.progress import Progress, Silent
from convert.report import ConvertReport
from rafs.errors import RafsError
from rafs.options import RafsOptions
from registry.client import RegistryClient
from registry.errors import RegistryError
from registry.model import Platform
from registry.options import RegistryOptions

__all__ = [
    "BuildOptions",
    "BuildResult",
    "CheckError",
    "CheckOptions",
    "CheckReport",
    "ConvertError",
    "ConvertOptions",
    "ConvertReport",
    "ImageError",
    "LayerError",
    "Platform",
    "Progress",
    "RafsError",
    "RafsOptions",
    "RegistryError",
    "RegistryOptions",
    "build",
    "check",
    "convert",
    "inspect",
]


def convert(
    options: ConvertOptions,
    registry: RegistryOptions | None = None,
    progress: Progress | None = None,
) -> ConvertReport:
    """Convert ``options.source`` into a Nydus image at ``options.target``.

    Sources and targets are registry references, ``oci:DIR[:TAG]`` layouts or archives (see
    the README). Blobs are pushed first, the manifest or index last. Returns the report that
    ``--output-json`` writes (digests, sizes, dedup counts, stage times). ``progress`` receives
    log lines and per-layer progress; the default is silent.

    Raises ConvertError, RafsError, RegistryError or OSError; the target tag is then untouched.
    """
    client = RegistryClient(registry or RegistryOptions())
    return _convert(options, client, progress or Silent())


@paused_gc()
def check(
    target: str,
    source: str | None = None,
    options: CheckOptions | None = None,
    registry: RegistryOptions | None = None,
) -> CheckReport:
    """Prove the Nydus image ``target`` equivalent to the OCI image ``source`` (when given):
    every manifest and config rule, the bootstrap's invariants, each blob's chunk table and
    TOC, and every path's metadata and content. ``report.ok`` is the verdict and
    ``report.render()`` the lines ``rconv check`` prints.

    Raises CheckError when the check cannot run at all (an unreadable source layer), and
    RegistryError or OSError when an image cannot be read.
    """
    client = RegistryClient(registry or RegistryOptions())
    return run_check(target, source, client, options or CheckOptions())


@paused_gc()
def build(
    source: Path,
    bootstrap: Path,
    blob_dir: Path,
    options: BuildOptions | None = None,
    parent: Path | None = None,
    chunk_dict: Path | None = None,
) -> BuildResult:
    """Build one layer (a directory, ``.tar``, ``.tar.gz`` or ``.tar.zst``) into the bootstrap
    file ``bootstrap`` and a blob ``blob_dir/<blob id>`` (none when the layer stores no chunk).

    ``parent`` applies the layer onto an earlier build's bootstrap and stores only chunks it
    lacks; ``chunk_dict`` is a bootstrap whose chunks are referenced instead of stored.
    Raises RafsError (bad input, incompatible parent or dictionary) or OSError.
    """
    from convert.build import build as _build

    return _build(source, bootstrap, blob_dir, options or BuildOptions(), parent, chunk_dict)


@paused_gc()
def inspect(bootstrap: Path) -> dict[str, Any]:
    """The superblock, blob table and every node of a bootstrap, as ``rconv inspect --json``
    prints them. Raises RafsError (naming the file) or OSError."""
    from convert.inspect import describe

    return describe(bootstrap.read_bytes(), load_bootstrap(bootstrap))
