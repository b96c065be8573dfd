"""Concurrent events share one write transaction: a group commit.

SQLite has one writer. Events that arrive together queued for its lock one by one, and each
held it about twice its CPU time, because between its statements the holder waited for the
GIL behind the threads still reading their requests (BENCHMARKS.md, issue 15). Here the first
event in line leads: it takes every event queued by then and runs each in a savepoint of one
IMMEDIATE transaction, so that one event's failure rolls back that event only, then commits
once and hands each event its own result. Nothing is answered before the commit that holds it.

PostgreSQL has no one write lock to queue for: there each event commits in its own
transaction at once, alongside the others. Queued behind one leader, events waited for each
other's round trips to the server (accept p99 498 ms at 50/s, BENCHMARKS.md, issue 18).
"""

import threading
from collections.abc import Callable
from typing import Any

from db import database, writes_one_at_a_time


class _Slot:
    __slots__ = ("done", "error", "result", "wake", "work")

    def __init__(self, work: Callable[[], Any]):
        self.work = work
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False
        self.wake = threading.Event()  # set when done, or when it is this slot's turn to lead

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class GroupCommit:
    """Each waiting event is woken once, by its own flag: when its batch has committed, or
    when it is first in line to lead the next. (One shared condition woke every waiting
    event at every commit, most of them only to wait again: 14% of a flood's CPU.)"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[_Slot] = []
        self._leading = False

    def run(self, work: Callable[[], Any]) -> Any:
        """`work()`'s result once the transaction it ran in has committed (or its error)."""
        if not writes_one_at_a_time():
            with database.atomic():
                return work()
        slot = _Slot(work)
        with self._lock:
            self._queue.append(slot)
            behind_a_leader, self._leading = self._leading, True
        if behind_a_leader:
            slot.wake.wait()
            if slot.done:
                return slot.outcome()
        with self._lock:  # this event leads: it and every event queued by now
            batch, self._queue = self._queue, []
        try:
            self._write(batch)
        finally:
            for each in batch:
                each.done = True
                each.wake.set()
            with self._lock:
                if self._queue:
                    self._queue[0].wake.set()  # the first in line leads the next batch
                else:
                    self._leading = False
        return slot.outcome()

    @staticmethod
    def _write(batch: list[_Slot]) -> None:
        if len(batch) == 1:  # alone: its transaction is its savepoint
            [slot] = batch
            try:
                with database.atomic():
                    slot.result = slot.work()
            except Exception as error:
                slot.error = error
            return
        try:
            with database.atomic():
                for slot in batch:
                    try:
                        with database.atomic():  # a savepoint: this event only
                            slot.result = slot.work()
                    except Exception as error:
                        slot.error = error
        except Exception as error:  # the commit itself failed: nothing of the batch holds
            for slot in batch:
                slot.error = slot.error or error
