"""The service's own worker: one ``rconv worker`` child process (the command other machines
run), watched and started again if it dies.

On the embedded broker that matters beyond restarting: kombu's SQL transport marks a message
taken when it hands it out and puts it back only on a clean shutdown, so the tasks a worker
held when it was killed (running, or waiting for a retry) would stay lost. The service sends
them again, from its index, when it finds its worker dead and when it starts. A task that had
in fact finished costs its redelivery one manifest read (the worker's target check); one still
running in an orphaned pool process converts twice to the same bytes. Redis needs none of
this: its visibility timeout delivers such messages again to any worker.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Callable

log = logging.getLogger("rconv.serve")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()  # Celery's warm shutdown: running tasks finish, waiting ones stay queued
    try:
        proc.wait(30)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):  # too long, or a second Ctrl-C
        proc.kill()  # unacknowledged tasks go back to the queue (acks late)
        proc.wait()


class LocalWorker:
    """``resend`` (None on Redis) sends the held tasks again and says how many."""

    def __init__(self, argv: list[str], resend: Callable[[], int] | None) -> None:
        self.argv, self.resend = argv, resend
        self._stopping = threading.Event()
        self.proc = self._start()
        self._thread = threading.Thread(target=self._watch, name="rconv-local-worker", daemon=True)
        self._thread.start()

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "convert", *self.argv], stdin=subprocess.DEVNULL
        )

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            if self.proc.poll() is None:
                continue
            log.warning("the local worker exited (%s); starting it again", self.proc.returncode)
            self.proc = self._start()
            if self.resend is not None:
                log.warning("%d task(s) it held sent again", self.resend())

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        stop(self.proc)
