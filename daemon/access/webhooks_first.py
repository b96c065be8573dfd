"""Webhooks first: while Envoy waits for answers, due work takes at most a share of the CPU.

One interpreter runs the webhooks and the runner's workers, and CPython shares its one core
between runnable threads alike: in a flood of sign-ins, workers issuing credentials took most
of it and the accepts waited (BENCHMARKS.md, issue 15). Envoy retries what it does not get
answered; due work loses nothing by waiting a little, it is in the database. So while
webhooks are in flight, each step of due work, before it starts, waits until the CPU spent by
earlier steps is within `share` of the time: a step's Proxy round trips cost nothing here,
only its own CPU. Without webhooks, steps start at once.
"""

import contextlib
import threading
import time


class WebhooksFirst:
    def __init__(self, share: float = 0.25):
        self.share = share
        self._serving = 0
        self._next_turn = 0.0  # monotonic instant before which no paced step starts
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
    def step(self):
        """Around one step of due work (one action)."""
        with self._changed:
            while self._serving and time.monotonic() < self._next_turn:
                self._changed.wait(self._next_turn - time.monotonic())
        cpu = time.thread_time()
        try:
            yield
        finally:
            spent = time.thread_time() - cpu
            with self._changed:
                if self._serving:
                    start = max(self._next_turn, time.monotonic())
                    self._next_turn = start + spent * (1 - self.share) / self.share
