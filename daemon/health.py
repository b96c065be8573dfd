"""Is the daemon healthy, and if not, why: the one answer behind `/healthz`, the systemd
watchdog, the status page and `envoy-proxy status`.

Healthy means due work gets done. A live thread is not enough: with a poison row, a corrupt
page or a full disk every run raises while the thread lives on. So the daemon is unhealthy
when any of these holds:
- the last run of due work raised (a run that failed is not a run);
- the scheduler thread is dead, or no run has ended within a few sweeps;
- the database cannot be written (a tiny write is committed, waiting at most about a
  second for the lock, so a locked database gives an answer rather than a hang);
- due work is overdue: an unclaimed action due more than `overdue_seconds` ago, or an ending
  (`revoke`) due that long ago and still pending, because it keeps failing.

Each reason has a `summary`, safe for anyone who can reach `/healthz` (no names, addresses or
error texts), and a `detail` for the admin (status page, CLI), with secrets masked.
"""

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import db
from daemon.retry import MAX_RETRY_AFTER_SECONDS
from db import Action, write_probe

log = logging.getLogger("envoy_proxy.health")

OVERDUE_SECONDS = 300
STALE_SWEEPS = 3  # no run ended for this many sweeps: the scheduler is stuck
PROBE_TIMEOUT_SECONDS = 1.0
# A failing ending's next attempt is at most the outbox's backoff cap (2 min) away, or as far
# as Proxy's Retry-After, which is bounded: pending work due within this horizon is read.
RETRY_HORIZON_SECONDS = MAX_RETRY_AFTER_SECONDS
REVOKE = "revoke"


@dataclass(frozen=True)
class Reason:
    code: str  # stable, for scripts: run_failed, scheduler_dead, ...
    summary: str  # safe to show anyone
    detail: str | None = None  # for the admin only; secrets masked


@dataclass(frozen=True)
class Verdict:
    """One health check's answer. `runs` (the scheduler's `Runs`) and `scheduler_alive` are
    None where no scheduler runs in this process (the CLI)."""

    reasons: tuple[Reason, ...]
    schema: int | None = None  # the database's schema version; None if it cannot be read
    runs: Any = None
    scheduler_alive: bool | None = None

    @property
    def healthy(self) -> bool:
        return not self.reasons

    def summaries(self) -> list[str]:
        return [reason.summary for reason in self.reasons]


def _no_mask(text: str) -> str:
    return text


def _pending():
    return Action.done == False  # noqa: E712 (peewee expression)


def overdue_work(now: int, overdue_seconds: int) -> Reason | None:
    """Due work nobody has run: the oldest unclaimed action due `overdue_seconds` ago.

    Walks `action_pending (done, next_attempt_at)` from the oldest; answered at once
    whatever the number of pending actions (BENCHMARKS-style check in tests/test_health).
    """
    cutoff = now - overdue_seconds
    row = (
        Action.select(Action.id, Action.kind, Action.next_attempt_at)
        .where(
            _pending()
            & (Action.next_attempt_at <= cutoff)
            & (Action.claimed_until.is_null() | (Action.claimed_until < now))
        )
        .order_by(Action.next_attempt_at)
        .first()
    )
    if row is None:
        return None
    late = now - row.next_attempt_at
    return Reason(
        "work_overdue",
        f"due work is overdue: the oldest was due {late} s ago (threshold {overdue_seconds} s)",
        f"action {row.id} ({row.kind}) due {late} s ago has not been run",
    )


def overdue_ending(now: int, overdue_seconds: int, mask: Callable[[str], str]) -> Reason | None:
    """An ending (revoke) due `overdue_seconds` ago and still pending: it keeps failing.

    Backoff keeps its next attempt close, so only pending work due within the retry horizon
    is read (the same index, in due order, stopping at the first hit). Measured: 2 ms with
    1,000,000 pending actions spread over a month; 260 ms in the worst case, all of them due
    within the hour (an index on pending revokes' `due_at` would make it constant).
    """
    cutoff = now - overdue_seconds
    row = (
        Action.select(Action.id, Action.grant, Action.due_at, Action.attempts, Action.last_error)
        .where(
            _pending()
            & (Action.next_attempt_at <= now + RETRY_HORIZON_SECONDS)
            & (Action.kind == REVOKE)
            & (Action.due_at <= cutoff)
        )
        .order_by(Action.next_attempt_at)
        .first()
    )
    if row is None:
        return None
    late = now - row.due_at
    error = mask(row.last_error) if row.last_error else "no error recorded"
    return Reason(
        "ending_overdue",
        f"an ending is overdue: access that should have ended {late} s ago is still active"
        f" (threshold {overdue_seconds} s)",
        f"revoke action {row.id} of grant {row.grant_id}, {row.attempts} attempts: {error}",
    )


def scheduler_reasons(state) -> list[Reason]:
    """What the scheduler's state (`scheduler.AlarmState`) says is wrong."""
    reasons = []
    runs = state.runs
    if runs.failing:
        reasons.append(
            Reason(
                "run_failed",
                f"the last run of due work failed ({runs.consecutive_failures} in a row)",
                runs.last_error,
            )
        )
    if state.started and not state.thread_alive:
        reasons.append(
            Reason("scheduler_dead", "the scheduler thread is not running: due work is not done")
        )
    elif state.idle_seconds is not None and (
        state.idle_seconds > STALE_SWEEPS * state.sweep_seconds
    ):
        reasons.append(
            Reason(
                "scheduler_stalled",
                f"no run of due work has ended for {state.idle_seconds:.0f} s"
                f" (the sweep runs every {state.sweep_seconds} s)",
            )
        )
    return reasons


class Health:
    """Built once per process; `watch(alarm.state)` where a scheduler runs (the daemon).

    The scheduler is known by a callable giving its `scheduler.AlarmState` (`daemon` does
    not import the scheduler: the composition root wires them).
    """

    def __init__(
        self,
        overdue_seconds: int = OVERDUE_SECONDS,
        mask: Callable[[str], str] = _no_mask,
        probe_timeout: float = PROBE_TIMEOUT_SECONDS,
    ):
        self.overdue_seconds = overdue_seconds
        self._mask = mask
        self._probe_timeout = probe_timeout
        self._scheduler_state: Callable[[], Any] | None = None
        self._lock = threading.Lock()
        self._codes: tuple[str, ...] = ()  # the last verdict's, to log changes once

    def watch(self, scheduler_state: Callable[[], Any]) -> None:
        self._scheduler_state = scheduler_state

    def check(self, now: int | None = None) -> Verdict:
        """Every reason to be unhealthy, now; never raises (a broken database is a reason)."""
        now = db.now_epoch() if now is None else now
        database, schema = self._database_reasons(now)
        if self._scheduler_state is None:
            verdict = Verdict(tuple(database), schema)
        else:
            state = self._scheduler_state()
            verdict = Verdict(
                tuple(scheduler_reasons(state) + database),
                schema,
                state.runs,
                state.started and state.thread_alive,
            )
        self._log_change(verdict)
        return verdict

    def _log_change(self, verdict: Verdict) -> None:
        """One line when the health changes, not one per check (monitors poll often)."""
        codes = tuple(reason.code for reason in verdict.reasons)
        with self._lock:
            changed, self._codes = codes != self._codes, codes
        if not changed:
            return
        if verdict.healthy:
            log.info("healthy again")
        else:
            log.error("unhealthy: %s", "; ".join(verdict.summaries()))

    def problems(self) -> list[str]:
        """The summaries of `check()`: empty when healthy (the watchdog's question)."""
        return self.check().summaries()

    def _database_reasons(self, now: int) -> tuple[list[Reason], int | None]:
        """The reasons the database gives, and its schema version."""
        try:
            with db.database.connection_context():
                schema = db.schema_version()
                found = [
                    _schema_reason(schema),
                    overdue_work(now, self.overdue_seconds),
                    overdue_ending(now, self.overdue_seconds, self._mask),
                ]
        except Exception as error:  # a corrupt page, an I/O error: the check must answer
            unreadable = Reason(
                "database_unreadable",
                f"the database cannot be read ({type(error).__name__})",
                self._mask(str(error)),
            )
            return [unreadable], None
        unwritable = write_probe(db.database.database, self._probe_timeout)
        if unwritable is not None:
            found.append(
                Reason("database_unwritable", f"the database cannot be written: {unwritable}")
            )
        return [reason for reason in found if reason is not None], schema


def _schema_reason(schema: int) -> Reason | None:
    """The daemon migrated at start: another version means another program changed it."""
    if schema == db.SCHEMA_VERSION:
        return None
    return Reason(
        "schema_mismatch",
        f"the database has schema version {schema}, this daemon expects {db.SCHEMA_VERSION}",
    )
