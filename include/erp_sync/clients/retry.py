"""The retry policy, declared once: which failures are retried, how long to wait, when to give up.

Waits are exponential with full jitter (AWS architecture blog, "Exponential Backoff And Jitter"),
never shorter than the server's `Retry-After`. `sleep`, `random` and `clock` are injectable so unit
tests run instantly and deterministically.
"""

from __future__ import annotations

import random as _random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRIABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8  # per request, first try included
    max_elapsed_s: float = 300.0  # per request, waits included
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    malformed_attempts: int = 3  # a broken body is retried this many times in all
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    random: Callable[[], float] = field(default=_random.SystemRandom().random, repr=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)

    def is_retriable_status(self, status: int) -> bool:
        return status in RETRIABLE_STATUSES or 500 <= status < 600

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempt counts from 1).

        Full jitter: uniform in [0, min(max_delay, base * 2**(attempt-1))]; a `Retry-After` from the
        server is a floor, never shortened by jitter.
        """
        ceiling = min(self.max_delay_s, self.base_delay_s * 2.0 ** (attempt - 1))
        jittered = float(self.random()) * ceiling
        if retry_after is not None:
            return max(retry_after, jittered)
        return jittered

    def may_retry(self, attempt: int, started_at: float, next_delay: float) -> bool:
        """True when another attempt fits in both the attempt and the elapsed-time budget."""
        if attempt >= self.max_attempts:
            return False
        return (self.clock() - started_at) + next_delay <= self.max_elapsed_s


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3); None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds)
