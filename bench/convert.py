"""`rconv convert` on realistic images, next to the physical limit and to skopeo.

Builds (once, cached under --cache) the images: ``full`` (bench/convert_image.py, a Debian +
Python image of ~41k entries) and ``wide`` (bench/wide_image.py, ~261k small entries), starts a
throw-away ``docker-registry`` on 127.0.0.1, pushes the images there, then runs N rounds, each
of them running, image after image, interleaved:

  rconv    ``python3 -m convert convert --source SRC --target REPO:nydus [--jobs N]``
  layout   the same conversion written to an OCI layout in the work dir (``--target
           oci:DIR:nydus``): no push, like the limit pipeline, so no registry ingesting the
           blobs on the same cores; its manifest digest must be rconv's
  limit    bench/convert_limit.py: stream, inflate (ISA-L), zstd -3 on 2 threads, sha256 x3
  skopeo   ``skopeo copy --dest-compress --dest-compress-format zstd`` to another repo
  ociref   ``rconv convert --oci-ref`` (zran) into another repository of the same registry:
           the source layers are mounted, only ref blobs and the bootstrap are pushed
  copy     ``skopeo copy`` without conversion (the gzip layers as they are) to another repo

each as a child process, with wall time and peak RSS (wait4 ru_maxrss). Prints per image the
medians, MB/s over the total gzip size of the source, the ratios rconv/limit and rconv/skopeo,
ociref/rconv and ociref/copy, the bytes each added to the registry (for ociref: what is not a
mounted source layer; its share of the source image is printed), and rconv's stage times.
Every round pushes to fresh repositories and unlinks what it pushed afterwards, so no tool
finds its output already in the registry (skopeo's blob-info cache would otherwise mount the
previous round's zstd layers instead of compressing).

    python3 bench/convert.py [--rounds 3] [--jobs N] [--images full,wide] [--only rconv,limit]
                             [--cache DIR] [--rebuild] [--quick]

Needs root for debootstrap (full image), skopeo and docker-registry, and the project's own
dependencies (``isal`` among them, which the limit pipeline uses too). Stops the registry and
removes its storage on exit, Ctrl-C included; only the cache directory stays.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
# The repository root goes first: this file's own name would otherwise shadow `convert`.
sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
from convert_image import ensure_image  # noqa: E402
from installed import byte_compile  # noqa: E402
from wide_image import ensure_wide_image  # noqa: E402

from convert.options import DEFAULT_JOBS  # noqa: E402
from registry import mediatype as mt  # noqa: E402
from registry.build import Blob, build_image  # noqa: E402
from registry.medium import write_image  # noqa: E402

MB = 1e6
MANIFEST_ACCEPT = ", ".join((mt.OCI_MANIFEST, mt.DOCKER_MANIFEST, mt.OCI_INDEX))


@dataclass
class Run:
    seconds: float
    rss: int  # bytes
    out_bytes: int = 0
    cpu: float = 0.0  # user + system seconds of the child: what other load cannot inflate
    extra: dict = field(default_factory=dict)


_child: subprocess.Popen | None = None


def measured(argv: list[str], work: Path, name: str, **kw) -> tuple[Run, str]:
    """Run ``argv`` to completion; wall time, peak RSS and its stdout."""
    global _child
    out_path, err_path = work / f"{name}.out", work / f"{name}.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        _child = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, **kw)
        others = _children()
        _, status, usage = os.wait4(_child.pid, 0)
        seconds = time.perf_counter() - start
        _child.returncode = os.waitstatus_to_exitcode(status)
    code, _child = _child.returncode, None
    if code != 0:
        stderr = err_path.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{name} failed ({code}): {' '.join(argv)}\n{stderr}")
    cpu = usage.ru_utime + usage.ru_stime + _reap_orphans(others)
    return Run(seconds, usage.ru_maxrss * 1024, cpu=cpu), out_path.read_text()


def _become_subreaper() -> None:
    """Orphaned descendants (rconv's fork server and its worker processes outlive rconv by a
    moment) are re-parented to this process, so that their CPU time is counted too."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        print("warning: not a subreaper: worker processes' CPU is not counted", file=sys.stderr)


def _children() -> set[int]:
    pids: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in (task / "children").read_text().split())
    return pids


def _reap_orphans(others: set[int], timeout: float = 5.0) -> float:
    """Wait for the children this process did not have before the run (orphans of the
    contender); their user + system seconds."""
    cpu, deadline = 0.0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        extra = _children() - others
        if not extra:
            break
        for pid in extra:
            with contextlib.suppress(ChildProcessError):
                got, _, usage = os.wait4(pid, os.WNOHANG)
                if got:
                    cpu += usage.ru_utime + usage.ru_stime
        time.sleep(0.02)
    return cpu


def _stop_child() -> None:
    if _child is not None and _child.returncode is None:
        _child.kill()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(_child.pid, 0)


# ------------------------------------------------------------------ registry helpers


def _manifest(http: httpx.Client, host: str, repo: str, ref: str) -> dict:
    resp = http.get(f"http://{host}/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT})
    resp.raise_for_status()
    return resp.json()


def pushed_blobs(http: httpx.Client, host: str, repo: str, tag: str) -> list[dict]:
    """Descriptors of the layers and configs under ``repo:tag`` (through an index too)."""
    top = _manifest(http, host, repo, tag)
    manifests = [_manifest(http, host, repo, m["digest"]) for m in top.get("manifests", [])]
    out = []
    for m in manifests or [top]:
        out += [m["config"], *m["layers"]]
    return out


def unlink_blobs(http: httpx.Client, host: str, repo: str, blobs: list[dict]) -> None:
    """Drop the repository's links to ``blobs`` so that nothing can mount them later."""
    for digest in {b["digest"] for b in blobs}:
        resp = http.delete(f"http://{host}/v2/{repo}/blobs/{digest}")
        if resp.status_code not in (202, 404):
            resp.raise_for_status()


# ------------------------------------------------------------------ the three contenders


def _rconv(ctx: dict, name: str, rnd: int, target: str, *options: str) -> Run:
    """``rconv convert`` of the bench image to ``target``, with its stages and digest."""
    report = ctx["work"] / f"{name}-{ctx['kind']}-{rnd}.json"
    argv = [sys.executable, "-m", "convert", "convert", "--source", ctx["src"], *options,
            "--target", target, *ctx["jobs_args"],
            "--output-json", str(report), "--work-dir", str(ctx["work"])]  # fmt: skip
    run, _ = measured(argv, ctx["work"], f"{name}-{ctx['kind']}-{rnd}", cwd=REPO_ROOT)
    data = json.loads(report.read_text())
    platform = data["platforms"][0]
    run.extra = {"stages": platform.get("stages", {}), "digest": data["target_digest"],
                 "parts": [layer["blob_digest"] for layer in platform["layers"]]
                 + [platform.get("bootstrap_digest", "")]}  # fmt: skip
    return run


def run_rconv(ctx: dict, rnd: int) -> Run:
    repo = f"bench/rconv-{ctx['kind']}-{rnd}"
    run = _rconv(ctx, "rconv", rnd, f"{ctx['host']}/{repo}:nydus")
    blobs = pushed_blobs(ctx["http"], ctx["host"], repo, "nydus")
    run.out_bytes = sum(b["size"] for b in blobs)
    unlink_blobs(ctx["http"], ctx["host"], repo, blobs)
    return run


def run_layout(ctx: dict, rnd: int) -> Run:
    out = ctx["work"] / f"layout-{ctx['kind']}-{rnd}"
    run = _rconv(ctx, "layout", rnd, f"oci:{out}:nydus")
    run.out_bytes = sum(f.stat().st_size for f in (out / "blobs").rglob("*") if f.is_file())
    shutil.rmtree(out)
    return run


def run_limit(ctx: dict, rnd: int) -> Run:
    layers = [f"{layer['digest']}={layer['diff_id']}" for layer in ctx["layers"]]
    argv = [sys.executable, str(BENCH / "convert_limit.py"), ctx["host"], ctx["src_repo"], *layers]
    run, out = measured(argv, ctx["work"], f"limit-{ctx['kind']}-{rnd}")
    run.out_bytes = sum(layer["zstd_size"] for layer in json.loads(out)["layers"])
    return run


def run_skopeo(ctx: dict, rnd: int) -> Run:
    """The source is named through ``localhost``: skopeo 1.9 would otherwise find the gzip
    layers on the same registry and mount them instead of recompressing (its blob reuse does
    not check the requested compression), so the registry must look like another one."""
    repo = f"bench/skopeo-{ctx['kind']}-{rnd}"
    argv = ["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false",
            "--dest-tls-verify=false", "--dest-compress", "--dest-compress-format", "zstd",
            f"docker://{ctx['src'].replace('127.0.0.1:', 'localhost:', 1)}",
            f"docker://{ctx['host']}/{repo}:zstd"]  # fmt: skip
    run, _ = measured(argv, ctx["work"], f"skopeo-{ctx['kind']}-{rnd}")
    blobs = pushed_blobs(ctx["http"], ctx["host"], repo, "zstd")
    if not all(b["mediaType"].endswith("+zstd") for b in blobs[1:]):
        raise SystemExit(f"skopeo did not write zstd layers: {blobs}")
    run.out_bytes = sum(b["size"] for b in blobs)
    unlink_blobs(ctx["http"], ctx["host"], repo, blobs)
    return run


def run_ociref(ctx: dict, rnd: int) -> Run:
    repo = f"bench/ociref-{ctx['kind']}-{rnd}"
    run = _rconv(ctx, "ociref", rnd, f"{ctx['host']}/{repo}:zran", "--oci-ref")
    blobs = pushed_blobs(ctx["http"], ctx["host"], repo, "zran")
    source = {layer["digest"] for layer in ctx["layers"]}
    run.out_bytes = sum(b["size"] for b in blobs if b["digest"] not in source)
    unlink_blobs(ctx["http"], ctx["host"], repo, blobs + [{"digest": d} for d in source])
    return run


def run_copy(ctx: dict, rnd: int) -> Run:
    """Through ``localhost`` as in run_skopeo, so that the layers are copied, not mounted."""
    repo = f"bench/copy-{ctx['kind']}-{rnd}"
    argv = ["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false",
            "--dest-tls-verify=false",
            f"docker://{ctx['src'].replace('127.0.0.1:', 'localhost:', 1)}",
            f"docker://{ctx['host']}/{repo}:copy"]  # fmt: skip
    run, _ = measured(argv, ctx["work"], f"copy-{ctx['kind']}-{rnd}")
    blobs = pushed_blobs(ctx["http"], ctx["host"], repo, "copy")
    run.out_bytes = sum(b["size"] for b in blobs)
    unlink_blobs(ctx["http"], ctx["host"], repo, blobs)
    return run


CONTENDERS = {"rconv": run_rconv, "limit": run_limit, "skopeo": run_skopeo, "ociref": run_ociref,
              "copy": run_copy, "layout": run_layout}  # fmt: skip
LABELS = {"rconv": "rconv convert", "limit": "limit pipeline", "skopeo": "skopeo copy zstd",
          "ociref": "rconv --oci-ref", "copy": "skopeo copy",
          "layout": "rconv to a layout"}  # fmt: skip


# ------------------------------------------------------------------ main


def print_image(meta: dict, built_in: float | None) -> tuple[int, int]:
    layers = meta["layers"]
    gz = sum(layer["size"] for layer in layers)
    tar = sum(layer["tar_size"] for layer in layers)
    entries = sum(layer["entries"] for layer in layers)
    how = f"built in {built_in:.0f} s" if built_in is not None else "cached"
    print(f"image ({meta['kind']}, {how}): {len(layers)} layers, {entries} tar entries "
          f"({meta['merged_entries']} in the merged tree), {gz / MB:.1f} MB gzip, "
          f"{tar / MB:.1f} MB uncompressed")  # fmt: skip
    for i, layer in enumerate(layers, 1):
        gz_mb, tar_mb = layer["size"] / MB, layer["tar_size"] / MB
        print(f"  {i} {layer['name']:9} {layer['entries']:7} entries "
              f"{gz_mb:8.1f} MB gzip {tar_mb:8.1f} MB tar")  # fmt: skip
    return gz, entries


def _median(runs: list[Run], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def report(results: dict[str, list[Run]], gz: int, rounds: int) -> dict:
    print(f"\nmedians over {rounds} round(s); MB/s over {gz / MB:.1f} MB of gzip layers")
    print(f"{'':18} {'wall s':>8} {'cpu s':>7} {'MB/s':>8} {'peak RSS MiB':>13} {'added MB':>10}")
    summary = {}
    for name, runs in results.items():
        secs = _median(runs, "seconds")
        rss = _median(runs, "rss")
        out = _median(runs, "out_bytes")
        cpu = _median(runs, "cpu")
        summary[name] = {
            "seconds": round(secs, 2),
            "cpu_seconds": round(cpu, 2),
            "mb_s": round(gz / MB / secs, 1),
            "rss_mib": round(rss / 2**20, 1),
            "output_mb": round(out / MB, 1),
        }
        print(f"{LABELS[name]:18} {secs:8.2f} {cpu:7.2f} {gz / MB / secs:8.1f} {rss / 2**20:13.1f} "
              f"{out / MB:10.1f}")  # fmt: skip
    if "ociref" in summary:
        share = _median(results["ociref"], "out_bytes") / gz
        summary["ociref_added_share"] = round(share, 4)
        line = [f"--oci-ref added {100 * share:.2f} % of the source image"]
        for other in ("rconv", "copy"):
            if other in summary:
                ratio = summary["ociref"]["seconds"] / summary[other]["seconds"]
                cpu_ratio = summary["ociref"]["cpu_seconds"] / summary[other]["cpu_seconds"]
                summary[f"ociref/{other}"] = round(ratio, 2)
                summary[f"ociref/{other}_cpu"] = round(cpu_ratio, 2)
                line.append(f"ociref / {other}: {ratio:.2f}x wall, {cpu_ratio:.2f}x cpu")
        print("   ".join(line))
        _stages(results, summary, "ociref")
    if "layout" in summary and "limit" in summary:
        ratio = summary["layout"]["seconds"] / summary["limit"]["seconds"]
        summary["layout/limit"] = round(ratio, 2)
        line = f"rconv to a layout (no push) / limit: {ratio:.2f}x"
        if "rconv" in summary:
            same = {r.extra["digest"] for r in results["layout"]} == {
                r.extra["digest"] for r in results["rconv"]
            }
            summary["layout_digest_is_rconv"] = same
            line += f"   same manifest digest as rconv: {same}"
        print(line)
        _stages(results, summary, "layout")
    if "rconv" not in summary:
        return summary
    rconv = summary["rconv"]["seconds"]
    ratios = []
    for other in ("limit", "skopeo"):
        if other in summary:
            summary[f"rconv/{other}"] = round(rconv / summary[other]["seconds"], 2)
            ratios.append(f"rconv / {other}: {summary[f'rconv/{other}']:.2f}x")
    print("   ".join(ratios))
    digests = {r.extra["digest"] for r in results["rconv"]}
    print(f"rconv target digest {'identical in every round' if len(digests) == 1 else 'VARIES'}: "
          + ", ".join(sorted(digests)))  # fmt: skip
    summary["rconv_deterministic"] = len(digests) == 1
    if len(digests) > 1:
        _show_parts(results["rconv"] + results.get("layout", []))
    _stages(results, summary, "rconv")
    return summary


def _show_parts(runs: list[Run]) -> None:
    """Where runs that should be identical differ: each run's layer blobs and bootstrap
    layer, by position, shown only where the runs disagree."""
    parts = [r.extra["parts"] for r in runs]
    names = [f"blob {i + 1}" for i in range(len(parts[0]) - 1)] + ["bootstrap"]
    differ = False
    for i, name in enumerate(names):
        seen = [p[i] if i < len(p) else "-" for p in parts]
        if len(set(seen)) > 1:
            differ = True
            print(f"  {name} differs: " + ", ".join(d[7:19] for d in seen))
    if not differ:
        print("  every blob and the bootstrap layer are the same: the config or manifest differs")


def _stages(results: dict[str, list[Run]], summary: dict, name: str) -> None:
    stages = [r.extra.get("stages", {}) for r in results.get(name, [])]
    if stages and stages[0]:
        med = {k: statistics.median(s.get(k, 0.0) for s in stages) for k in stages[0]}
        print(f"{name} stages (median s): " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))
        summary[f"{name}_stages"] = {k: round(v, 2) for k, v in med.items()}


def _load() -> str:
    """Other work on the machine skews every figure: say how busy it was."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


IMAGES = ("full", "wide", "quick")


def ensure(kind: str, cache: Path, rebuild: bool) -> tuple[Path, dict, bool]:
    if kind == "wide":
        return ensure_wide_image(cache, rebuild)
    return ensure_image(cache, kind == "quick", rebuild)


def push_source(kind: str, root: Path, meta: dict, reg) -> str:
    blobs = [
        Blob(
            mt.OCI_LAYER_GZIP,
            layer["digest"],
            layer["size"],
            lambda p=root / layer["file"]: open(p, "rb"),
        )  # fmt: skip
        for layer in meta["layers"]
    ]
    src = reg.ref(f"bench/src-{kind}:latest")
    t = time.perf_counter()
    write_image(build_image(meta["config"], blobs), src)
    print(f"{kind}: source pushed in {time.perf_counter() - t:.1f} s")
    return src


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--jobs", type=int, default=None, help="passed to rconv convert (default: rconv's own)"
    )
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "rconv-bench")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached images")
    ap.add_argument(
        "--images",
        default="full,wide",
        help=f"comma-separated, of {', '.join(IMAGES)} (quick: python packages only)",
    )
    ap.add_argument("--quick", action="store_true", help="the same as --images quick")
    ap.add_argument("--only", default=",".join(CONTENDERS),
                    help="comma-separated contenders to run (default: all)")  # fmt: skip
    args = ap.parse_args()
    kinds = ["quick"] if args.quick else args.images.split(",")
    contenders = args.only.split(",")
    if not set(kinds) <= set(IMAGES) or not set(contenders) <= set(CONTENDERS):
        raise SystemExit(f"--images takes {IMAGES}, --only takes {tuple(CONTENDERS)}")
    for tool in ("skopeo", "docker-registry"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing")
    byte_compile()  # rconv as installed (bench/installed.py)
    _become_subreaper()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)

    images = {}
    for kind in kinds:
        start = time.perf_counter()
        root, meta, built = ensure(kind, args.cache.expanduser(), args.rebuild)
        gz, _ = print_image(meta, time.perf_counter() - start if built else None)
        images[kind] = (root, meta, gz)

    from tests.integration.conftest import start_registry

    try:
        with contextlib.ExitStack() as stack:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rconv-bench-")))
            reg = stack.enter_context(start_registry(work / "registry"))
            http = stack.enter_context(httpx.Client(timeout=60))
            stack.callback(_stop_child)  # unwinds first: no child outlives the registry
            print(f"registry: docker-registry at {reg.host}; load average {_load()}")
            # rconv's own default unless --jobs is given: what a user gets is what is timed
            jobs = args.jobs if args.jobs is not None else DEFAULT_JOBS
            jobs_args = ["--jobs", str(args.jobs)] if args.jobs is not None else []
            print(f"rconv jobs: {jobs}" + ("" if args.jobs is not None else " (its default)"))
            ctxs = {}
            for kind, (root, meta, _) in images.items():
                src = push_source(kind, root, meta, reg)
                ctxs[kind] = {"work": work, "host": reg.host, "src": src, "jobs_args": jobs_args,
                              "src_repo": f"bench/src-{kind}", "kind": kind,
                              "layers": meta["layers"], "http": http}  # fmt: skip
            results = {kind: {name: [] for name in contenders} for kind in kinds}
            for rnd in range(1, args.rounds + 1):
                for kind in kinds:
                    line = []
                    for name in contenders:
                        run = CONTENDERS[name](ctxs[kind], rnd)
                        results[kind][name].append(run)
                        line.append(f"{name} {run.seconds:6.2f} s {run.rss / 2**20:6.0f} MiB")
                    print(f"round {rnd} {kind:5}: " + "   ".join(line), flush=True)
            print(f"load average after the rounds {_load()} ({os.cpu_count()} CPUs)")
            summaries = {}
            for kind in kinds:
                _, meta, gz = images[kind]
                print(f"\n== {kind} image")
                summary = report(results[kind], gz, args.rounds)
                summary["image"] = {"kind": kind, "layers": len(meta["layers"]),
                                    "gzip_mb": round(gz / MB, 1), "jobs": jobs}  # fmt: skip
                summaries[kind] = summary
            print(json.dumps(summaries))
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
