"""The realistic source image for bench/convert.py, built once and cached.

Full image (5 layers, ~40k tar entries, ~1 GB uncompressed):

  1 base      Debian bookworm ``debootstrap --variant=minbase --include=python3``
  2 numeric   numpy, scipy, pandas installed with pip under /usr/local/lib/python3.11/site-packages
  3 packages  the rest of a pinned pip set (sympy, boto3, django, matplotlib, scikit-learn, ...)
  4 app       generated sources, incompressible data with a hard link and a duplicate, a
              symlink, and files overwriting lower ones (/etc/passwd, a site-packages module)
  5 cleanup   whiteouts (every /usr/share/doc package, every site-packages ``tests`` dir,
              apt caches and logs) and opaque dirs (/var/lib/apt/lists, /usr/share/locale,
              numpy's include dir) re-populated with a little content

``--quick`` drops the Debian base and installs a small pip set, keeping layers 2-5.

Cache layout under CACHE: ``debs/`` (debootstrap's package cache) and ``pip/`` (pip's HTTP
cache, when it downloads) are kept across ``--rebuild``; ``full/`` and ``quick/`` hold the
source trees (``rootfs/``, ``site/``), the layers (``NN-name.tar.gz``) and ``image.json``,
written last.

Layers are written deterministically: entries in path order, mtimes clamped to ``EPOCH``,
numeric owners without names, PAX headers only where needed, gzip level 6 with a zero header
mtime and no file name. The same trees therefore give byte-identical layers.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

LAYOUT_VERSION = 2  # bump when the layer recipe changes: cached layers are then rewritten
EPOCH = 1_700_000_000
PY = "python3.11"  # the Debian base's python: the site-packages tree goes where it looks
SP = f"usr/local/lib/{PY}/site-packages"
SUITE = "bookworm"
GZIP_LEVEL = 6  # what docker and containerd use by default (Go's gzip.DefaultCompression)
COPY_BUF = 1 << 20

FULL_PACKAGES = (
    "ansible-core==2.19.14 asgiref==3.13.0 babel==2.19.0 boto3==1.44.8 botocore==1.44.8 "
    "cffi==2.1.1 cloudpickle==3.1.3 contourpy==1.3.3 cryptography==50.0.2 cycler==0.12.1 "
    "django==5.2.19 fonttools==4.68.0 jinja2==3.1.6 jmespath==1.1.0 joblib==1.6.0 "
    "kiwisolver==1.5.1 markupsafe==3.0.4 matplotlib==3.11.2 mpmath==1.3.0 narwhals==2.29.0 "
    "networkx==3.6.1 numpy==2.4.6 packaging==26.4 pandas==3.1.1 pillow==13.0.0 "
    "pycparser==3.12 pyparsing==3.3.3 python-dateutil==2.9.0.post0 pyyaml==6.0.4 "
    "resolvelib==1.2.1 s3transfer==0.19.3 scikit-learn==1.9.1 scipy==1.17.1 six==1.17.0 "
    "sqlparse==0.6.1 sympy==1.14.0 threadpoolctl==3.8.0 urllib3==2.8.0"
).split()
QUICK_PACKAGES = "numpy==2.4.6 jinja2==3.1.6 markupsafe==3.0.4 pyyaml==6.0.4 six==1.17.0".split()
NUMERIC = ("numpy", "scipy", "pandas")  # top-level names (and their .libs/.dist-info) in layer 2


@dataclass
class Entry:
    """One tar member: taken from a host path (``src``) or synthetic (``kind``)."""

    name: str  # path in the image, relative, no trailing slash
    src: Path | None = None
    kind: str = "file"  # synthetic only: "dir", "file", "symlink", "hardlink"
    data: bytes = b""
    target: str = ""  # symlink target or hard link name
    mode: int = 0o644


@dataclass
class LayerSpec:
    name: str
    created_by: str
    entries: list[Entry]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ source trees


def debian_mirror() -> str:
    """The bookworm mirror configured for apt (one-line or deb822 sources)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1)
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[-2] == SUITE:
                return parts[-3] if not parts[1].startswith("[") else parts[2]
    return "http://deb.debian.org/debian"


def _unmount_under(path: Path) -> None:
    """An interrupted debootstrap can leave proc/sys mounted in the target: never rmtree them."""
    prefix = str(path.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for m in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", m], check=False)


def _fresh(path: Path) -> Path:
    """``path.tmp``, emptied: trees are built there and renamed into place when complete."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        _unmount_under(tmp)
        shutil.rmtree(tmp)
    return tmp


def build_rootfs(dest: Path, cache: Path) -> None:
    if shutil.which("debootstrap") is None:
        raise SystemExit("debootstrap is missing: apt-get install debootstrap")
    if os.geteuid() != 0:
        raise SystemExit("debootstrap needs root (or use --quick)")
    tmp = _fresh(dest)
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    mirror = debian_mirror()
    log(f"debootstrap --variant=minbase {SUITE} from {mirror} (a few minutes)")
    argv = ["debootstrap", "--variant=minbase", "--include=python3",
            f"--cache-dir={debs}", SUITE, str(tmp), mirror]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    _unmount_under(tmp)
    if proc.returncode != 0:
        raise SystemExit(f"debootstrap failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    tmp.rename(dest)


def build_site(dest: Path, cache: Path, packages: list[str]) -> None:
    tmp = _fresh(dest)
    log(f"pip install --target ({len(packages)} pinned packages)")
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-warn-script-location", "--cache-dir", str(cache / "pip"),
            "--target", str(tmp), *packages]  # fmt: skip
    subprocess.run(argv, check=True)
    tmp.rename(dest)


# ------------------------------------------------------------------ entries


def _sorted_dir(path: Path) -> list[os.DirEntry]:
    with os.scandir(path) as it:
        return sorted(it, key=lambda d: d.name)


def walk(
    root: Path, prefix: str, skip: Callable[[str], bool] = lambda rel: False
) -> Iterator[Entry]:
    """Entries for everything below ``root`` (not root itself), parents before children."""
    stack = [(root, "")]
    while stack:
        path, rel = stack.pop()
        children = []
        for d in _sorted_dir(path):
            r = f"{rel}/{d.name}" if rel else d.name
            if skip(r):
                continue
            yield Entry(f"{prefix}/{r}" if prefix else r, Path(d.path))
            if d.is_dir(follow_symlinks=False):
                children.append((Path(d.path), r))
        # depth-first in name order; the final per-layer sort fixes the order anyway
        stack.extend(reversed(children))


def _dir(name: str, mode: int = 0o755) -> Entry:
    return Entry(name, kind="dir", mode=mode)


def _file(name: str, data: bytes, mode: int = 0o644) -> Entry:
    return Entry(name, kind="file", data=data, mode=mode)


def with_parents(entries: Iterable[Entry]) -> list[Entry]:
    """Add a directory entry for every missing parent, then sort in path order."""
    out = {e.name: e for e in entries}
    for name in list(out):
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            out.setdefault(parent, _dir(parent))
    return sorted(out.values(), key=lambda e: e.name.split("/"))


def _top_level(name: str) -> str:
    return re.split(r"[.\-]", name, maxsplit=1)[0].lower()


def site_entries(site: Path, numeric: bool) -> list[Entry]:
    """Layer 2 (``numeric``) or 3: site-packages split by top-level name; bin, share go to
    /usr/local."""
    entries: list[Entry] = []
    for d in _sorted_dir(site):
        if d.name in ("bin", "share"):
            if not numeric:
                entries.append(Entry(f"usr/local/{d.name}", Path(d.path)))
                entries.extend(walk(Path(d.path), f"usr/local/{d.name}"))
            continue
        if (_top_level(d.name) in NUMERIC) != numeric:
            continue
        entries.append(Entry(f"{SP}/{d.name}", Path(d.path)))
        if d.is_dir(follow_symlinks=False):
            entries.extend(walk(Path(d.path), f"{SP}/{d.name}"))
    return with_parents(entries)


def base_entries(rootfs: Path) -> list[Entry]:
    def skip(rel: str) -> bool:
        top, _, rest = rel.partition("/")
        if top in ("dev", "proc", "sys") and rest:  # runtime mounts: empty in images
            return True
        return rel.startswith("var/cache/apt/archives/") and rel.endswith(".deb")

    return with_parents(walk(rootfs, "", skip))


def _words(rng: random.Random, n: int) -> str:
    vocab = "data value result index frame config layer image blob chunk node tree path".split()
    return " ".join(rng.choice(vocab) for _ in range(n))


def app_entries(rootfs: Path | None, site: Path) -> list[Entry]:
    rng = random.Random(20240601)
    entries: list[Entry] = []
    for p in range(20):
        for m in range(15):
            body = "".join(
                f"def f{i}(x):\n    '''{_words(rng, 12)}'''\n"
                f"    return x * {i} + {rng.randint(0, 999)}\n\n"
                for i in range(rng.randint(5, 60))
            )
            entries.append(_file(f"app/src/pkg{p:02}/mod{m:02}.py", body.encode()))
    entries.append(_file("app/src/main.py", b"#!/usr/bin/env python3\nprint('bench app')\n", 0o755))
    blob = rng.randbytes(4 << 20)  # incompressible, chunk-aligned duplicate below
    entries.append(_file("app/data/model.bin", blob))
    entries.append(Entry("app/data/model.hardlink", kind="hardlink", target="app/data/model.bin"))
    entries.append(_file("app/data/model-copy.bin", blob))
    entries.append(Entry("usr/local/bin/app", kind="symlink", target="/app/src/main.py"))
    if rootfs is not None:  # overwrite files of the base layer
        for name, line in (("etc/passwd", "app:x:1000:1000::/app:/bin/sh\n"),
                           ("etc/group", "app:x:1000:\n")):  # fmt: skip
            entries.append(_file(name, (rootfs / name).read_bytes() + line.encode()))
    for rel in ("six.py", "yaml/__init__.py", "jinja2/__init__.py"):  # overwrite a package file
        if (site / rel).is_file():
            entries.append(_file(f"{SP}/{rel}", (site / rel).read_bytes() + b"\n# patched\n"))
            break
    return with_parents(entries)


def cleanup_entries(rootfs: Path | None, site: Path) -> list[Entry]:
    entries: list[Entry] = []

    def whiteout(name: str) -> None:
        parent, _, base = name.rpartition("/")
        entries.append(_file(f"{parent}/.wh.{base}" if parent else f".wh.{base}", b""))

    def opaque(name: str, keep: Iterable[Entry] = ()) -> None:
        entries.append(_file(f"{name}/.wh..wh..opq", b""))
        entries.extend(keep)

    if rootfs is not None:
        for d in _sorted_dir(rootfs / "usr/share/doc"):
            whiteout(f"usr/share/doc/{d.name}")
        for rel in (
            "var/cache/apt/pkgcache.bin",
            "var/cache/apt/srcpkgcache.bin",
            "var/log/dpkg.log",
            "var/log/alternatives.log",
            "var/log/bootstrap.log",
            "var/cache/debconf/templates.dat-old",
            "var/cache/debconf/config.dat-old",
        ):
            if (rootfs / rel).exists():
                whiteout(rel)
        if (rootfs / "var/lib/apt/lists").is_dir():
            opaque("var/lib/apt/lists", [_dir("var/lib/apt/lists/partial", 0o700)])
        if (rootfs / "usr/share/locale/locale.alias").is_file():
            alias = Entry("usr/share/locale/locale.alias", rootfs / "usr/share/locale/locale.alias")
            opaque("usr/share/locale", [alias])
    # every top-most "tests" directory of the python packages
    for entry in walk(site, SP, skip=lambda rel: "/tests/" in f"/{rel}"):
        if entry.name.endswith("/tests") and entry.src is not None and entry.src.is_dir():
            whiteout(entry.name)
    includes = sorted(p for p in (site / "numpy").rglob("include") if p.is_dir())
    if includes:
        rel = includes[0].relative_to(site).as_posix()
        opaque(f"{SP}/{rel}", [_file(f"{SP}/{rel}/README", b"headers removed\n")])
    return with_parents(entries)


# ------------------------------------------------------------------ writing layers


class _HashingWriter:
    def __init__(self, inner) -> None:
        self.inner, self.sha, self.size = inner, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.inner.write(data)

    def flush(self) -> None:
        self.inner.flush()


def _tarinfo(tf: tarfile.TarFile, e: Entry) -> tarfile.TarInfo | None:
    if e.src is not None:
        ti = tf.gettarinfo(str(e.src), e.name)  # hard links: by inode, within this layer
        if ti is None:  # sockets
            return None
    else:
        ti = tarfile.TarInfo(e.name)
        ti.mode = e.mode
        ti.type = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE,
                   "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[e.kind]  # fmt: skip
        ti.linkname = e.target
        ti.size = len(e.data) if e.kind == "file" else 0
        ti.mtime = EPOCH
    ti.mtime = min(int(ti.mtime), EPOCH)
    ti.uname = ti.gname = ""
    return ti


def write_layer(path: Path, entries: list[Entry]) -> dict:
    """Write ``entries`` as a gzip tar at ``path``; returns its facts (digests, sizes)."""
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with open(tmp, "wb") as raw:
        gz_hash = _HashingWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=gz_hash,
                           compresslevel=GZIP_LEVEL, mtime=0) as gz:  # fmt: skip
            tar_hash = _HashingWriter(gz)
            with tarfile.open(fileobj=tar_hash, mode="w|", format=tarfile.PAX_FORMAT,
                              bufsize=COPY_BUF) as tf:  # fmt: skip
                tf.copybufsize = COPY_BUF
                for e in entries:
                    ti = _tarinfo(tf, e)
                    if ti is None:
                        continue
                    count += 1
                    if not ti.isreg():
                        tf.addfile(ti)
                    elif e.src is not None:
                        with open(e.src, "rb") as f:
                            tf.addfile(ti, f)
                    else:
                        tf.addfile(ti, io.BytesIO(e.data))
    tmp.rename(path)
    return {
        "file": path.name,
        "digest": "sha256:" + gz_hash.sha.hexdigest(),
        "size": gz_hash.size,
        "diff_id": "sha256:" + tar_hash.sha.hexdigest(),
        "tar_size": tar_hash.size,
        "entries": count,
    }


def _is_dir(e: Entry) -> bool:
    if e.src is None:
        return e.kind == "dir"
    return e.src.is_dir() and not e.src.is_symlink()


def merged_count(layers: list[list[Entry]]) -> int:
    """Entries of the flattened image after applying OCI whiteouts, layer by layer."""
    root: dict = {}

    def node(parts: list[str]) -> dict:
        d = root
        for p in parts:
            nxt = d.get(p)
            if not isinstance(nxt, dict):
                nxt = d[p] = {}
            d = nxt
        return d

    for entries in layers:
        for e in entries:
            parts = e.name.split("/")
            parent, base = node(parts[:-1]), parts[-1]
            if base == ".wh..wh..opq":
                parent.clear()
            elif base.startswith(".wh."):
                parent.pop(base[4:], None)
            elif _is_dir(e):
                if not isinstance(parent.get(base), dict):
                    parent[base] = {}
            else:
                parent[base] = None

    def count(d: dict) -> int:
        return sum(1 + (count(v) if isinstance(v, dict) else 0) for v in d.values())

    return count(root)


def _host_arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def cached_meta(root: Path, version: int) -> dict | None:
    """``root/image.json`` if it was written by this recipe version and every layer it lists
    is there, whole; else None (the image is to be built)."""
    meta_path = root / "image.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("version") != version:
        return None
    for layer in meta["layers"]:
        path = root / layer["file"]
        if not path.is_file() or path.stat().st_size != layer["size"]:
            return None
    return meta


def ensure_image(cache: Path, quick: bool, rebuild: bool) -> tuple[Path, dict, bool]:
    """The image's directory, its ``image.json`` (layers, config, facts) and whether it was
    built now."""
    kind = "quick" if quick else "full"
    root = cache / kind
    meta_path = root / "image.json"
    if rebuild and root.exists():
        _unmount_under(root)
        shutil.rmtree(root)
    meta = cached_meta(root, LAYOUT_VERSION)
    if meta is not None:
        return root, meta, False
    root.mkdir(parents=True, exist_ok=True)
    rootfs = None if quick else root / "rootfs"
    if rootfs is not None and not rootfs.is_dir():
        build_rootfs(rootfs, cache)
    site = root / "site"
    if not site.is_dir():
        build_site(site, cache, QUICK_PACKAGES if quick else FULL_PACKAGES)
    specs = []
    if rootfs is not None:
        specs.append(LayerSpec("base", f"debootstrap --variant=minbase --include=python3 {SUITE}",
                               base_entries(rootfs)))  # fmt: skip
    specs += [
        LayerSpec("numeric", "pip install " + " ".join(NUMERIC), site_entries(site, True)),
        LayerSpec("packages", "pip install (the rest)", site_entries(site, False)),
        LayerSpec("app", "COPY app /app; patch /etc and a module", app_entries(rootfs, site)),
        LayerSpec("cleanup", "rm docs, tests, apt lists and caches", cleanup_entries(rootfs, site)),
    ]
    for old in root.glob("*.tar.gz*"):
        old.unlink()
    log(f"writing {len(specs)} layers ({sum(len(s.entries) for s in specs)} entries)")
    with ThreadPoolExecutor(2) as pool:  # zlib releases the GIL
        facts = list(
            pool.map(
                lambda ix: write_layer(root / f"{ix[0] + 1:02}-{ix[1].name}.tar.gz", ix[1].entries),
                enumerate(specs),
            )  # fmt: skip
        )
    for spec, f in zip(specs, facts, strict=True):
        f["name"] = spec.name
    created = "2023-11-14T22:13:20Z"  # EPOCH
    config = {
        "created": created,
        "architecture": _host_arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin",
                    "LANG=C.UTF-8"],
            "Cmd": ["/usr/local/bin/app"],
            "WorkingDir": "/app",
        },
        "rootfs": {"type": "layers", "diff_ids": [f["diff_id"] for f in facts]},
        "history": [{"created": created, "created_by": s.created_by} for s in specs],
    }  # fmt: skip
    meta = {
        "version": LAYOUT_VERSION,
        "kind": kind,
        "layers": facts,
        "config": config,
        "merged_entries": merged_count([s.entries for s in specs]),
        "packages": QUICK_PACKAGES if quick else FULL_PACKAGES,
    }
    tmp = meta_path.with_name("image.json.tmp")
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    tmp.rename(meta_path)
    return root, meta, True
