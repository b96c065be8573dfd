"""Webhooks first: background work gives way while Envoy is waiting for an answer.

The webhooks, the planner and the outbox share one interpreter, and CPython shares its one
core between runnable threads alike: under a flood of sign-ins, eight busy outbox threads
would take most of it and every answer would wait behind them (BENCHMARKS.md §1). Envoy
retries what it does not get answered in time, which only adds load, whereas background work
lost nothing by waiting: it is in the database. So while webhooks are being served,
background steps (an outbox action, a planning slice) go one at a time, `spacing` seconds
apart across all threads: they keep moving, endings included, at a pace the webhooks can
bear. Without webhooks they run freely.
"""

import contextlib
import threading
import time


class WebhooksFirst:
    def __init__(self, spacing: float = 0.05):
        self.spacing = spacing
        self._serving = 0
        self._last_turn = -spacing  # monotonic time of the last step taken under load
        self._quiet = threading.Condition()

    @contextlib.contextmanager
    def serving(self):
        """Around answering one webhook."""
        with self._quiet:
            self._serving += 1
        try:
            yield
        finally:
            with self._quiet:
                self._serving -= 1
                if not self._serving:
                    self._quiet.notify_all()

    def give_way(self) -> None:
        """Before a step of background work: wait for a moment without webhooks, or for this
        step's turn (at most `spacing` after the previous step taken under load)."""
        with self._quiet:
            while self._serving:
                now = time.monotonic()
                turn = self._last_turn + self.spacing
                if now >= turn:
                    self._last_turn = now
                    return
                self._quiet.wait(turn - now)
