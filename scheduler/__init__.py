"""APScheduler as a precise alarm clock over the database; it never holds work of its own.

One `date` job is armed to the earliest due action and re-armed after every commit that makes
something due sooner; an interval sweep is the safety net. Both call the same `run_due`, which
claims due rows in the database and returns the next due instant. APScheduler's job store is
memory only: losing it loses nothing, since the database is rebuilt into one timer at start.

Fires are at least `MIN_GAP_SECONDS` apart. In a flood every webhook re-armed the alarm for
"now", and each fire claimed (a write transaction, an fsync on SQLite) the one or two actions
committed since the last: ~10,000 fires for 9,000 events, each taking the write lock from the
webhooks (BENCHMARKS.md). With the gap one claim takes what arrived meanwhile, for at most
20 ms more to a credential; endings, due to the second, do not notice.

A run that raised is a failure, not a run: the alarm keeps its last success and its last
failure apart (`Runs`), so that a health check sees work failing and not just a live thread.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger("envoy_proxy.scheduler")

_DUE_JOB = "due"
_SWEEP_JOB = "sweep"
ERROR_TEXT_LIMIT = 500
MIN_GAP_SECONDS = 0.02  # between the starts of two fires (module docstring)


@dataclass(frozen=True)
class Runs:
    """What the runs of due work did lately. Instants are epoch seconds (for people);
    `finished` is `time.monotonic()` (for "how long since", immune to clock steps)."""

    last_success_at: float | None = None
    last_failure_at: float | None = None
    last_error: str | None = None  # the exception's type and text, secrets masked
    consecutive_failures: int = 0
    finished: float | None = None

    @property
    def failing(self) -> bool:
        """The last run that finished raised."""
        return self.consecutive_failures > 0


@dataclass(frozen=True)
class AlarmState:
    """A snapshot for the health check: is the thread there, and when did a run last end."""

    thread_alive: bool
    started: bool
    runs: Runs
    sweep_seconds: int
    idle_seconds: float | None  # since the last run ended, or since start; None before start


def _no_mask(text: str) -> str:
    return text


class Alarm:
    """Calls `run_due()` when the next action is due; `run_due` returns the next due epoch.

    `mask` removes secrets from the error text a failed run leaves for the health check.
    """

    def __init__(
        self,
        run_due: Callable[[], int | None],
        sweep_seconds: int = 30,
        mask: Callable[[str], str] = _no_mask,
    ):
        self._run_due = run_due
        self._sweep_seconds = sweep_seconds
        self._mask = mask
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # signalled when no run is under way
        self._running = 0
        self._stopping = False
        self._armed_at: int | None = None
        self._fired_at: float | None = None  # monotonic: when the last fire started
        self._started_at: float | None = None  # monotonic
        self.runs = Runs()
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
        with self._lock:
            self._started_at = time.monotonic()
            # Asked for before the start (the catch-up's workers re-arm as they finish).
            early, self._armed_at = self._armed_at, None
        self.rearm(min((t for t in (next_due, early) if t is not None), default=None))

    def rearm(self, at: int | None) -> None:
        """Make sure the timer goes off no later than `at` (epoch seconds)."""
        if at is None:
            return
        with self._lock:
            if self._stopping or (self._armed_at is not None and self._armed_at <= at):
                return
            self._armed_at = at
            if self._started_at is None:
                return  # no job to move yet: start() arms for it
            when = datetime.fromtimestamp(self._not_before(at), UTC)
            # Under the lock: two re-arms must not reorder their moves.
            self._scheduler.modify_job(_DUE_JOB, next_run_time=when)

    def _not_before(self, at: int) -> float:
        """`at`, or the end of the gap after the last fire if that is later. The gap is kept
        on the monotonic clock: a wall clock stepped back after a fire must not hold the
        alarm back by the step."""
        if self._fired_at is None:
            return at
        wait = self._fired_at + MIN_GAP_SECONDS - time.monotonic()
        return at if wait <= 0 else max(at, time.time() + wait)

    def wakeup(self) -> None:
        """Run now (tests that moved the wall clock with time-machine call this)."""
        self._scheduler.wakeup()
        self.rearm(int(time.time()))

    def run_once(self, work: Callable[[], int | None] | None = None) -> int | None:
        """Run due work now in this thread and record how it went; the next due epoch, or
        None when the run failed (the sweep tries again). `work`: another call than the
        alarm's own, recorded the same way (the start-up catch-up)."""
        try:
            next_due = (work or self._run_due)()
        except Exception as error:
            # Never let the alarm thread die: the sweep will try again.
            log.exception("running due work failed; the sweep will retry")
            self._record(error)
            return None
        self._record(None)
        return next_due

    def _record(self, error: Exception | None) -> None:
        wall, finished = time.time(), time.monotonic()
        with self._lock:
            if error is None:
                self.runs = replace(
                    self.runs, last_success_at=wall, consecutive_failures=0, finished=finished
                )
                return
            text = self._mask(f"{type(error).__name__}: {error}")[:ERROR_TEXT_LIMIT]
            self.runs = replace(
                self.runs,
                last_failure_at=wall,
                last_error=text,
                consecutive_failures=self.runs.consecutive_failures + 1,
                finished=finished,
            )

    def _fire(self) -> None:
        with self._lock:
            if self._stopping:
                return
            self._armed_at = None
            self._fired_at = time.monotonic()
            self._running += 1
        try:
            next_due = self.run_once()
        finally:
            with self._lock:
                self._running -= 1
                self._idle.notify_all()
        self.rearm(next_due)

    def state(self) -> AlarmState:
        """Is the scheduler thread alive, and how long since a run (or the start) ended.

        APScheduler's thread can die on an exception while `running` still says True, so
        the thread itself is asked.
        """
        thread = getattr(self._scheduler, "_thread", None)
        with self._lock:
            runs, started = self.runs, self._started_at
        since = max(t for t in (runs.finished, started) if t is not None) if started else None
        return AlarmState(
            thread_alive=thread is not None and thread.is_alive(),
            started=started is not None,
            runs=runs,
            sweep_seconds=self._sweep_seconds,
            idle_seconds=None if since is None else time.monotonic() - since,
        )

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
