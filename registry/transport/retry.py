"""Retry policy of the transport: which answers are worth another try, and how long to wait.

Connection errors (``RegistryError.temporary``) and the statuses in ``RETRY_STATUS`` are
retried. The wait doubles from ``options.backoff`` up to ``options.max_backoff``, with jitter
(half to all of it), unless the server sent ``Retry-After`` (RFC 9110 §10.2.3: seconds or an
HTTP date), which is honoured up to ``options.max_retry_after``. No HTTP here: the sender and
the distribution API call ``Retry.pause`` between their attempts.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable

from ..options import RegistryOptions

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class Retry:
    """How many attempts a request gets, and the sleep between two of them."""

    def __init__(self, options: RegistryOptions, sleep: Callable[[float], None]) -> None:
        self.options = options
        self.attempts = options.retries + 1
        self._sleep = sleep

    def pause(self, attempt: int, retry_after: float | None = None) -> None:
        """Sleep before attempt ``attempt + 1`` (``attempt`` counts from 0)."""
        o = self.options
        if retry_after is not None:
            delay = min(max(retry_after, 0.0), o.max_retry_after)
        else:
            cap = min(o.max_backoff, o.backoff * (2**attempt))
            delay = cap * (0.5 + random.random() / 2)
        self._sleep(delay)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
