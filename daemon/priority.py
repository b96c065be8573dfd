"""Webhooks first: background work gives way while Envoy is waiting for an answer.

The webhooks, the planner and the outbox share one interpreter, and CPython shares its one
core between runnable threads alike: under a flood of sign-ins, eight busy outbox threads
would take most of it and every answer would wait behind them (BENCHMARKS.md §1). Envoy
retries what it does not get answered in time, which only adds load, whereas background work
loses nothing by waiting: it is in the database. So while webhooks are being served,
background steps (an outbox action, a planning slice) go one at a time and, all together,
take at most `share` of the time: they keep moving, endings included, at a pace the webhooks
can bear. Without webhooks they run freely, side by side.
"""

import contextlib
import threading
import time


class WebhooksFirst:
    def __init__(self, share: float = 0.2):
        self.share = share
        self._serving = 0
        self._stepping = False  # a background step paced under load is running
        self._next_turn = 0.0  # monotonic time before which no paced step may start
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def serving(self):
        """Around answering one webhook."""
        with self._changed:
            self._serving += 1
        try:
            yield
        finally:
            with self._changed:
                self._serving -= 1
                if not self._serving:
                    self._changed.notify_all()

    @contextlib.contextmanager
    def background_step(self):
        """Around one step of background work: it waits for its turn while webhooks run."""
        with self._changed:
            while self._serving and (self._stepping or time.monotonic() < self._next_turn):
                wait = None if self._stepping else self._next_turn - time.monotonic()
                self._changed.wait(wait)
            paced = self._serving > 0
            self._stepping = self._stepping or paced
        started = time.monotonic()
        try:
            yield
        finally:
            if paced:
                with self._changed:
                    took = time.monotonic() - started
                    self._next_turn = time.monotonic() + took * (1 - self.share) / self.share
                    self._stepping = False
                    self._changed.notify_all()
