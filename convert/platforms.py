"""Which manifests of a source to convert: the host's platform by default (image.md §9.1)."""

from __future__ import annotations

import platform as host

from convert import image as img
from convert.errors import ImageError
from registry.model import Image, Index, Platform

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}


def host_platform() -> Platform:
    machine = host.machine().lower()
    return Platform("linux", _ARCH.get(machine, machine))


def select(
    source: Image | Index, wanted: tuple[Platform, ...], every: bool, name: str
) -> list[tuple[Image, Platform | None]]:
    """(image, platform) pairs to convert; a single manifest is converted whatever its
    platform, an index's entries are matched against ``wanted`` (or taken all)."""
    if isinstance(source, Image):
        return [(source, img.platform_of(source))]
    wanted = wanted or (host_platform(),)
    chosen: list[tuple[Image, Platform | None]] = []
    for desc in source.manifests:
        plat = desc.platform
        if plat is None or plat.os == "unknown":  # attestation manifests and the like
            continue
        if every or any(w.matches(plat) for w in wanted):
            child = source.child(desc)
            if isinstance(child, Image):
                chosen.append((child, plat))
    if not chosen:
        names = ", ".join(str(p) for p in wanted)
        raise ImageError(f"{name}: no manifest for platform {names} in the index")
    return chosen
