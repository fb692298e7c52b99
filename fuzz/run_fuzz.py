"""Long fuzzing runs of the targets the CI budget runs briefly (tests/fuzz/).

Hypothesis mode (default) draws fresh random inputs batch after batch until the example count
or the time is used up, for each target in turn; every failure is shrunk, printed and saved
under --out. Atheris mode (coverage-guided libFuzzer, ``pip install atheris``) fuzzes one
target starting from the same seeds.

    python3 fuzz/run_fuzz.py --minutes 10                  # all targets, 10 minutes in all
    python3 fuzz/run_fuzz.py --examples 20000 --targets tar,v6
    python3 fuzz/run_fuzz.py --atheris --targets v5 --minutes 5

Exit status 1 if any target failed.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
UPSTREAM = REPO.parent / "shared" / "fixtures" / "nydus"
BATCH = 500


def _batch(target, strategy, n: int, seen: list[bytes]):
    """One hypothesis test of ``n`` fresh random inputs; ``seen`` collects them."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as fixed_seed

    from tests.fuzz.harness import DEADLINE, check

    @fixed_seed(random.getrandbits(64))
    @settings(max_examples=n, database=None, deadline=DEADLINE,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy)
    def run(data: bytes) -> None:
        seen.append(data)
        check(target, data)

    return run


def hypothesis_run(names: list[str], examples: int | None, seconds: float | None, out: Path):
    from tests.fuzz import seeds
    from tests.fuzz.harness import TARGETS

    strategies = seeds.strategies(UPSTREAM if UPSTREAM.is_dir() else None)
    failed = []
    share = seconds / len(names) if seconds else None
    for name in names:
        target, count, started = TARGETS[name], 0, time.monotonic()
        while True:
            if examples is not None and count >= examples:
                break
            if share is not None and time.monotonic() - started >= share:
                break
            n = BATCH if examples is None else min(BATCH, examples - count)
            seen: list[bytes] = []
            run = _batch(target, strategies[name], n, seen)
            try:
                run()
            except Exception as exc:  # hypothesis re-raises the shrunk failure
                data = seen[-1] if seen else b""
                path = out / f"{name}-{hashlib.sha256(data).hexdigest()[:16]}.bin"
                path.write_bytes(data)
                print(f"{name}: FAILED with {type(exc).__name__}: {exc} (input saved to {path})")
                failed.append(name)
                count += len(seen)
                break
            count += len(seen)
        print(f"{name}: {count} inputs in {time.monotonic() - started:.0f} s", flush=True)
    return failed


def atheris_run(name: str, examples: int | None, seconds: float | None, out: Path) -> None:
    try:
        import atheris
    except ImportError:
        sys.exit("run_fuzz: --atheris needs the atheris package (pip install atheris)")

    with atheris.instrument_imports(include=["rafs", "registry"]):
        from tests.fuzz import seeds
        from tests.fuzz.harness import TARGETS

    target = TARGETS[name]
    corpus = out / f"corpus-{name}"
    corpus.mkdir(parents=True, exist_ok=True)
    for data in seeds.corpus(UPSTREAM if UPSTREAM.is_dir() else None)[name]:
        (corpus / hashlib.sha256(data).hexdigest()[:16]).write_bytes(data)

    def one_input(data: bytes) -> None:
        try:
            target.run(data)
        except target.allowed:
            pass

    args = [
        sys.argv[0],
        str(corpus),
        f"-artifact_prefix={out}/",
        "-timeout=10",
        "-rss_limit_mb=4096",
    ]
    if seconds:
        args.append(f"-max_total_time={int(seconds)}")
    if examples:
        args.append(f"-runs={examples}")
    atheris.Setup(args, one_input)
    atheris.Fuzz()  # exits the process


TARGET_NAMES = ("tar", "layer", "v6", "v5", "bootstrap", "toc", "blob_meta", "manifest",
                "config", "index", "reference", "challenge")  # fmt: skip


def main() -> int:
    # Nothing of rafs or registry may be imported before atheris instruments them.
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default=",".join(TARGET_NAMES), help="comma-separated")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--examples", type=int, help="inputs per target")
    budget.add_argument("--minutes", type=float, help="total time, shared by the targets")
    parser.add_argument("--atheris", action="store_true", help="libFuzzer, one target")
    parser.add_argument("--out", type=Path, help="where failing inputs go (default: a temp dir)")
    args = parser.parse_args()
    names = [n for n in args.targets.split(",") if n]
    unknown = [n for n in names if n not in TARGET_NAMES]
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {', '.join(TARGET_NAMES)}")
    if args.examples is None and args.minutes is None:
        args.minutes = 5.0
    out = args.out or Path(tempfile.mkdtemp(prefix="rconv-fuzz-"))
    out.mkdir(parents=True, exist_ok=True)
    seconds = args.minutes * 60 if args.minutes else None
    if args.atheris:
        if len(names) != 1:
            parser.error("--atheris fuzzes one target: pass --targets NAME")
        atheris_run(names[0], args.examples, seconds, out)
    failed = hypothesis_run(names, args.examples, seconds, out)
    print(f"failing targets: {', '.join(failed)}" if failed else "no failure")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
