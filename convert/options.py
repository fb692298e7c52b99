"""The options of a conversion: one frozen object, built once by the command line or the API.

What decides the bytes of blobs and bootstraps is ``rafs`` (``rafs.options.RafsOptions``,
declared once with its defaults); the rest says what to convert, where to, and how fast.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from convert import __version__ as VERSION
from rafs.options import RafsOptions
from registry.model import Platform

BUILDER = f"rconv {VERSION}"  # the builder annotation of converted images

DEFAULT_PREFETCH = (b"/",)  # nydusd prefetches everything when no pattern is given
MAX_DEFAULT_JOBS = 8  # a busy layer holds a worker process of 100-200 MB on wide trees
SERVICE_JOBS = 2  # per task of `rconv serve`, whose workers convert several images at once
DEFAULT_CACHE_RECORDS = 200  # upstream's default and maximum
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # the container's own, with a cgroup namespace


def usable_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The CPUs this process may run on: its affinity (``taskset``, cpusets), lowered to a
    cgroup v2 CPU quota where one is set (``docker run --cpus``, Kubernetes CPU limits)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()
        cpus = min(cpus, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError, ZeroDivisionError):  # no file, "max", or unreadable
        pass
    return max(1, cpus)


# One more than the CPUs: with as many workers as cores, the last large layer runs alone while
# the other core idles (on 2 cores: the wide bench image -0.5 s, the full one +-0.1 s).
DEFAULT_JOBS = min(usable_cpus() + 1, MAX_DEFAULT_JOBS)


@dataclass(frozen=True)
class ConvertOptions:
    source: str
    target: str
    rafs: RafsOptions = field(default_factory=RafsOptions)
    platforms: tuple[Platform, ...] = ()  # empty: the host's platform
    all_platforms: bool = False
    merge_platform: bool = False  # one index with the OCI and the Nydus manifests (§9.3)
    chunk_dict: str | None = None  # "bootstrap:PATH", "registry:REF" (and nydusify forms)
    prefetch: tuple[bytes, ...] = DEFAULT_PREFETCH
    jobs: int = DEFAULT_JOBS  # layers converted at once; sizes every worker pool
    work_dir: Path | None = None
    keep_work_dir: bool = False
    max_layer_size: int | None = None  # refuse layers that decompress beyond this
    build_cache: str | None = None  # registry reference of the build cache image (§13)
    build_cache_max_records: int = DEFAULT_CACHE_RECORDS  # per platform and generation
    oci_ref: bool = False  # zran: reference the source's gzip layers (image.md §11)
