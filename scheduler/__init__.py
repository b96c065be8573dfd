"""APScheduler as a precise alarm clock over the database; it never holds work of its own.

One `date` job is armed to the earliest due action and re-armed after every commit that makes
something due sooner; an interval sweep is the safety net. Both call the same `run_due`, which
claims due rows in the database and returns the next due instant. APScheduler's job store is
memory only: losing it loses nothing, since the database is rebuilt into one timer at start.
"""

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger("envoy_proxy.scheduler")

_DUE_JOB = "due"
_SWEEP_JOB = "sweep"


class Alarm:
    """Calls `run_due()` when the next action is due; `run_due` returns the next due epoch."""

    def __init__(self, run_due: Callable[[], int | None], sweep_seconds: int = 30):
        self._run_due = run_due
        self._sweep_seconds = sweep_seconds
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # signalled when no run is under way
        self._running = 0
        self._stopping = False
        self._armed_at: int | None = None
        self.last_run_at: float | None = None
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max_workers=2)},
            # None: a job that fires late still runs (the default 1 s silently drops it).
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )

    @property
    def next_due(self) -> int | None:
        return self._armed_at

    def start(self, next_due: int | None) -> None:
        self._scheduler.add_job(self._fire, "interval", seconds=self._sweep_seconds, id=_SWEEP_JOB)
        # The alarm is one permanent job that we move: an `interval` job always has a next
        # run time, so APScheduler never removes it after it fires (removing a fired `date`
        # job by id races with re-arming it, and a lookup error there kills its thread).
        # Runs may overlap: run_due claims rows, so concurrent runs are harmless.
        self._scheduler.add_job(
            self._fire, "interval", days=1, id=_DUE_JOB, max_instances=4, next_run_time=None
        )
        self._scheduler.start()
        self.rearm(next_due)

    def rearm(self, at: int | None) -> None:
        """Make sure the timer goes off no later than `at` (epoch seconds)."""
        if at is None:
            return
        with self._lock:
            if self._stopping or (self._armed_at is not None and self._armed_at <= at):
                return
            self._armed_at = at
            when = datetime.fromtimestamp(at, UTC)
            # Under the lock: two re-arms must not reorder their moves.
            self._scheduler.modify_job(_DUE_JOB, next_run_time=when)

    def wakeup(self) -> None:
        """Run now (tests that moved the wall clock with time-machine call this)."""
        self._scheduler.wakeup()
        self.rearm(int(time.time()))

    def _fire(self) -> None:
        with self._lock:
            if self._stopping:
                return
            self._armed_at = None
            self._running += 1
        try:
            next_due = self._run_due()
        except Exception:
            # Never let the alarm thread die: the sweep will try again.
            log.exception("running due work failed; the sweep will retry")
            next_due = None
        finally:
            with self._lock:
                self._running -= 1
                self._idle.notify_all()
        self.last_run_at = time.monotonic()
        self.rearm(next_due)

    def healthy(self) -> bool:
        """True while the scheduler thread lives and due work ran within a few sweeps."""
        thread = getattr(self._scheduler, "_thread", None)
        if thread is None or not thread.is_alive():
            return False
        if self.last_run_at is None:
            return True
        return time.monotonic() - self.last_run_at < 3 * self._sweep_seconds

    def shutdown(self, timeout: float = 20.0) -> None:
        """Stop firing, then wait (up to `timeout`) for a run under way to finish.

        APScheduler's `shutdown(wait=True)` holds its job-store lock while it joins the
        executor, and a finishing run re-arms through that lock: a deadlock. So APScheduler
        is stopped without waiting, and the wait is on our own count of runs.
        """
        with self._lock:
            self._stopping = True
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        with self._lock:
            if not self._idle.wait_for(lambda: self._running == 0, timeout):
                log.warning("a run of due work was still going after %.0f s", timeout)
