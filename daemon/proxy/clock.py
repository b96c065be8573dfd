"""Proxy's clock, as its answers tell it: scheduled statuses are compared with it, not ours.

Every Proxy answer carries a `Date` header (whole seconds). The offset between Proxy's clock
and ours is estimated from it against the middle of the exchange; the truncation to seconds
is centred by adding half a second. With the offset known, a scheduled status can be sent
with a small lead; until an answer has been seen, a larger one is used.
"""

import email.utils
import threading
import time

# Date is whole seconds (the estimate is within 0.5 s) and a POST takes time to arrive; with
# the rounding up to whole seconds, a status takes effect 1-2.5 s after it is asked for.
KNOWN_LEAD_SECONDS = 1.0
UNKNOWN_LEAD_SECONDS = 5.0
RESOLUTION_SECONDS = 1.0  # a smaller offset is the Date header's rounding, not a clock error
SAMPLES = 5  # the median of the last few answers: one slow exchange does not move it


class ProxyClock:
    """One Proxy org's clock offset; shared by every client of that org, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._samples: list[float] = []
        # Person id -> the latest `active` we scheduled for it (Proxy's clock), while ahead.
        self._actives: dict[str, float] = {}

    def observe(self, date_header: str | None, sent_at: float, received_at: float) -> None:
        """Learn from one answer's `Date` (sent_at/received_at: our `time.time()`)."""
        if not date_header:
            return
        try:
            proxy_time = email.utils.parsedate_to_datetime(date_header).timestamp() + 0.5
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        sample = proxy_time - (sent_at + received_at) / 2
        with self._lock:
            self._samples = [*self._samples[-(SAMPLES - 1) :], sample]

    @property
    def offset(self) -> float | None:
        """Seconds Proxy's clock is ahead of ours (negative: behind); None until seen."""
        with self._lock:
            if not self._samples:
                return None
            ordered = sorted(self._samples)
        return ordered[len(ordered) // 2]

    def earliest(self, at: float | None = None) -> float:
        """The instant, on Proxy's clock, to schedule something meant for `at` on ours (None:
        now): never sooner than Proxy's now plus the lead its rule needs."""
        offset = self.offset
        lead = UNKNOWN_LEAD_SECONDS if offset is None else KNOWN_LEAD_SECONDS
        # Within the Date header's resolution the clocks agree: instants are sent unshifted,
        # so a window's end lands on the very second it was set for.
        offset = 0.0 if offset is None or abs(offset) < RESOLUTION_SECONDS else offset
        now = time.time() + offset
        wanted = now if at is None else float(at) + offset
        return max(wanted, now + lead)

    def after_actives(self, person_id: str, when: float) -> float:
        """`when`, or later: a suspension must not land before an `active` we scheduled for
        the same person (an issue retried through an outage scheduled its `active` a few
        seconds ahead; the sign-out that followed at once would have lost to it)."""
        with self._lock:
            return max(when, self._actives.get(person_id, 0.0))

    def note_active(self, person_id: str, when: float) -> None:
        with self._lock:
            horizon = when - 3600  # long past: no suspension could land before it
            self._actives = {p: t for p, t in self._actives.items() if t > horizon}
            self._actives[person_id] = max(when, self._actives.get(person_id, 0.0))

    def keep_latest(self) -> None:
        """Proxy refused a date we thought future: its clock moved (or ours did). Only the
        latest answer, the refusal itself, is believed from now on."""
        with self._lock:
            self._samples = self._samples[-1:]
