"""Batching: many threads' small requests share one write (a transaction, or a Proxy call).

Each thread that has something to send joins a queue. The first one becomes the leader: it
takes the whole queue, sends it in one call of `write`, hands every waiter its result, and
passes leadership on to the first thread that queued meanwhile. Nobody gets a result before
the write carrying its item has returned. There is no thread of its own to start or stop: the
callers do the work, and a lone caller writes at once unless the batcher gathers (`gather`).

Why (BENCHMARKS.md §1):
- the inbox: an fsync'ed commit and the `BEGIN IMMEDIATE` around it cost more than the insert
  itself, and writers take turns on one lock; at 16 concurrent webhooks a transaction per
  request capped intake at a few hundred per second (group commit);
- Proxy imports: the import endpoint takes a list of persons, and each HTTP exchange costs the
  daemon more CPU than the person it carries. The outbox's threads reach their imports a few
  ms apart, so an import's leader gathers for 5 ms first (F16).
"""

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class _Slot(Generic[Item, Result]):
    __slots__ = ("error", "finished", "item", "leads", "result", "wake")

    def __init__(self, item: Item):
        self.item = item
        self.result: Result | None = None
        self.error: BaseException | None = None
        self.finished = False
        self.leads = False
        self.wake = threading.Event()

    def outcome(self) -> Result:
        if self.error is not None:
            raise self.error
        return self.result


class Batcher(Generic[Item, Result]):
    """`submit(item)` returns `write([...item...])[its index]` once that write returned.

    `write` gets the items in the order they were queued and must return one result per
    item; if it raises, every item of its batch raises the same error. `gather`: seconds a
    leader waits for company before it takes the queue (a "linger"), for writes that cost far
    more than that wait and whose callers do not arrive together on their own.
    """

    def __init__(self, write: Callable[[Sequence[Item]], Sequence[Result]], gather: float = 0.0):
        self._write = write
        self._gather = gather
        self._lock = threading.Lock()
        self._queue: list[_Slot] = []
        self._led = False  # a leader is writing or about to

    def submit(self, item: Item) -> Result:
        slot = _Slot(item)
        with self._lock:
            self._queue.append(slot)
            slot.leads = not self._led
            self._led = True
        if not slot.leads:
            slot.wake.wait()
            if slot.finished:
                return slot.outcome()
        self._lead()
        return slot.outcome()

    def _lead(self) -> None:
        if self._gather:
            time.sleep(self._gather)
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            results = self._write([slot.item for slot in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batched write gave {len(results)} results for {len(batch)}")
        except BaseException as error:
            for slot in batch:
                slot.error = error
        else:
            for slot, result in zip(batch, results, strict=True):
                slot.result = result
        finally:
            with self._lock:
                if self._queue:
                    self._queue[0].leads = True
                    self._queue[0].wake.set()
                else:
                    self._led = False
            for slot in batch:
                slot.finished = True
                slot.wake.set()
