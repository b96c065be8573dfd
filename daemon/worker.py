"""`run_due`: claim due outbox actions, carry each out, record the outcome.

Called by the scheduler's alarm, by its sweep, once at start-up (catch-up), and inline by a
webhook for its own fresh actions. Failures are recorded and retried with backoff; an ending
(revoke) is never given up; an Envoy job update is given up after a day of trying.
"""

import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from daemon import grants, outbox
from daemon.envoy_client import EnvoyError
from daemon.issuing import GrantMoved, Outcome, issue, revoke
from daemon.outcomes import queue_job_update, waiting_jobs
from daemon.planning import plan_received
from daemon.proxy_access import NotConfigured
from daemon.proxy_client import ProxyAuthError, ProxyError, ProxyRateLimited, ProxyUnavailable
from db import Action, Grant, database, grant_by_id, now_epoch
from db.prepared import Prepared, Slot

log = logging.getLogger("envoy_proxy.worker")

BATCH = 100
WORKERS = 8  # Proxy calls are I/O: threads overlap their waits
JOB_UPDATE_ATTEMPTS = 20


def _run_issue(ctx, action: Action, now: int) -> Outcome:
    grant = grant_by_id(action.grant_id)
    if grant.state not in grants.LIVE_STATES:
        return Outcome("skipped: grant closed")
    if grant.ends_at is not None and grant.ends_at <= now and grant.state == "pending":
        if not grants.untouched(grant):
            return Outcome("skipped: window over; the revoke takes back what reached Proxy")
        return Outcome("skipped: window over before issue", _cancelling(grant, now))
    return issue(ctx, grant, now)


def _run_revoke(ctx, action: Action, now: int) -> Outcome:
    grant = grant_by_id(action.grant_id)
    if grant.state == "pending" and grants.untouched(grant):
        return Outcome("cancelled before issue", _cancelling(grant, now))
    if grant.state not in grants.LIVE_STATES:
        return Outcome("skipped: grant already closed")
    return revoke(ctx, grant, now)


def _cancelling(grant: Grant, now: int):
    return functools.partial(grants.cancel, grant, now)


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


EXECUTORS = {grants.ISSUE: _run_issue, grants.REVOKE: _run_revoke, "job_update": _run_job_update}


_WORK_OF_GRANT = Prepared(
    lambda: Action.select(Action.id, Action.payload).where(Action.grant == Slot("grant"))
)


def _follow_up_jobs(
    action: Action, now: int, answering: str | None, failure: str | None = None
) -> None:
    """Tell every Envoy job answered 202 that waits for this action how it ended; call in the
    transaction that records the outcome.

    The jobs are read again (one may have joined while the action ran) together with the
    grant's other work, which then no longer reports to them: each job is told once.
    `answering`: the job of the webhook running the action, which answers its own job.
    """
    if action.grant_id is None:
        return
    work = {a.id: a for a in _WORK_OF_GRANT.all(grant=action.grant_id)}
    jobs = waiting_jobs(work.pop(action.id).payload)
    if not jobs:
        return
    grant = grant_by_id(action.grant_id)
    for job_id in jobs:
        if job_id != answering:
            queue_job_update(job_id, grant, now, failure)
    grants.forget_jobs(list(work.values()), jobs)


def _is_ending(action: Action) -> bool:
    return action.kind == grants.REVOKE


def execute(ctx, action: Action, now: int, *, answering: str | None = None) -> bool:
    """Run one claimed action; True when it is finished (done or given up).

    `answering`: the Envoy job of a webhook that runs the action and reports the outcome in
    its own answer, so that job needs no later job update.
    """
    started = time.monotonic()
    try:
        outcome = EXECUTORS[action.kind](ctx, action, now)
        with database.atomic():
            outcome.record()
            outbox.complete(action, now, note=None)
            _follow_up_jobs(action, now, answering)
    except ProxyRateLimited as error:
        outbox.fail(action, now, str(error), retry_after=error.retry_after)
    except (ProxyUnavailable, ProxyAuthError, GrantMoved, EnvoyError) as error:
        outbox.fail(action, now, str(error), dead=_gives_up(action, error))
    except (ProxyError, NotConfigured) as error:
        # A refusal that retrying cannot cure; an ending is still retried (an admin can fix).
        dead = not _is_ending(action)
        outbox.fail(action, now, str(error), dead=dead)
        if dead:
            with database.atomic():
                _record_grant_error(action, str(error))
                _follow_up_jobs(action, now, answering, failure=str(error))
    except Exception as error:  # a bug must not stop the other actions
        log.exception("action %s (%s) crashed", action.id, action.kind)
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
        return True
    log.warning("action %s %s failed (attempt %d)", action.id, action.kind, action.attempts + 1)
    return False


def _gives_up(action: Action, error: Exception) -> bool:
    return action.kind == "job_update" and action.attempts + 1 >= JOB_UPDATE_ATTEMPTS


def _record_grant_error(action: Action, error: str) -> None:
    if action.grant_id is not None:
        Grant.update(last_error=error[:500]).where(Grant.id == action.grant_id).execute()


def _run_group(ctx, actions: list[Action], moment: int) -> None:
    """One person's actions, in order, on this thread's own database connection."""
    with database.connection_context():
        for action in actions:
            with ctx.priority.background_step():
                execute(ctx, action, moment)


def run_due(ctx, now: int | None = None, workers: int = WORKERS) -> int | None:
    """Run every due action; return the next due instant (for the alarm).

    A claimed batch runs on `workers` threads, grouped by lock key so that one person's
    actions stay in order on one thread while different people's run side by side.
    """
    with (
        database.connection_context(),
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="outbox") as pool,
    ):
        while True:
            moment = now if now is not None else now_epoch()
            plan_received(ctx, moment)
            claimed = outbox.claim_due(moment, BATCH)
            groups: dict[object, list[Action]] = {}
            for action in claimed:
                groups.setdefault(action.lock_key or ("action", action.id), []).append(action)
            for future in [pool.submit(_run_group, ctx, g, moment) for g in groups.values()]:
                future.result()
            if len(claimed) < BATCH:
                break
        return outbox.next_due()


def run_inline(ctx, action_ids: list[int], now: int, answering: str | None = None) -> None:
    """Run these due actions now, in the caller's thread, if nobody else has claimed them;
    `answering`: the Envoy job the caller answers itself (see `execute`)."""
    for action in outbox.claim_due(now, len(action_ids), ids=action_ids):
        execute(ctx, action, now, answering=answering)
