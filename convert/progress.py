"""Progress reporting for `rconv convert`: rich bars per layer on a terminal, plain lines
otherwise (CI logs, pipes). The pipeline only calls the methods of ``Progress``."""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.progress import TaskID


class Progress:
    """Plain log lines on stderr; the base for the terminal version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def log(self, message: str) -> None:
        with self._lock:
            typer.echo(message, err=True)

    def layer_start(self, key: str, label: str, total: int) -> None:
        pass

    def layer_advance(self, key: str, amount: int) -> None:
        pass

    def layer_done(self, key: str, message: str) -> None:
        self.log(message)

    def close(self) -> None:
        pass


class TerminalProgress(Progress):
    """One bar per layer (compressed bytes read), log lines printed above the bars."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichProgress

        self._bars = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._tasks: dict[str, TaskID] = {}
        self._bars.start()

    def log(self, message: str) -> None:
        self._bars.console.print(message, markup=False, highlight=False)

    def layer_start(self, key: str, label: str, total: int) -> None:
        with self._lock:
            self._tasks[key] = self._bars.add_task(label, total=total)

    def layer_advance(self, key: str, amount: int) -> None:
        task = self._tasks.get(key)
        if task is not None:
            self._bars.advance(task, amount)

    def layer_done(self, key: str, message: str) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            self._bars.remove_task(task)
        self.log(message)

    def close(self) -> None:
        self._bars.stop()


def make_progress() -> Progress:
    return TerminalProgress() if sys.stderr.isatty() else Progress()


class CountingStream:
    """Reports bytes read from a stream to a progress callback."""

    def __init__(self, inner: Any, advance) -> None:  # any reader with read and readinto
        self._inner = inner
        self._advance = advance

    def read(self, n: int = -1) -> bytes:
        data = self._inner.read(n)
        if data:
            self._advance(len(data))
        return data

    def readinto(self, buffer) -> int:
        n = self._inner.readinto(buffer)
        if n:
            self._advance(n)
        return n

    def close(self) -> None:
        self._inner.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def human_size(n: float) -> str:
    """``51.1 MB``: decimal units, as registries and ``docker images`` show sizes."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class Silent(Progress):
    """No output at all: the default of the Python API."""

    def log(self, message: str) -> None:
        pass
