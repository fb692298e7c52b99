"""Which manifests of the target to check, and the rules of a target index.

Spec: ../shared/spec/image.md §3.3 (artifactType, legacy os.features), §9 (platform
selection, plain multi-platform and merge-platform indexes), §17 (parse rule: an index entry
is the Nydus image when it has the Nydus artifactType, the legacy os feature, or a last layer
that is an annotated bootstrap), §18.7 and §18.9.
"""

from __future__ import annotations

import platform as host
from dataclasses import dataclass

from convert.check.errors import CheckError
from convert.check.report import WARNING, RuleResult
from convert.nydus import A_BOOTSTRAP, MANIFEST_ARTIFACT, PLATFORM_FEATURE
from registry import mediatype as mt
from registry.model import Descriptor, Image, Index, Platform


def host_platform() -> Platform:
    machine = host.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)
    return Platform("linux", arch)


def is_nydus(image: Image) -> bool:
    """A manifest whose layers include an annotated bootstrap (the last one, normally)."""
    return any(d.annotations.get(A_BOOTSTRAP) == "true" for d in image.layer_descriptors)


def _features(desc: Descriptor) -> list[str]:
    plat = desc.raw.get("platform")
    return list(plat.get("os.features") or []) if isinstance(plat, dict) else []


def _marked(desc: Descriptor) -> bool:
    return desc.raw.get("artifactType") == MANIFEST_ARTIFACT or PLATFORM_FEATURE in _features(desc)


@dataclass
class Selected:
    image: Image
    platform: Platform | None


def select(
    top: Image | Index, platforms: tuple[Platform, ...], all_platforms: bool
) -> tuple[list[RuleResult], list[Selected]]:
    """(index rules, Nydus images to check). A single manifest is checked whatever its
    platform (as upstream does); an index yields its Nydus entry for each wanted platform."""
    if isinstance(top, Image):
        cfg = top.config
        plat = Platform(cfg["os"], cfg["architecture"], cfg.get("variant")) if (
            cfg.get("os") and cfg.get("architecture")
        ) else None  # fmt: skip
        return [], [Selected(top, plat)]
    rules = [
        RuleResult("index-media-type", "image.md §2, §18.9"),
        RuleResult("index-platforms", "image.md §9.2, §9.3, §18.7"),
        RuleResult("index-os-features", "image.md §3.3", level=WARNING),
        RuleResult("index-merge-platform", "image.md §9.3"),
        RuleResult("index-nydus-entry", "image.md §17"),
    ]
    media, plats, features, merge, found = rules
    if "mediaType" not in top.manifest:
        media.problems.append("the index has no top-level mediaType")
    entries: list[tuple[int, Descriptor, Image, bool]] = []
    for i, d in enumerate(top.manifests):
        p = d.platform
        if p is None or not p.os or not p.architecture:
            plats.problems.append(f"manifest {i} ({d.digest}) has no complete platform")
            continue
        if p.os == "unknown":
            continue  # attestations and other artifacts
        if PLATFORM_FEATURE in _features(d):
            features.problems.append(f"manifest {i} carries the legacy os.features marker")
        if not mt.is_image(d.media_type):
            continue
        child = top.child(d)
        if isinstance(child, Image):
            entries.append((i, d, child, _marked(d) or is_nydus(child)))
    for i, d, child, nydus in entries:
        if not nydus:
            continue
        plat = d.platform
        assert plat is not None
        plain = [
            j for j, e, _, other in entries
            if not other and e.platform is not None and plat.matches(e.platform)
        ]  # fmt: skip
        if plain:  # a merge-platform ("dual") index: OCI and Nydus manifests side by side
            merge.problems += [
                f"OCI manifest {j} comes after Nydus manifest {i}" for j in plain if j > i
            ]
            if d.raw.get("artifactType") != MANIFEST_ARTIFACT:
                merge.problems.append(f"Nydus manifest {i} has no artifactType {MANIFEST_ARTIFACT}")
            if child.config_descriptor.media_type != mt.NYDUS_CONFIG:
                merge.problems.append(f"Nydus manifest {i}'s config is not {mt.NYDUS_CONFIG}")
    wanted = [] if all_platforms else list(platforms) or [host_platform()]
    selected: list[Selected] = []
    for _, d, child, nydus in entries:
        if nydus and (all_platforms or any(w.matches(d.platform) for w in wanted)):  # type: ignore[arg-type]
            if all(s.image.digest != child.digest for s in selected):
                selected.append(Selected(child, d.platform))
    for w in wanted:
        if not any(s.platform is not None and w.matches(s.platform) for s in selected):
            found.problems.append(f"no Nydus manifest for platform {w}")
    if not selected and all_platforms:
        found.problems.append("the index holds no Nydus manifest")
    return rules, selected


def source_for(source: Image | Index, target: Selected) -> Image:
    """The source image matching a target platform (a single source manifest always does)."""
    if isinstance(source, Image):
        return source
    plat = target.platform
    if plat is None:
        cfg = target.image.config
        if not cfg.get("os") or not cfg.get("architecture"):
            raise CheckError("the target has no platform to pick the source manifest by")
        plat = Platform(cfg["os"], cfg["architecture"], cfg.get("variant"))
    return source.image_for(plat)
