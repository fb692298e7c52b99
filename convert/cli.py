"""The rconv command line: a thin layer mapping flags to options and library calls.

Every command catches the packages' error bases and prints one line naming what is at
fault, exiting 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
import traceback
from contextlib import ExitStack
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from convert.build import BuildOptions, build, load_bootstrap, merge
from convert.inspect import BlobOpener, blob_views, describe, dump_json, render_text, unpack
from rafs.errors import RafsError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Convert OCI images into Nydus (RAFS v6/v5) images, and build or inspect RAFS.",
    pretty_exceptions_enable=False,
)
_state = {"debug": False}


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


def _chunk_size(value: str) -> int:
    try:
        size = int(value, 0)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a number (use e.g. 0x100000)") from None
    if size & (size - 1) or not 0x1000 <= size <= 0x1000000:
        raise typer.BadParameter("chunk size must be a power of two from 0x1000 to 0x1000000")
    return size


def _prefetch(path: Path | None) -> tuple[bytes, ...]:
    if path is None:
        return ()
    data = sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()
    patterns = [line.strip() for line in data.splitlines()]
    return tuple(p for p in patterns if p.startswith(b"/"))


@app.callback()
def main_options(
    debug: Annotated[
        bool, typer.Option("--debug", "-v", help="Show tracebacks and details on errors.")
    ] = False,
) -> None:
    _state["debug"] = debug


@app.command("build")
def build_cmd(
    source: Annotated[Path, typer.Argument(help="Directory, .tar, .tar.gz or .tar.zst layer.")],
    bootstrap: Annotated[Path, typer.Option(help="Bootstrap file to write.")],
    blob_dir: Annotated[Path, typer.Option(help="Directory receiving DIR/<blob-id>.")],
    fs_version: Annotated[FsVersion, typer.Option(help="RAFS version.")] = FsVersion.v6,
    compressor: Annotated[Compressor, typer.Option()] = Compressor.zstd,
    digester: Annotated[Digester, typer.Option()] = Digester.blake3,
    chunk_size: Annotated[str, typer.Option(help="Chunk size, e.g. 0x100000.")] = "0x100000",
    parent_bootstrap: Annotated[
        Path | None, typer.Option(help="Apply the layer onto this bootstrap (dedup against it).")
    ] = None,
    chunk_dict: Annotated[
        Path | None, typer.Option(help="Bootstrap whose chunks are referenced, not stored.")
    ] = None,
    whiteout_spec: Annotated[WhiteoutSpec, typer.Option()] = WhiteoutSpec.oci,
    prefetch_patterns: Annotated[
        Path | None, typer.Option(help="File (or - for stdin) of absolute paths to prefetch.")
    ] = None,
) -> None:
    """Build one layer into a RAFS bootstrap and a data blob."""
    try:
        opts = BuildOptions(
            fs_version=int(fs_version.value),
            compressor=compressor.value,
            digester=digester.value,
            chunk_size=_chunk_size(chunk_size),
            whiteout_spec=whiteout_spec.value,
            prefetch=_prefetch(prefetch_patterns),
        )
        result = build(source, bootstrap, blob_dir, opts, parent_bootstrap, chunk_dict)
    except (RafsError, OSError) as exc:
        _fail(exc)
    for warning in result.warnings:
        typer.echo(f"rconv: warning: {source}: {warning}", err=True)
    blob = result.blob
    if blob is None:
        typer.echo(f"bootstrap {bootstrap}: no new data (no blob written)")
    else:
        typer.echo(
            f"bootstrap {bootstrap}: blob {blob.blob_id} "
            f"({blob.chunk_count} chunks, {blob.compressed_size} bytes)"
        )


@app.command("merge")
def merge_cmd(
    bootstraps: Annotated[list[Path], typer.Argument(help="Per-layer bootstraps, lowest first.")],
    bootstrap: Annotated[Path, typer.Option(help="Merged bootstrap to write.")],
    prefetch_patterns: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Overlay per-layer bootstraps (built with --whiteout-spec none) with OCI rules."""
    try:
        merged = merge(bootstraps, bootstrap, BuildOptions(prefetch=_prefetch(prefetch_patterns)))
    except (RafsError, OSError) as exc:
        _fail(exc)
    typer.echo(f"bootstrap {bootstrap}: {len(merged.blobs)} blobs")


@app.command("inspect")
def inspect_cmd(
    bootstrap: Annotated[Path, typer.Argument()],
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the superblock, blob table and every node of a bootstrap."""
    try:
        data = bootstrap.read_bytes()
        info = describe(data, load_bootstrap(bootstrap))
    except (RafsError, OSError) as exc:
        _fail(exc)
    if json_out:
        dump_json(info, sys.stdout)
    else:
        sys.stdout.writelines(render_text(info))


@app.command("unpack")
def unpack_cmd(
    bootstrap: Annotated[Path, typer.Argument()],
    blob_dir: Annotated[Path, typer.Option(help="Directory holding the blobs by id.")],
    output: Annotated[Path, typer.Option(help="Layer tar to write.")],
) -> None:
    """Write the image's tree back as an OCI layer tar (data read through the blobs)."""
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        bs = load_bootstrap(bootstrap)
        with ExitStack() as stack, open(tmp, "wb") as out:
            count = unpack(bs, BlobOpener(blob_dir, stack), out)
        tmp.replace(output)
    except (RafsError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        _fail(exc)
    typer.echo(f"{output}: {count} entries")


@app.command("blob-view")
def blob_view_cmd(
    bootstrap: Annotated[Path, typer.Argument()],
    blob_dir: Annotated[Path, typer.Option(help="Directory holding the blobs by id.")],
    output_dir: Annotated[Path, typer.Option(help="Directory receiving one view per blob.")],
) -> None:
    """Write each blob's uncompressed address space (EROFS extra device k = line k)."""
    try:
        bs = load_bootstrap(bootstrap)
        with ExitStack() as stack:
            paths = blob_views(bs, BlobOpener(blob_dir, stack), output_dir)
    except (RafsError, OSError) as exc:
        _fail(exc)
    for k, path in enumerate(paths, start=1):
        typer.echo(f"device {k}: {path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
