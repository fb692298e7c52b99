"""The rconv command line: a thin layer mapping flags to options and library calls.

Flags shared by several commands are declared once below (``RegistryFlags``, the RAFS flags).
Every command runs inside ``_user_errors``, the one place where the packages' error bases
(``ConvertError``, ``RafsError``, ``RegistryError``) and ``OSError`` become one
``rconv: error: …`` line and exit status 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from convert.errors import ConvertError
from convert.forkserver import remove_server_dir, start_early
from convert.gcpause import paused_gc
from convert.options import (
    DEFAULT_CACHE_RECORDS,
    DEFAULT_JOBS,
    DEFAULT_PREFETCH,
    SERVICE_JOBS,
    VERSION,
    ConvertOptions,
)
from convert.progress import human_size, make_progress
from rafs.errors import RafsError
from rafs.options import RafsOptions
from registry.client import RegistryClient
from registry.credentials import Credential
from registry.errors import RegistryError
from registry.medium import copy_image, parse_spec
from registry.model import Platform
from registry.options import RegistryOptions
from registry.transport import build_tls_ahead

USER_ERRORS = (ConvertError, RafsError, RegistryError, OSError)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Convert OCI images into Nydus (RAFS v6/v5) images, and build or inspect RAFS.",
    pretty_exceptions_enable=False,
)
_state = {"debug": False, "quick_exit": False}


def _leave_quickly() -> None:
    """Once this command ends, skip the interpreter's teardown (``main``): a command that held
    an image's tree would otherwise spend 0.15-0.25 s freeing its objects one by one."""
    _state["quick_exit"] = True


class Compressor(StrEnum):
    zstd = "zstd"
    lz4_block = "lz4_block"
    none = "none"


class Digester(StrEnum):
    blake3 = "blake3"
    sha256 = "sha256"


class WhiteoutSpec(StrEnum):
    oci = "oci"
    overlayfs = "overlayfs"
    none = "none"


class FsVersion(StrEnum):
    v6 = "6"
    v5 = "5"


def _fail(exc: BaseException) -> None:
    if _state["debug"]:
        traceback.print_exception(exc)
    message = str(exc) or exc.__class__.__name__
    typer.echo(f"rconv: error: {message}", err=True)
    raise typer.Exit(1)


@contextmanager
def _user_errors() -> Iterator[None]:
    """The one edge where errors of bad input, registries and files become one line, and
    where Ctrl-C or SIGTERM ends a command with status 130 instead of a traceback. Commands
    run with the cyclic collector paused (convert.gcpause)."""
    try:
        with paused_gc():
            yield
    except USER_ERRORS as exc:
        _fail(exc)
    except KeyboardInterrupt:
        typer.echo("rconv: error: interrupted", err=True)
        raise typer.Exit(130) from None


def _chunk_size(value: str) -> int:
    try:
        size = int(value, 0)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a number (use e.g. 0x100000)") from None
    try:
        RafsOptions(chunk_size=size)
    except RafsError as exc:
        raise typer.BadParameter(str(exc)) from None
    return size


def _prefetch(path: Path | None) -> tuple[bytes, ...]:
    if path is None:
        return ()
    data = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    patterns = [line.strip() for line in data.splitlines()]
    return tuple(p for p in patterns if p.startswith(b"/"))


def _size(value: str | None) -> int | None:
    if value is None:
        return None
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a size (e.g. 500M, 20G)") from None


def _platforms(value: str | None) -> tuple[Platform, ...]:
    if not value:
        return ()
    try:
        return tuple(Platform.parse(p.strip()) for p in value.split(",") if p.strip())
    except (ValueError, RegistryError) as exc:
        raise typer.BadParameter(str(exc)) from None


# -- flags shared by several commands, declared once ------------------------------------------

FsVersionFlag = Annotated[FsVersion, typer.Option(help="RAFS version.")]
CompressorFlag = Annotated[Compressor, typer.Option(help="Chunk compression.")]
ChunkSizeFlag = Annotated[str, typer.Option(help="Chunk size, a power of two, e.g. 0x100000.")]
PrefetchFlag = Annotated[
    Path | None, typer.Option(help="File (or - for stdin) of absolute paths to prefetch.")
]
MaxLayerSizeFlag = Annotated[
    str | None,
    typer.Option(help="Refuse a tar, or files (sparse ones expanded), beyond this (e.g. 50G)."),
]
PlatformFlag = Annotated[
    str | None, typer.Option(help="os/arch(/variant) list, comma separated (default: this host).")
]
AllPlatformsFlag = Annotated[bool, typer.Option("--all-platforms", help="Every platform.")]
JobsFlag = Annotated[
    int,
    typer.Option(
        min=1,
        help="Layers converted in parallel (convert's default: one more than the CPUs usable "
        "here, at most 8; 2 per task in a service); sizes every worker pool.",
    ),
]
PlainHttpFlag = Annotated[
    bool, typer.Option("--plain-http", help="Talk plain HTTP to the registries (no TLS).")
]
InsecureFlag = Annotated[
    bool, typer.Option("--insecure", help="Skip TLS verification; allow plain HTTP fallback.")
]
BuildCacheTagFlag = Annotated[
    str | None, typer.Option(help="Build cache at the target repository's TAG.")
]
TargetSuffixFlag = Annotated[
    str | None, typer.Option(help="Target = source tag + SUFFIX, e.g. -nydus.")
]
SourceCredsFlag = Annotated[str | None, typer.Option(help="USER:PASS for the source registry.")]
TargetCredsFlag = Annotated[str | None, typer.Option(help="USER:PASS for the target registry.")]
ImageSpec = "REF, oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:REF]"


def _client(
    plain_http: bool,
    insecure: bool,
    *pairs: tuple[str | None, str | None],
    insecure_hosts: tuple[str, ...] = (),
) -> RegistryClient:
    """One client for every registry involved; ``pairs`` are (image spec, USER:PASS)."""
    credentials = {}
    for spec_text, creds in pairs:
        if creds and spec_text:
            spec = parse_spec(spec_text)
            if spec.ref is None:
                raise typer.BadParameter(f"credentials given for {spec_text}, not a registry")
            credentials[spec.ref.registry] = Credential.parse(creds)
    options = RegistryOptions(
        insecure=insecure,
        plain_http=plain_http,
        credentials=credentials,
        insecure_hosts=frozenset(insecure_hosts),
    )
    return RegistryClient(options)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"rconv {VERSION}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[
        bool, typer.Option("--debug", "-v", help="Show tracebacks and details on errors.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    _state["debug"] = debug


@app.command("build")
def build_cmd(
    source: Annotated[Path, typer.Argument(help="Directory, .tar, .tar.gz or .tar.zst layer.")],
    bootstrap: Annotated[Path, typer.Option(help="Bootstrap file to write.")],
    blob_dir: Annotated[Path, typer.Option(help="Directory receiving DIR/<blob-id>.")],
    fs_version: FsVersionFlag = FsVersion.v6,
    compressor: CompressorFlag = Compressor.zstd,
    digester: Annotated[Digester, typer.Option(help="Chunk digest.")] = Digester.blake3,
    chunk_size: ChunkSizeFlag = "0x100000",
    parent_bootstrap: Annotated[
        Path | None, typer.Option(help="Apply the layer onto this bootstrap (dedup against it).")
    ] = None,
    chunk_dict: Annotated[
        Path | None, typer.Option(help="Bootstrap whose chunks are referenced, not stored.")
    ] = None,
    whiteout_spec: Annotated[WhiteoutSpec, typer.Option()] = WhiteoutSpec.oci,
    prefetch_patterns: PrefetchFlag = None,
    max_layer_size: MaxLayerSizeFlag = None,
) -> None:
    """Build one layer into a RAFS bootstrap and a data blob."""
    _leave_quickly()
    from convert.build import BuildOptions, build

    with _user_errors():
        rafs = RafsOptions(
            int(fs_version.value), _chunk_size(chunk_size), compressor.value, digester.value
        )
        opts = BuildOptions(
            rafs=rafs,
            whiteout_spec=whiteout_spec.value,
            prefetch=_prefetch(prefetch_patterns),
            max_layer_size=_size(max_layer_size),
        )
        result = build(source, bootstrap, blob_dir, opts, parent_bootstrap, chunk_dict)
    for warning in result.warnings:
        typer.echo(f"rconv: warning: {source}: {warning}", err=True)
    blob = result.blob
    if blob is None:
        typer.echo(f"bootstrap {bootstrap}: no new data (no blob written)")
    else:
        typer.echo(
            f"bootstrap {bootstrap}: blob {blob.blob_id} "
            f"({blob.chunk_count} chunks, {human_size(blob.compressed_size)})"
        )


@app.command("merge")
def merge_cmd(
    bootstraps: Annotated[list[Path], typer.Argument(help="Per-layer bootstraps, lowest first.")],
    bootstrap: Annotated[Path, typer.Option(help="Merged bootstrap to write.")],
    prefetch_patterns: PrefetchFlag = None,
) -> None:
    """Overlay per-layer bootstraps (built with --whiteout-spec none) with OCI rules."""
    _leave_quickly()
    from convert.build import BuildOptions, merge

    with _user_errors():
        merged = merge(bootstraps, bootstrap, BuildOptions(prefetch=_prefetch(prefetch_patterns)))
    typer.echo(f"bootstrap {bootstrap}: {len(merged.blobs)} blobs")


@app.command("inspect")
def inspect_cmd(
    bootstrap: Annotated[Path, typer.Argument()],
    blob_dir: Annotated[
        Path | None, typer.Option(help="Also verify the blobs (size, TOC, ci array, digest).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the superblock, blob table and every node of a bootstrap."""
    from convert.build import load_bootstrap
    from convert.inspect import BlobOpener, describe, dump_json, render_text
    from rafs.check import check_blobs

    with _user_errors():
        bs = load_bootstrap(bootstrap)
        info = describe(bootstrap.read_bytes(), bs)
        if blob_dir is not None:
            with ExitStack() as stack:
                info["blob_problems"] = check_blobs(bs, BlobOpener(blob_dir, stack))
    if json_out:
        dump_json(info, sys.stdout)
    else:
        sys.stdout.writelines(render_text(info))
    problems = info.get("blob_problems")
    if problems is not None:
        for line in problems:
            typer.echo(f"rconv: error: {line}", err=True)
        typer.echo(f"blobs: {len(bs.blobs)} checked, {len(problems)} problem(s)")
        if problems:
            raise typer.Exit(1)


@app.command("unpack")
def unpack_cmd(
    bootstrap: Annotated[Path, typer.Argument()],
    blob_dir: Annotated[Path, typer.Option(help="Directory holding the blobs by id.")],
    output: Annotated[Path, typer.Option(help="Layer tar to write.")],
) -> None:
    """Write the image's tree back as an OCI layer tar (data read through the blobs)."""
    from convert.build import load_bootstrap
    from convert.inspect import BlobOpener, unpack

    tmp = output.with_name(f".{output.name}.tmp")
    try:
        with _user_errors():
            bs = load_bootstrap(bootstrap)
            with ExitStack() as stack, open(tmp, "wb") as out:
                count = unpack(bs, BlobOpener(blob_dir, stack), out)
            tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    typer.echo(f"{output}: {count} entries")


@app.command("blob-view")
def blob_view_cmd(
    bootstrap: Annotated[Path, typer.Argument()],
    blob_dir: Annotated[Path, typer.Option(help="Directory holding the blobs by id.")],
    output_dir: Annotated[Path, typer.Option(help="Directory receiving one view per blob.")],
) -> None:
    """Write each blob's uncompressed address space (EROFS extra device k = line k)."""
    from convert.build import load_bootstrap
    from convert.inspect import BlobOpener, blob_views

    with _user_errors():
        bs = load_bootstrap(bootstrap)
        with ExitStack() as stack:
            paths = blob_views(bs, BlobOpener(blob_dir, stack), output_dir)
    for k, path in enumerate(paths, start=1):
        typer.echo(f"device {k}: {path}")


@app.command("copy")
def copy_cmd(
    source: Annotated[str, typer.Argument(help=ImageSpec)],
    target: Annotated[str, typer.Argument(help=ImageSpec)],
    platform: Annotated[str | None, typer.Option(help="Copy only this platform.")] = None,
    plain_http: PlainHttpFlag = False,
    insecure: InsecureFlag = False,
    source_creds: SourceCredsFlag = None,
    target_creds: TargetCredsFlag = None,
) -> None:
    """Copy an image or index between media, keeping digests (like crane/skopeo copy)."""
    with _user_errors():
        client = _client(plain_http, insecure, (source, source_creds), (target, target_creds))
        desc = copy_image(source, target, client=client, platform=platform)
    typer.echo(f"copied {source} -> {target} ({desc.digest})")


def _build_cache(target: str, ref: str | None, tag: str | None) -> str | None:
    """The build cache reference: ``--build-cache REF``, or the target repository at TAG."""
    if ref and tag:
        raise typer.BadParameter("give --build-cache or --build-cache-tag, not both")
    if tag:
        spec = parse_spec(target)
        if spec.kind != "registry" or spec.ref is None:
            raise typer.BadParameter("--build-cache-tag needs a registry target")
        return str(spec.ref.with_tag(tag))
    if ref:
        spec = parse_spec(ref)
        if spec.kind != "registry" or spec.ref is None or not spec.ref.tag:
            raise typer.BadParameter(f"--build-cache {ref}: a tagged registry reference")
    return ref


def _target(source: str, target: str | None, suffix: str | None) -> str:
    if target and suffix:
        raise typer.BadParameter("give --target or --target-suffix, not both")
    if target:
        return target
    if not suffix:
        raise typer.BadParameter("--target (or --target-suffix) is required")
    spec = parse_spec(source)
    if spec.kind != "registry" or spec.ref is None or not spec.ref.tag:
        raise typer.BadParameter("--target-suffix needs a tagged registry source")
    return str(spec.ref.with_tag(spec.ref.tag + suffix))


@app.command("convert")
def convert_cmd(
    source: Annotated[str, typer.Option(help=ImageSpec)],
    target: Annotated[str | None, typer.Option(help="Where to write the Nydus image.")] = None,
    target_suffix: TargetSuffixFlag = None,
    platform: PlatformFlag = None,
    all_platforms: AllPlatformsFlag = False,
    merge_platform: Annotated[
        bool,
        typer.Option(
            "--merge-platform", help="Write one index holding the OCI and the Nydus manifests."
        ),
    ] = False,
    fs_version: FsVersionFlag = FsVersion.v6,
    compressor: CompressorFlag = Compressor.zstd,
    chunk_size: ChunkSizeFlag = "0x100000",
    chunk_dict: Annotated[
        str | None, typer.Option(help="bootstrap:PATH or registry:REF of a chunk dictionary.")
    ] = None,
    prefetch_patterns: PrefetchFlag = None,
    jobs: JobsFlag = DEFAULT_JOBS,
    work_dir: Annotated[Path | None, typer.Option(help="Where temporary files go.")] = None,
    keep_work_dir: Annotated[
        bool, typer.Option("--keep-work-dir", help="Keep the work dir for debugging.")
    ] = False,
    plain_http: PlainHttpFlag = False,
    insecure: InsecureFlag = False,
    source_creds: SourceCredsFlag = None,
    target_creds: TargetCredsFlag = None,
    max_layer_size: MaxLayerSizeFlag = None,
    build_cache: Annotated[
        str | None,
        typer.Option(help="Build cache image (REF): layers converted before are reused."),
    ] = None,
    build_cache_tag: BuildCacheTagFlag = None,
    build_cache_max_records: Annotated[
        int, typer.Option(min=1, max=DEFAULT_CACHE_RECORDS, help="Records kept per platform.")
    ] = DEFAULT_CACHE_RECORDS,
    build_cache_insecure: Annotated[
        bool,
        typer.Option("--build-cache-insecure", help="Skip TLS verification for the cache."),
    ] = False,
    output_json: Annotated[
        Path | None, typer.Option(help="Write a JSON report (times, exact sizes, digests).")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Then run `rconv check` on the result.")
    ] = False,
    oci_ref: Annotated[
        bool,
        typer.Option(
            "--oci-ref",
            help="Reference the source's gzip layers (zran): push only small ref blobs and the "
            "bootstrap; the layers must be in (or mountable into) the target repository.",
        ),
    ] = False,
) -> None:
    """Convert an OCI image into a Nydus image (blobs first, the tag last)."""
    _leave_quickly()
    start_early()  # convert.forkserver: the workers' imports overlap the ones below
    from convert.pipeline import convert

    with _user_errors():
        resolved = _target(source, target, target_suffix)
        opts = ConvertOptions(
            source=source,
            target=resolved,
            rafs=RafsOptions(int(fs_version.value), _chunk_size(chunk_size), compressor.value),
            platforms=_platforms(platform),
            all_platforms=all_platforms,
            merge_platform=merge_platform,
            chunk_dict=chunk_dict,
            prefetch=_prefetch(prefetch_patterns) or DEFAULT_PREFETCH,
            jobs=jobs,
            work_dir=work_dir,
            keep_work_dir=keep_work_dir,
            max_layer_size=_size(max_layer_size),
            build_cache=_build_cache(resolved, build_cache, build_cache_tag),
            build_cache_max_records=build_cache_max_records,
            oci_ref=oci_ref,
        )
        cache_host = parse_spec(opts.build_cache).ref if opts.build_cache else None
        insecure_hosts = (cache_host.registry,) if cache_host and build_cache_insecure else ()
        client = _client(
            plain_http, insecure, (source, source_creds), (opts.target, target_creds),
            insecure_hosts=insecure_hosts,
        )  # fmt: skip
        progress = make_progress()
        try:
            try:
                report = convert(opts, client, progress)
            except KeyboardInterrupt:
                typer.echo("rconv: error: interrupted; the target tag was not changed", err=True)
                raise typer.Exit(130) from None
            if check:
                from convert.check.run import CheckOptions, progress_to, run_check

                check_opts = CheckOptions(opts.platforms, opts.all_platforms)
                checked = run_check(
                    opts.target, opts.source, client, check_opts, progress.log,
                    progress_to(progress),
                )  # fmt: skip
        finally:
            progress.close()
        for p in report.platforms:
            for warning in p.warnings:
                typer.echo(f"rconv: warning: {warning}", err=True)
        if output_json:
            output_json.write_text(json.dumps(report.to_json(), indent=1) + "\n")
        stored = sum(layer.blob_size for p in report.platforms for layer in p.layers)
        deduped = sum(layer.chunks_deduped for p in report.platforms for layer in p.layers)
        typer.echo(
            f"converted {opts.source} -> {opts.target} ({report.target_digest}): "
            f"{len(report.platforms)} platform(s), {human_size(stored)} of blobs, "
            f"{deduped} chunks deduplicated across layers, {report.seconds:.1f} s"
        )
        if check:
            for line in checked.render():
                typer.echo(line)
            if not checked.ok:
                raise typer.Exit(1)


def _terminate(signum, frame) -> None:
    # SIGTERM unwinds like Ctrl-C, so work dirs are removed and nothing half-done is pushed.
    raise KeyboardInterrupt


@app.command("check")
def check_cmd(
    target: Annotated[str, typer.Option(help=f"The Nydus image: {ImageSpec}.")],
    source: Annotated[
        str | None, typer.Option(help="The OCI image it came from: compare every path.")
    ] = None,
    platform: PlatformFlag = None,
    all_platforms: AllPlatformsFlag = False,
    full: Annotated[
        bool, typer.Option("--full", help="Also download whole blobs, verify digests.")
    ] = False,
    jobs: Annotated[int, typer.Option(min=1, help="Concurrent range requests.")] = 8,
    output_json: Annotated[Path | None, typer.Option(help="Write the report as JSON.")] = None,
    plain_http: PlainHttpFlag = False,
    insecure: InsecureFlag = False,
    source_creds: SourceCredsFlag = None,
    target_creds: TargetCredsFlag = None,
) -> None:
    """Prove a Nydus image equivalent to its source (exit 0 only when it is)."""
    from convert.check.run import CheckOptions, progress_to, run_check

    bar = make_progress()
    try:
        with _user_errors():
            client = _client(plain_http, insecure, (source, source_creds), (target, target_creds))
            opts = CheckOptions(_platforms(platform), all_platforms, full, jobs)
            report = run_check(target, source, client, opts, bar.log, progress_to(bar))
    finally:
        bar.close()
    for line in report.render():
        typer.echo(line)
    if output_json:
        output_json.write_text(json.dumps(report.to_json(), indent=1) + "\n")
    raise typer.Exit(0 if report.ok else 1)


def _needs_serve_extra() -> None:
    """One line, not a traceback, where rconv was installed without its ``serve`` extra."""
    import importlib.util

    missing = [m for m in ("celery", "starlette", "uvicorn", "prometheus_client", "sqlalchemy")
               if importlib.util.find_spec(m) is None]  # fmt: skip
    if missing:
        raise ConvertError(
            f"this command needs rconv's 'serve' extra (pip install 'rconv[serve]'); "
            f"missing: {', '.join(missing)}"
        )


def _given(ctx: typer.Context) -> dict[str, object]:
    """The options given on the command line or by environment variable, not defaulted.
    (By name: Typer carries its own copy of click, whose ``ParameterSource`` is another enum.)"""
    given = ("COMMANDLINE", "ENVIRONMENT")
    return {
        k: v
        for k, v in ctx.params.items()
        if getattr(ctx.get_parameter_source(k), "name", None) in given
    }


@app.command("serve")
def serve_cmd(
    ctx: typer.Context,
    listen: Annotated[
        str | None, typer.Option(envvar="RCONV_LISTEN", help="HOST:PORT (default 127.0.0.1:8340).")
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option(envvar="RCONV_BROKER", help="redis://HOST:PORT/DB (default: SQLite here)."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=0, help="Local worker processes (default 1; 0: none).")
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(envvar="RCONV_STATE_DIR", help="Task index and embedded broker."),
    ] = None,
    auth_header: Annotated[
        str | None,
        typer.Option(envvar="RCONV_AUTH_HEADER", help="Every call must send Authorization: V."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(envvar="RCONV_CONFIG", help="TOML settings file.")
    ] = None,
    target_suffix: TargetSuffixFlag = "-nydus",
    build_cache_tag: BuildCacheTagFlag = None,
    platform: PlatformFlag = None,
    all_platforms: AllPlatformsFlag = False,
    fs_version: FsVersionFlag = FsVersion.v6,
    compressor: CompressorFlag = Compressor.zstd,
    chunk_size: ChunkSizeFlag = "0x100000",
    jobs: JobsFlag = SERVICE_JOBS,
    max_layer_size: MaxLayerSizeFlag = None,
    plain_http: PlainHttpFlag = False,
    insecure: InsecureFlag = False,
    max_retries: Annotated[
        int | None, typer.Option(min=0, help="Retries of a temporary failure (default 3).")
    ] = None,
    retry_backoff: Annotated[
        float | None, typer.Option(min=0, help="First retry delay in s, doubling (default 2).")
    ] = None,
    visibility_timeout: Annotated[
        float | None,
        typer.Option(min=1, help="Redis: redeliver a task unacknowledged this long (s)."),
    ] = None,
) -> None:
    """Run the conversion service: registry webhooks in, Nydus images out (see README).

    Settings: defaults, then the --config file, then the options given here."""
    to_setting = {
        "platform": ("platforms", lambda v: v),
        "fs_version": ("fs_version", lambda v: int(v.value)),
        "compressor": ("compressor", lambda v: v.value),
        "chunk_size": ("chunk_size", _chunk_size),
        "max_layer_size": ("max_layer_size", _size),
    }
    with _user_errors():
        _needs_serve_extra()
        from convert.serve.config import load_config
        from convert.serve.run import serve

        overrides = {}
        for name, value in _given(ctx).items():
            key, convert_value = to_setting.get(name, (name, lambda v: v))
            overrides[key] = convert_value(value)
        overrides.pop("config", None)
        serve(load_config(config, overrides), verbose=_state["debug"])


@app.command("worker")
def worker_cmd(
    broker: Annotated[str, typer.Option(envvar="RCONV_BROKER", help="The service's broker URL.")],
    concurrency: Annotated[int, typer.Option(min=1, help="Conversions at once.")] = 1,
    result_backend: Annotated[
        str | None, typer.Option(help="Result store (default: derived from the broker).")
    ] = None,
    visibility_timeout: Annotated[
        float, typer.Option(min=1, help="Redis: redeliver a task unacknowledged this long (s).")
    ] = 3600.0,
) -> None:
    """Run conversion workers taking tasks from the broker of an `rconv serve`."""
    with _user_errors():
        _needs_serve_extra()
        from convert.serve.run import worker

        worker(broker, result_backend, concurrency, visibility_timeout, _state["debug"])


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    # The registry commands build the TLS context on a thread while the rest loads: a guess
    # from the first two arguments, only about when (a wrong one costs ~20 ms of another
    # core). Not `serve` nor its workers: they fork.
    if any(arg in ("convert", "check", "copy") for arg in sys.argv[1:3]):
        build_tls_ahead()
    try:
        app()
    except SystemExit as done:  # how the command line always ends
        status = done.code
    else:
        status = 0
    finally:
        # The command is over and its exit status decided: a signal that arrives while the
        # interpreter shuts down has nothing left to stop or clean up.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if _state["quick_exit"]:
        _exit_now(status)
    sys.exit(status)


def _exit_now(status: object) -> NoReturn:
    """``sys.exit(status)`` without the teardown. Nothing is lost: the command closed its
    files, stopped its worker processes and removed its work dir on its way out; only the
    standard streams may still hold output."""
    if status is None:
        code = 0
    elif isinstance(status, int):
        code = status
    else:  # as the interpreter does with a non-integer exit status
        print(status, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):  # a closed pipe: nothing more to say anyway
            stream.flush()
    remove_server_dir()  # the teardown's finalizer would have
    os._exit(code)


if __name__ == "__main__":
    main()
