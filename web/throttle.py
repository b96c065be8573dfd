"""Failed logins are slowed down per source address: a password cannot be guessed at speed.

Each address has a few free failures; then every further failure shuts it out for twice as
long as the one before (up to `MAX_WAIT` seconds), and a request in that time is refused
(429, Retry-After) before its password is even compared. A success clears the address.
Kept in memory: a restart forgets, which costs a guesser one more round of free tries.
"""

import math
import threading
import time
from collections import OrderedDict

FREE_FAILURES = 5
MAX_WAIT = 900.0
MAX_ADDRESSES = 10_000  # the oldest are forgotten first: memory stays bounded under a flood


class LoginThrottle:
    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # count, shut until

    def wait(self, address: str) -> int:
        """Seconds this address must still wait before it may try again (0: it may now)."""
        with self._lock:
            _, until = self._failures.get(address, (0, 0.0))
        return max(0, math.ceil(until - self._clock()))

    def failed(self, address: str) -> int:
        """Record a wrong login; returns how many in a row this address has failed."""
        with self._lock:
            count = self._failures.pop(address, (0, 0.0))[0] + 1
            extra = count - FREE_FAILURES
            until = self._clock() + min(2.0 ** (extra - 1), MAX_WAIT) if extra > 0 else 0.0
            self._failures[address] = (count, until)
            while len(self._failures) > MAX_ADDRESSES:
                self._failures.popitem(last=False)
            return count

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)
