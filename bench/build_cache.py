"""`rconv convert --build-cache`: cold, warm, and with only the top layer changed.

On the image of bench/convert.py (built once and cached), against a throw-away
``docker-registry`` on 127.0.0.1. Each round uses a fresh cache tag and fresh target
repositories, then runs, each as a child process (wall time and peak RSS):

  cold         convert the image with an empty build cache (records every layer)
  warm         convert the same image again with that cache
  top-changed  convert the image with a changed top layer with that cache (one miss)
  top-alone    convert a one-layer image made of the changed top layer, no cache: the cold
               time of that layer alone, the baseline of top-changed

and prints the medians with the goals of issue 11: warm <= 10 % of cold, top-changed <=
top-alone + 20 %. Also checks that warm and cold give the same target digest, and that every
round's cold conversion gives the same one (each with a cache of its own).

    python3 bench/build_cache.py [--rounds 3] [--cache DIR] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import importlib.util
import io
import json
import shutil
import statistics
import sys
import tarfile
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(1, str(BENCH))

from convert_image import ensure_image  # noqa: E402
from installed import byte_compile  # noqa: E402

from registry import mediatype as mt  # noqa: E402
from registry.build import Blob, build_image  # noqa: E402
from registry.medium import write_image  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_convert", BENCH / "convert.py")
assert _spec is not None and _spec.loader is not None
bench_convert = importlib.util.module_from_spec(_spec)
sys.modules["bench_convert"] = bench_convert  # dataclasses look their module up
_spec.loader.exec_module(bench_convert)
measured, Run = bench_convert.measured, bench_convert.Run


def changed_layer(original: Path) -> bytes:
    """The top layer with one more file: a new digest, the same other entries."""
    out = io.BytesIO()
    with (
        tarfile.open(original, "r:gz") as src,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as dst,
    ):
        for member in src:
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        note = tarfile.TarInfo("etc/rconv-bench-changed")
        data = b"changed\n"
        note.size, note.mtime = len(data), 1_700_000_000
        dst.addfile(note, io.BytesIO(data))
    return out.getvalue()


def image_with(meta: dict, root: Path, top: bytes | None):
    blobs, diff_ids = [], []
    for layer in meta["layers"]:
        blobs.append(Blob(mt.OCI_LAYER_GZIP, layer["digest"], layer["size"],
                          lambda p=root / layer["file"]: open(p, "rb")))  # fmt: skip
        diff_ids.append(layer["diff_id"])
    config = json.loads(json.dumps(meta["config"]))
    if top is not None:
        blobs[-1] = Blob.from_bytes(gzip.compress(top, mtime=0), mt.OCI_LAYER_GZIP)
        diff_ids[-1] = "sha256:" + hashlib.sha256(top).hexdigest()
    config["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    return build_image(config, blobs)


def convert(ctx: dict, name: str, source: str, target: str, cache: str | None) -> Run:
    report = ctx["work"] / f"{name}.json"
    argv = [sys.executable, "-m", "convert", "convert", "--source", source,
            "--target", f"{ctx['host']}/{target}", "--output-json", str(report),
            "--work-dir", str(ctx["work"])]  # fmt: skip
    if cache:
        argv += ["--build-cache", cache]
    run, _ = measured(argv, ctx["work"], name, cwd=REPO_ROOT)
    for line in (ctx["work"] / f"{name}.err").read_text().splitlines():
        if line.startswith("rconv: warning"):
            print(f"  {name}: {line}")
    data = json.loads(report.read_text())
    run.extra = {"digest": data["target_digest"], "cache": data["platforms"][0].get("cache"),
                 "stages": data["platforms"][0].get("stages")}  # fmt: skip
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "rconv-bench")
    ap.add_argument("--quick", action="store_true", help="a small image (python packages only)")
    args = ap.parse_args()
    if shutil.which("docker-registry") is None:
        raise SystemExit("docker-registry is missing")
    byte_compile()  # rconv as installed (bench/installed.py)
    root, meta, _ = ensure_image(args.cache.expanduser(), args.quick, False)
    top = changed_layer(root / meta["layers"][-1]["file"])

    from tests.integration.conftest import start_registry

    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rconv-bench-")))
        reg = stack.enter_context(start_registry(work / "registry"))
        stack.callback(bench_convert._stop_child)
        src, changed, alone = (reg.ref(f"bench/{n}:1") for n in ("src", "changed", "alone"))
        write_image(image_with(meta, root, None), src)
        write_image(image_with(meta, root, top), changed)
        only = Blob.from_bytes(gzip.compress(top, mtime=0), mt.OCI_LAYER_GZIP)
        config = dict(meta["config"], rootfs={"type": "layers", "diff_ids": [
            "sha256:" + hashlib.sha256(top).hexdigest()]})  # fmt: skip
        write_image(build_image(config, [only]), alone)
        ctx = {"work": work, "host": reg.host}
        names = ("cold", "warm", "top-changed", "top-alone")
        runs: dict[str, list[Run]] = {n: [] for n in names}
        for rnd in range(1, args.rounds + 1):
            cache = reg.ref(f"bench/cache:r{rnd}")
            runs["cold"].append(convert(ctx, f"cold-{rnd}", src, f"bench/cold-{rnd}:n", cache))
            runs["warm"].append(convert(ctx, f"warm-{rnd}", src, f"bench/warm-{rnd}:n", cache))
            runs["top-changed"].append(
                convert(ctx, f"top-{rnd}", changed, f"bench/top-{rnd}:n", cache)
            )
            runs["top-alone"].append(
                convert(ctx, f"alone-{rnd}", alone, f"bench/alone-{rnd}:n", None)
            )
            print(f"round {rnd}: " + "   ".join(
                f"{n} {runs[n][-1].seconds:6.2f} s {runs[n][-1].rss / 2**20:5.0f} MiB"
                for n in names), flush=True)  # fmt: skip
        med = {n: statistics.median(r.seconds for r in runs[n]) for n in names}
        rss = {n: statistics.median(r.rss for r in runs[n]) / 2**20 for n in names}
        print(f"\nmedians over {args.rounds} round(s); {len(meta['layers'])} layers")
        for n in names:
            print(f"  {n:12} {med[n]:7.2f} s  {rss[n]:6.0f} MiB peak RSS")
        print(f"warm / cold: {med['warm'] / med['cold']:.2f} (goal <= 0.10)")
        print(f"top-changed / top-alone: {med['top-changed'] / med['top-alone']:.2f} "
              f"(goal <= 1.20)")  # fmt: skip
        same = all(w.extra["digest"] == c.extra["digest"]
                   for w, c in zip(runs["warm"], runs["cold"], strict=True))  # fmt: skip
        print(f"warm digest equals cold digest in every round: {same}")
        colds = {r.extra["digest"] for r in runs["cold"]}
        print(f"cold digest the same in every round: {len(colds) == 1}"
              + ("" if len(colds) == 1 else f" ({', '.join(sorted(colds))})"))  # fmt: skip
        print(
            "cache counts (last round): "
            + ", ".join(
                f"{n} {runs[n][-1].extra['cache']}" for n in ("cold", "warm", "top-changed")
            )
        )
        for n in ("warm", "top-changed"):
            stages = runs[n][-1].extra["stages"] or {}
            print(f"stages of the last {n} run (s): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))  # fmt: skip


if __name__ == "__main__":
    main()
