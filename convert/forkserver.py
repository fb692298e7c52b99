"""The fork server that layer workers come from (``convert.layerproc``), startable early.

A new server spends ~0.1 s importing the workers' modules before it forks the first worker.
``start_early`` launches it as soon as a conversion is known or guessed (the ``rconv`` entry
point, before the command line loads; ``rconv convert`` again, a no-op then), so that import
runs on another core while this process imports its own modules and reads the source's
manifests. Where the conversion then needs no workers (a small image, every layer found in
the build cache), the idle server costs that 0.1 s of the other core and ends with this
process.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import shutil

# Also what the worker modules import at first use, or each worker would import it again:
# crc32c (every new chunk's CRC; its import reads installed metadata, ~20 ms) and the zran
# indexer (--oci-ref).
WORKER_MODULES = ["convert.layerproc", "crc32c", "rafs.zran.layer"]


def worker_context() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    # Imported once in the fork server, so each worker starts with them loaded.
    context.set_forkserver_preload(WORKER_MODULES)
    return context


def start_early() -> None:
    """Start the fork server now, if this process may have children; a failure is left for
    the conversion to meet (and report) if it needs workers at all."""
    if multiprocessing.current_process().daemon:
        return
    worker_context()
    try:
        multiprocessing.forkserver.ensure_running()
    except OSError:
        pass


def remove_server_dir() -> None:
    """Remove the directory multiprocessing made for the fork server's socket, for a process
    that ends without the interpreter's teardown (whose finalizer removes it otherwise)."""
    tempdir = getattr(multiprocessing.current_process(), "_config", {}).get("tempdir")
    if tempdir:
        shutil.rmtree(tempdir, ignore_errors=True)
