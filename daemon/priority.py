"""Webhooks first: background work gives way while Envoy is waiting for an answer.

The webhooks, the planner and the outbox share one interpreter, and CPython shares its one
core between runnable threads alike: under a flood of sign-ins, eight busy outbox threads
would take most of it and every answer would wait behind them (BENCHMARKS.md §1). Envoy
retries what it does not get answered in time, which only adds load, whereas background work
lost nothing by waiting: it is in the database. So a background step first waits until no
webhook is being served, but never longer than `max_wait`, so that it always moves on.
"""

import contextlib
import threading


class WebhooksFirst:
    def __init__(self, max_wait: float = 0.1):
        self.max_wait = max_wait
        self._serving = 0
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
        """Before a step of background work: wait for a moment without webhooks."""
        with self._quiet:
            self._quiet.wait_for(lambda: not self._serving, timeout=self.max_wait)
