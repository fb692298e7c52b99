"""Independent EROFS readers for tests: erofs-utils' fsck.erofs and the kernel driver.

Both read rconv's v6 bootstraps with each blob's uncompressed view as an extra device, in
blob-table order (rafs-v6.md §20).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.conftest import require, require_tool


def fsck_extract(boot: Path, views: list[Path], out: Path) -> None:
    """fsck.erofs --extract; raises with erofs-utils' own message when it rejects the image."""
    fsck = require_tool("fsck.erofs")
    args = [fsck, *[f"--device={v}" for v in views], f"--extract={out}", str(boot)]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 0, f"fsck.erofs failed: {result.stdout}{result.stderr}"


def dump_super(boot: Path, views: list[Path]) -> str:
    dump = require_tool("dump.erofs")
    args = [dump, *[f"--device={v}" for v in views], "-s", str(boot)]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def kernel_available() -> None:
    require(os.geteuid() == 0, "kernel EROFS mounts need root")
    with open("/proc/filesystems") as f:
        require("erofs" in f.read(), "the kernel has no EROFS driver")
    require_tool("losetup")


@contextmanager
def kernel_mount(boot: Path, views: list[Path], where: Path) -> Iterator[Path]:
    """Mount BOOT read-only with one loop device per view; unmounted on exit."""
    kernel_available()
    with ExitStack() as stack:
        loops = []
        for view in views:
            loop = subprocess.run(
                ["losetup", "-f", "--show", "-r", str(view)], capture_output=True, text=True
            )
            require(loop.returncode == 0, f"no loop device: {loop.stderr.strip()}")
            dev = loop.stdout.strip()
            loops.append(dev)
            stack.callback(subprocess.run, ["losetup", "-d", dev], check=False)
        where.mkdir(parents=True, exist_ok=True)
        opts = ",".join(["ro", *[f"device={dev}" for dev in loops]])
        result = subprocess.run(
            ["mount", "-t", "erofs", "-o", opts, str(boot), str(where)],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, f"kernel refused the image: {result.stderr.strip()}"
        stack.callback(subprocess.run, ["umount", str(where)], check=False)
        yield where
