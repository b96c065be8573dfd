"""Running due work: claim due outbox actions, carry each out, record the outcome.

The runner is the only place that calls Proxy and Envoy's job API. `Runner.dispatch` (the
alarm's and the sweep's call) claims what is due, endings first, as far as it has free
workers, hands each person's actions to one worker thread and returns at once; a worker that
finishes while more work is due wakes the alarm again, so no action waits for a slow batch.
The work is I/O: the calls in flight scale with Proxy's latency, bounded by `workers`.

Failures are recorded and retried with backoff; an ending (revoke) is never given up; an
Envoy job update is given up after a day of trying. `run_due` runs everything due to the end:
the start-up catch-up, the admin CLI and the tests use it.
"""

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from daemon.access import audit, grants, jobs, outbox, reconcile
from daemon.access.intake import retry_quarantined
from daemon.access.issuing import GrantMoved, Outcome, issue, revoke
from daemon.access.webhooks_first import WebhooksFirst
from daemon.envoy.client import EnvoyError
from daemon.proxy.access import NotConfigured
from daemon.proxy.client import ProxyAuthError, ProxyError, ProxyRateLimited, ProxyUnavailable
from db import (
    LIVE_STATES,
    Action,
    ActionKind,
    Event,
    Grant,
    GrantState,
    database,
    grant_by_id,
    now_epoch,
)

log = logging.getLogger("envoy_proxy.worker")

BATCH = 100  # actions claimed per query
WORKERS = 64  # Proxy calls in flight at most: 10,000 endings of 2 calls each at 120 ms fit in 40 s
JOB_UPDATE_ATTEMPTS = 20


def _cancelling(grant: Grant, now: int):
    return lambda: grants.cancel(grant, now)


def _run_issue(ctx, action: Action, now: int) -> Outcome:
    grant = grant_by_id(action.grant_id)
    if grant.state not in LIVE_STATES:
        return Outcome("skipped: grant closed")
    if grant.ends_at is not None and grant.ends_at <= now and grant.state == GrantState.PENDING:
        if not grants.untouched(grant):
            return Outcome("skipped: window over; the revoke takes back what reached Proxy")
        return Outcome("skipped: window over before issue", _cancelling(grant, now))
    return issue(ctx, grant, now)


def _run_revoke(ctx, action: Action, now: int) -> Outcome:
    grant = grant_by_id(action.grant_id)
    if grant.state == GrantState.PENDING and grants.untouched(grant):
        return Outcome("cancelled before issue", _cancelling(grant, now))
    if grant.state not in LIVE_STATES:
        return Outcome("skipped: grant already closed")
    return revoke(ctx, grant, now)


def _run_job_update(ctx, action: Action, now: int) -> Outcome:
    if ctx.envoy is None:
        raise NotConfigured("ENVOY_CLIENT_ID is not set: Envoy job updates cannot be sent")
    payload = action.payload
    ctx.envoy.update_job(
        payload["job_id"],
        payload["status"],
        message=payload.get("message"),
        failure_reason=payload.get("failure_reason"),
        attachments=payload.get("attachments"),
    )
    return Outcome(f"job {payload['job_id']} {payload['status']}")


def _run_reconcile(ctx, action: Action, now: int) -> Outcome:
    return reconcile.reconcile(ctx, action.payload["scope"], action.payload["email"], now)


EXECUTORS = {
    ActionKind.ISSUE: _run_issue,
    ActionKind.REVOKE: _run_revoke,
    ActionKind.JOB_UPDATE: _run_job_update,
    ActionKind.RECONCILE: _run_reconcile,
}


def _reconcile_later(action: Action, now: int) -> None:
    """After an outcome Proxy may still change (a call it carries out after we gave up), the
    person is compared with its grants again once that call had time to land."""
    if action.grant_id is not None and action.kind in (ActionKind.ISSUE, ActionKind.REVOKE):
        reconcile.enqueue(grant_by_id(action.grant_id), now + reconcile.AFTER_AMBIGUOUS_SECONDS)


def _take_back(action: Action, now: int) -> None:
    """An issue given up on may have reached Proxy half-way (a person imported, a group
    added): the grant ends now, so its revoke takes that back before Envoy hears "failed"."""
    grant = grant_by_id(action.grant_id)
    pending = action.kind == ActionKind.ISSUE and grant.state == GrantState.PENDING
    if pending and not grants.untouched(grant):
        grants.end_at(grant, now, now)


def _settle(action: Action, now: int, sender: str | None = None) -> list[Action]:
    if action.grant_id is None:
        return []
    return jobs.settle(action.grant_id, now, sender)


def execute(ctx, action: Action, now: int, sender: str | None = None) -> list[Action] | None:
    """Run one claimed action. None when it is to be tried again; else it is finished (done
    or given up), and the list holds the Envoy job updates that its success made due, held
    by `sender` for it to send next (none without a sender: the alarm sends them)."""
    started = time.monotonic()
    try:
        outcome = EXECUTORS[action.kind](ctx, action, now)
        with database.atomic():
            audit.work_done(action, outcome.note)
            outcome.record()
            outbox.complete(action, now)
            if outcome.ambiguous:
                _reconcile_later(action, now)
            updates = _settle(action, now, sender)
    except ProxyRateLimited as error:
        with database.atomic():
            outbox.fail(action, now, str(error), retry_after=error.retry_after)
    except (ProxyUnavailable, ProxyAuthError, GrantMoved, EnvoyError) as error:
        with database.atomic():
            outbox.fail(action, now, str(error), dead=_gives_up(action))
            if isinstance(error, ProxyUnavailable):
                _reconcile_later(action, now)
    except (ProxyError, NotConfigured) as error:
        # A refusal that retrying cannot cure; an ending is still retried (an admin can fix).
        dead = action.kind != ActionKind.REVOKE
        with database.atomic():
            outbox.fail(action, now, str(error), dead=dead)
            if dead and action.grant_id is not None:
                Grant.update(last_error=str(error)[:500]).where(
                    Grant.id == action.grant_id
                ).execute()
                _take_back(action, now)
                _settle(action, now)
    except Exception as error:  # a bug must not stop the other actions
        log.exception("action %s (%s) crashed", action.id, action.kind)
        with database.atomic():
            outbox.fail(action, now, f"internal error: {error!r}")
    else:
        log.info(
            "action %s %s grant=%s: %s (%.0f ms, %d s late)",
            action.id,
            action.kind,
            action.grant_id,
            outcome.note,
            (time.monotonic() - started) * 1000,
            max(0, now - action.due_at),
        )
        ctx.metrics.action_done(action.kind, now - action.due_at)
        return updates
    log.warning("action %s %s failed (attempt %d)", action.id, action.kind, action.attempts + 1)
    return None


def _gives_up(action: Action) -> bool:
    return action.kind == ActionKind.JOB_UPDATE and action.attempts + 1 >= JOB_UPDATE_ATTEMPTS


class GrantWatch:
    """Lets a thread wait for the runner to finish a grant's work (the identity hook waits for
    its credential) without polling the database: `changed(grant_id)` after every recorded
    outcome wakes the threads waiting on that grant only. (Waking every waiter after every
    action, each to query its grant under one shared lock, held the workers up while hooks
    waited: hook p99 701 ms on PostgreSQL, BENCHMARKS.md.)"""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[int, set[threading.Event]] = {}

    def changed(self, grant_id: int | None) -> None:
        with self._lock:
            waiting = list(self._waiting.get(grant_id, ()))
        for event in waiting:
            event.set()

    def wait(self, grant_id: int, until, deadline: float) -> bool:
        """Wait until `until()` is true or the monotonic `deadline` passes; its last value.
        `until` is asked again at least every second, whatever the runner reports."""
        event = threading.Event()
        with self._lock:
            self._waiting.setdefault(grant_id, set()).add(event)
        try:
            while not until():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                event.wait(min(remaining, 1.0))
                event.clear()
            return True
        finally:
            with self._lock:
                self._waiting[grant_id].discard(event)
                if not self._waiting[grant_id]:
                    del self._waiting[grant_id]


class Runner:
    """A bounded pool of worker threads fed from the outbox (one per process).

    `claimer` names this instance's claims; `runs_passes()` says whether this instance runs
    the periodic passes (quarantine retries, the repair pass): one instance at a time does
    where several share the database (daemon.ops.instances), the only one otherwise.
    """

    def __init__(self, workers: int = WORKERS):
        self.workers = workers
        self.claimer = outbox.new_claimer()
        self.runs_passes = lambda: True
        self.watch = GrantWatch()
        self.webhooks_first = WebhooksFirst()
        self._pool: ThreadPoolExecutor | None = None
        self._busy = 0
        self._dispatching = False
        self._again = False  # asked to dispatch while a dispatch ran: it claims once more
        self._repaired_at: int | None = None  # the last repair pass (reconcile.repair_pass)
        self._idle = threading.Condition()
        # Identity-verification decisions, which may outlive their answer (a write waiting
        # for a lock): here so that shutting down waits for them before the database closes.
        self._deciders = ThreadPoolExecutor(16, thread_name_prefix="verify")
        self._deciding: set[Future] = set()

    def decide(self, fn, *args) -> None:
        future = self._deciders.submit(fn, *args)
        with self._idle:
            self._deciding.add(future)
        future.add_done_callback(self._decided)

    def _decided(self, future: Future) -> None:
        with self._idle:
            self._deciding.discard(future)
            self._idle.notify_all()

    def drain_decisions(self, timeout: float | None = None) -> bool:
        """Wait until every identity decision has been recorded."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._deciding, timeout)

    def _submit(self, ctx, actions: list[Action], now: int | None) -> None:
        with self._idle:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="runner")
            self._busy += 1
        self._pool.submit(self._run_group, ctx, actions, now)

    def dispatch(self, ctx, now: int | None = None) -> int:
        """Claim due work for the free workers and start it; how many actions were claimed.

        One dispatch at a time: a call while one runs only asks it to look once more, so a
        burst of wake-ups (every webhook, every finished worker) costs one claim, not many.
        """
        with self._idle:
            if self._dispatching:
                self._again = True
                return 0
            self._dispatching = True
        claimed = 0
        try:
            moment = now_epoch() if now is None else now
            if self.runs_passes():
                retry_quarantined(ctx, moment)
                self._repair(moment)
            while True:
                with self._idle:
                    self._again = False
                claimed += self._claim_and_start(ctx, now)
                with self._idle:
                    if not self._again:
                        return claimed
        finally:
            with self._idle:
                self._dispatching = False
                self._idle.notify_all()

    def _repair(self, now: int) -> None:
        """Queue the periodic repair pass's reconciles, every REPAIR_EVERY_SECONDS (its actions
        are claimed after every due ending, so it never holds one up)."""
        last = self._repaired_at
        if last is not None and last <= now < last + reconcile.REPAIR_EVERY_SECONDS:
            return
        self._repaired_at = now
        try:
            reconcile.repair_pass(now)
        except Exception:  # a repair, not the due work: the endings go on regardless
            log.exception("the reconciler's repair pass failed; it runs again in %d s",
                          reconcile.REPAIR_EVERY_SECONDS)  # fmt: skip

    def _claim_and_start(self, ctx, now: int | None) -> int:
        moment = now_epoch() if now is None else now
        claimed_total = 0
        while True:
            with self._idle:
                room = min(self.workers - self._busy, BATCH)
            if room == 0:
                return claimed_total
            claimed = outbox.claim_due(moment, room, self.claimer)
            groups: dict[object, list[Action]] = {}
            for action in claimed:
                groups.setdefault(action.lock_key or ("action", action.id), []).append(action)
            for group in groups.values():
                self._submit(ctx, group, now)
            claimed_total += len(claimed)
            if len(claimed) < room:
                return claimed_total

    def _run_group(self, ctx, actions: list[Action], now: int | None) -> None:
        """One person's actions, in order, on this thread's own database connection."""
        left = list(actions)
        try:
            with database.connection_context():
                while left:
                    moment = now_epoch() if now is None else now
                    action = left[0]
                    if outbox.still_held(action, self.claimer, moment):
                        with self.webhooks_first.step():
                            updates = execute(ctx, action, moment, self.claimer)
                        left[1:1] = updates or []  # its Envoy job updates: sent next, here
                    else:
                        log.warning("action %s was taken over by another instance", action.id)
                    left.pop(0)
                    self.watch.changed(action.grant_id)
        except Exception:  # the database itself failed: give the claims back
            log.exception("running due work failed; %d actions released", len(left))
            for action in left:
                try:
                    outbox.release(action)
                except Exception:
                    log.warning("action %s stays claimed until its lease ends", action.id)
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()
            # This worker is free, and what it did may have made work due (a reconcile, a
            # re-activation; work waiting for a free worker or for this person): wake the
            # alarm. A dispatch under way absorbs the wake-up.
            ctx.rearm(now_epoch())

    @property
    def idle(self) -> bool:
        """No worker busy and no dispatch under way."""
        with self._idle:
            return self._busy == 0 and not self._dispatching

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no worker is busy and no dispatch (the alarm's) is under way; False if
        `timeout` passed first. (`run_due` looped on a dispatch under way without waiting,
        holding the interpreter from the dispatch it waited for.)"""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0 and not self._dispatching, timeout)

    def shutdown(self, timeout: float = 20.0) -> None:
        """Wait for running work and decisions (up to `timeout`) before the database closes."""
        if not self.drain(timeout):
            log.warning("due work was still running after %.0f s", timeout)
        self._deciders.shutdown(wait=True)
        if self._pool is not None:
            self._pool.shutdown(wait=False)


def next_due(now: int | None = None, passes: bool = True) -> int | None:
    """The next instant something is due: an action, or a quarantined delivery's retry (for
    the instance that runs the periodic passes: `passes`)."""
    action = outbox.next_due(now)
    if not passes:
        return action
    delivery = (
        Event.select(Event.next_attempt_at)
        .where(Event.body.is_null(False))
        .order_by(Event.next_attempt_at)
        .limit(1)
        .scalar()
    )
    due = [at for at in (action, delivery) if at is not None]
    return min(due) if due else None


BLOCKED_RETRY_SECONDS = 1


def dispatch_due(ctx) -> int | None:
    """The alarm's call: start what is due; the next instant to arm for.

    Work still due after the claim could not be claimed now: every worker is busy (a worker
    that finishes re-arms the alarm) or its person's earlier action is still running. The
    alarm looks again a second later rather than at once, which would make it spin.
    """
    with database.connection_context():
        now = now_epoch()
        ctx.runner.dispatch(ctx, None)
        due = next_due(now, ctx.runner.runs_passes())
        return due if due is None or due > now else now + BLOCKED_RETRY_SECONDS


def run_due(ctx, now: int | None = None) -> int | None:
    """Run everything due at `now` (default: the clock as it starts) to the end; the next
    due instant. Work that fails meanwhile is retried by later runs, not by this one."""
    now = now_epoch() if now is None else now
    with database.connection_context():
        while True:
            ctx.runner.drain()
            # Done when nothing was left to claim and no worker (the alarm's included) runs.
            if not ctx.runner.dispatch(ctx, now) and ctx.runner.idle:
                return next_due(now)
