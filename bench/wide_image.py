"""The wide source image for bench/convert.py: a quarter-million small entries, generated.

Real Python and Node images carry 50k-250k entries, most under 4 KiB; this image has that
shape without downloading anything. Four layers, written deterministically (same recipe, same
bytes) and cached under ``CACHE/wide``:

  1 base     ~84k entries: 40 packages x 60 modules x 33 small text files, symlinks
  2 deps     ~84k entries in another tree; overwrites 1 % of layer 1's files
  3 app      ~84k entries in a third tree; 1 % hard links inside the layer
  4 cleanup  whiteouts of whole lower packages and of single files, two opaque directories
             re-populated, hard links to files of the layers below, and 2,000 new files

File bodies are slices of one random-word text (so they compress like source code, ~4x), 60 B
to 2.5 KiB, a few of 8-40 KiB. ``image.json`` is written last, as for the other bench images.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

from convert_image import EPOCH, Entry, cached_meta, log, write_layer

LAYOUT_VERSION = 1  # bump when the recipe changes: cached layers are then rewritten
SEED = 20261205
VOCAB = (
    "data value result index frame config layer image blob chunk node tree path import "
    "return def class self async await yield lambda none true false for while if else "
    "module package export const let function require string number object array map"
).split()


def _corpus(rng: random.Random, size: int = 4 << 20) -> bytes:
    """Random words in lines: what small source files compress like."""
    words: list[str] = []
    length = 0
    while length < size:
        line = " ".join(rng.choices(VOCAB, k=rng.randint(3, 12))) + "\n"
        words.append(line)
        length += len(line)
    return "".join(words).encode()[:size]


class _Bodies:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.corpus = _corpus(self.rng)

    def next(self) -> bytes:
        rng = self.rng
        size = rng.randint(8 << 10, 40 << 10) if rng.random() < 0.01 else rng.randint(60, 2560)
        start = rng.randrange(len(self.corpus) - size)
        return self.corpus[start : start + size]


def _tree(prefix: str, packages: int, bodies: _Bodies, links: float) -> Iterator[Entry]:
    """``packages`` x 60 modules x 33 files under ``prefix``; ``links`` of them hard links."""
    rng = bodies.rng
    yield Entry(prefix, kind="dir")
    for p in range(packages):
        pkg = f"{prefix}/pkg{p:03}"
        yield Entry(pkg, kind="dir")
        for m in range(60):
            mod = f"{pkg}/mod{m:02}"
            yield Entry(mod, kind="dir")
            first = ""
            for f in range(33):
                name = f"{mod}/f{f:02}.py"
                if first and rng.random() < links:
                    yield Entry(name, kind="hardlink", target=first)
                elif f == 32:
                    yield Entry(name, kind="symlink", target=f"f{f - 1:02}.py")
                else:
                    yield Entry(name, kind="file", data=bodies.next(), mode=0o644)
                    first = first or name


def _layer(index: int) -> Iterator[Entry]:
    bodies = _Bodies(SEED + index)
    rng = bodies.rng
    yield Entry("usr", kind="dir")
    yield Entry("usr/lib", kind="dir")
    if index == 1:
        yield from _tree("usr/lib/base", 42, bodies, 0.0)
    elif index == 2:
        yield from _tree("usr/lib/deps", 42, bodies, 0.0)
        for p in range(42):  # overwrite one module file in every lower module of 1 package
            for m in range(60):
                if rng.random() < 0.33:
                    name = f"usr/lib/base/pkg{p:03}/mod{m:02}/f{rng.randrange(32):02}.py"
                    yield Entry(name, kind="file", data=bodies.next())
    elif index == 3:
        yield from _tree("usr/lib/app", 42, bodies, 0.01)
    else:
        for p in range(0, 42, 7):  # whole lower packages go; one is emptied and refilled
            if p == 14:
                yield Entry(f"usr/lib/base/pkg{p:03}/.wh..wh..opq", kind="file")
                yield Entry(f"usr/lib/base/pkg{p:03}/new.txt", kind="file", data=bodies.next())
            else:
                yield Entry(f"usr/lib/base/.wh.pkg{p:03}", kind="file")
        for p in range(1, 42, 5):  # single files go
            yield Entry(f"usr/lib/deps/pkg{p:03}/mod07/.wh.f03.py", kind="file")
        yield Entry("usr/lib/deps/pkg040/mod10/.wh..wh..opq", kind="file")
        yield Entry("usr/lib/deps/pkg040/mod10/readme.txt", kind="file", data=bodies.next())
        yield Entry("usr/lib/app/pkg041/.wh..wh..opq", kind="file")
        yield Entry("usr/lib/app/pkg041/only.txt", kind="file", data=bodies.next())
        for i in range(200):  # hard links whose targets are in the layers below
            target = f"usr/lib/deps/pkg{i % 40:03}/mod{i % 60:02}/f{i % 31:02}.py"
            yield Entry(f"usr/lib/deps/linked{i:03}.py", kind="hardlink", target=target)
        yield from _tree("usr/lib/late", 1, bodies, 0.0)


def _entries(index: int) -> Iterator[Entry]:
    """Layer ``index``'s entries with parents first (as docker writes them)."""
    seen: set[str] = set()
    for e in _layer(index):
        parts = e.name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in seen:
                seen.add(parent)
                yield Entry(parent, kind="dir")
        if e.name not in seen or e.kind != "dir":
            seen.add(e.name)
            yield e


NAMES = ("base", "deps", "app", "cleanup")


def ensure_wide_image(cache: Path, rebuild: bool) -> tuple[Path, dict, bool]:
    """The wide image's directory, its ``image.json`` and whether it was built now."""
    root = cache / "wide"
    meta_path = root / "image.json"
    cached = None if rebuild else cached_meta(root, LAYOUT_VERSION)
    if cached is not None:
        return root, cached, False
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("*.tar.gz*"):
        old.unlink()
    facts = []
    for i, name in enumerate(NAMES, 1):
        log(f"writing wide layer {i} ({name})")
        f = write_layer(root / f"{i:02}-{name}.tar.gz", _entries(i))
        f["name"] = name
        facts.append(f)
    created = "2023-11-14T22:13:20Z"
    assert EPOCH == 1_700_000_000  # the date above
    config = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [f["diff_id"] for f in facts]},
        "history": [{"created": created, "created_by": f"wide layer {n}"} for n in NAMES],
    }
    meta = {
        "version": LAYOUT_VERSION,
        "kind": "wide",
        "layers": facts,
        "config": config,
        "merged_entries": _merged_count(),
    }
    tmp = meta_path.with_name("image.json.tmp")
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    tmp.rename(meta_path)
    return root, meta, True


def _merged_count() -> int:
    """Entries of the flattened image (OCI whiteouts applied), from the names alone."""
    paths: set[str] = set()
    for i in range(1, len(NAMES) + 1):
        for e in _entries(i):
            parent, _, base = e.name.rpartition("/")
            if base == ".wh..wh..opq":
                paths = {p for p in paths if not p.startswith(parent + "/")}
            elif base.startswith(".wh."):
                gone = f"{parent}/{base[4:]}" if parent else base[4:]
                paths = {p for p in paths if p != gone and not p.startswith(gone + "/")}
            else:
                paths.add(e.name)
    return len(paths)
