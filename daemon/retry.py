"""When to try again: one backoff rule and one `Retry-After` reading for every retry we make.

Both HTTP clients retry inside one call's time budget (`Budget`); the outbox retries across
scheduler runs (`backoff_seconds` with its own cap). Full jitter spreads the retries of many
callers that failed together, so a Proxy that comes back is not hit by all of them at once.
"""

import email.utils
import math
import random
import re
import time
from datetime import UTC

BASE_SECONDS = 5.0  # the outbox's first retries: a few seconds, doubling
CALL_BASE_SECONDS = 0.2  # retries inside one HTTP call's budget: a fraction of a second
CALL_CAP_SECONDS = 5.0
# The longest wait a server may impose through Retry-After: beyond it we ask again anyway
# (a date years ahead or "1e400" must not park an ending forever, nor overflow a timestamp).
MAX_RETRY_AFTER_SECONDS = 3600.0
_MAX_DOUBLINGS = 64  # 2**64 already exceeds every cap; keeps huge attempt counts finite
_DELTA_SECONDS = re.compile(r"[0-9]+(\.[0-9]+)?")


def backoff_seconds(attempts: int, cap: float, base: float = BASE_SECONDS) -> float:
    """A random delay in [0, min(cap, base·2^attempts)] ("full jitter"), for any attempt count.

    `attempts` is how many tries already failed (0 or more); the outbox passes its own cap.
    """
    ceiling = min(cap, base * 2.0 ** min(max(attempts, 0), _MAX_DOUBLINGS))
    return random.uniform(0, max(ceiling, 0.0))


def retry_after_seconds(value: str | None, *, default: float = 0.0, now: float | None = None):
    """The seconds a `Retry-After` header asks us to wait, within [0, MAX_RETRY_AFTER_SECONDS].

    The header is delta-seconds or an HTTP date (RFC 9110 §10.2.3); a date already past asks
    for no wait. A missing or unreadable value gives `default`. `now`: UTC epoch seconds.
    """
    text = (value or "").strip()
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
            if when.tzinfo is None:  # "-0000": UTC without a claim about the local zone
                when = when.replace(tzinfo=UTC)
            seconds = when.timestamp() - (time.time() if now is None else now)
        except (TypeError, ValueError, IndexError, OverflowError):
            return default
    if not math.isfinite(seconds):
        return MAX_RETRY_AFTER_SECONDS
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


class Budget:
    """The time one logical call may spend on its attempts and the pauses between them."""

    def __init__(self, seconds: float, *, cap: float = CALL_CAP_SECONDS, clock=time.monotonic):
        self.clock = clock
        self.deadline = clock() + seconds
        self.cap = cap
        self.retries = 0  # pauses granted so far

    def pause(self, at_least: float = 0.0) -> float | None:
        """Seconds to wait before the next attempt (the backoff, or `at_least` if longer, as a
        server's Retry-After), or None when the next attempt would start after the deadline."""
        delay = max(backoff_seconds(self.retries, self.cap, CALL_BASE_SECONDS), at_least)
        if self.clock() + delay > self.deadline:
            return None
        self.retries += 1
        return delay
