"""The outbox's bookkeeping: enqueue, claim when due, record success or failure.

A claim is a lease (`claimed_until`) taken by a conditional update inside an IMMEDIATE
transaction, so a run that is late, repeated or concurrent never executes an action twice,
and a claim left behind by a crash expires by itself (or is released at the next start).
Endings are claimed before anything else that is due.
"""

from daemon.access import audit
from daemon.retry import backoff_seconds
from db import Action, ActionKind, ActionOutcome, database, now_epoch

LEASE_SECONDS = 120
FLAG_AFTER_ATTEMPTS = 5  # shown as failing on the status page and in metrics
# A visitor waits in the lobby for an issue and an ending must not lag, so Proxy actions are
# retried at least every 2 minutes: with a 15-minute cap, an issue was retried 295 s after an
# outage ended (BENCHMARKS.md, C3). Envoy's job updates can wait longer.
BACKOFF_CAP_SECONDS = 120
JOB_UPDATE_BACKOFF_CAP_SECONDS = 900
MIN_RETRY_SECONDS = 2  # a failure never retries in a tight loop


def enqueue(
    kind: str, install_id: str, due_at: int, *, grant=None, lock_key=None, payload=None
) -> int:
    """Add an action (its id); call inside the transaction that makes it necessary."""
    return Action.insert(_row(kind, install_id, due_at, grant, lock_key, payload)).execute()


def enqueue_each(dues: list[tuple[str, int]], install_id: str, *, grant, lock_key) -> None:
    """Add one action per (kind, due time) of one grant, in one statement (a new grant's
    issue and revoke)."""
    Action.insert_many(
        [_row(kind, install_id, due_at, grant, lock_key, None) for kind, due_at in dues]
    ).execute()


def _row(kind, install_id, due_at, grant, lock_key, payload) -> dict:
    return {
        "kind": kind,
        "install_id": install_id,
        "grant": grant,
        "lock_key": lock_key,
        "payload": payload or {},
        "due_at": due_at,
        "next_attempt_at": due_at,
        "created_at": now_epoch(),
    }


def reschedule(action: Action, due_at: int) -> None:
    """Move a pending action's due time (e.g. an invite moved, a sign-out came early)."""
    Action.update(due_at=due_at, next_attempt_at=due_at).where(
        (Action.id == action.id) & (Action.done == False)  # noqa: E712 (peewee expression)
    ).execute()


def _due(now: int):
    """Due and unclaimed, and not waiting behind a claimed action of the same person."""
    held_keys = Action.select(Action.lock_key).where(
        (Action.claimed_until >= now) & Action.lock_key.is_null(False)
    )
    return (
        (Action.done == False)  # noqa: E712
        & (Action.next_attempt_at <= now)
        & (Action.claimed_until.is_null() | (Action.claimed_until < now))
        & (Action.lock_key.is_null() | Action.lock_key.not_in(held_keys))
    )


def claim_due(now: int, limit: int) -> list[Action]:
    """Take a lease on up to `limit` due, unclaimed actions: endings first, then by due time.

    An action whose lock key is held by a claimed action waits; of several due actions of
    one person, the claimer runs them in order, one at a time.
    """
    if limit <= 0:
        return []
    with database.atomic():
        ending_first = (Action.kind != ActionKind.REVOKE).asc()
        claimed = list(
            Action.select()
            .where(_due(now))
            .order_by(ending_first, Action.next_attempt_at, Action.id)
            .limit(limit)
        )
        if claimed:
            Action.update(claimed_until=now + LEASE_SECONDS).where(
                Action.id.in_([a.id for a in claimed])
            ).execute()
    return claimed


def claim_one(action_id: int, now: int) -> Action | None:
    """Take a lease on this action if it is due and unclaimed (the admin CLI runs it)."""
    with database.atomic():
        action = Action.select().where(_due(now) & (Action.id == action_id)).first()
        if action is not None:
            Action.update(claimed_until=now + LEASE_SECONDS).where(Action.id == action_id).execute()
    return action


def complete(action: Action, now: int, outcome: str = ActionOutcome.DONE) -> None:
    """Mark done; call inside the transaction that records the action's effect."""
    Action.update(
        done=True, outcome=outcome, done_at=now, last_error=None, claimed_until=None
    ).where(Action.id == action.id).execute()


def fail(action: Action, now: int, error: str, *, retry_after: float = 0, dead: bool = False):
    """Record a failed attempt: push the next one back, or give up if `dead`. Call inside a
    transaction."""
    attempts = action.attempts + 1
    changes = {"attempts": attempts, "last_error": error[:500], "claimed_until": None}
    if dead:
        changes.update(done=True, outcome=ActionOutcome.DEAD, done_at=now)
    else:
        job_update = action.kind == ActionKind.JOB_UPDATE
        cap = JOB_UPDATE_BACKOFF_CAP_SECONDS if job_update else BACKOFF_CAP_SECONDS
        # Proxy's Retry-After is honoured up to the cap: an ending is tried again within
        # 2 minutes even when Proxy asks for a day (issue 16: `Retry-After: 86400`).
        delay = max(MIN_RETRY_SECONDS, backoff_seconds(attempts, cap), min(retry_after, cap))
        changes["next_attempt_at"] = now + int(delay + 0.999)
    Action.update(**changes).where(Action.id == action.id).execute()
    audit.work_failed(action, error, dead)


def release(action: Action) -> None:
    """Give back a claim without counting an attempt (the process is stopping)."""
    with database.atomic():
        Action.update(claimed_until=None).where(Action.id == action.id).execute()


def retry(action_ids: list[int], now: int) -> int:
    """Run these actions again at once, including ones that were given up (dead)."""
    with database.atomic():
        return (
            Action.update(
                next_attempt_at=now, claimed_until=None, done=False, outcome=None, done_at=None
            )
            .where(
                Action.id.in_(action_ids)
                & ((Action.done == False) | (Action.outcome == ActionOutcome.DEAD))  # noqa: E712
            )
            .execute()
        )


def release_claims() -> int:
    """Drop every lease: called at start, when no runner of a previous process can be alive
    (the instance lock says so).

    Only the `claimed_until` index is consulted (finished actions never hold a lease): a
    condition on `done` would walk every pending action, 1.5 s at a million.
    """
    with database.atomic():
        return (
            Action.update(claimed_until=None).where(Action.claimed_until.is_null(False)).execute()
        )


def next_due(now: int | None = None) -> int | None:
    """The earliest instant at which some pending action not being run must run.

    Actions under a live lease are left out: their runner re-arms the alarm when it is done.
    A lease that expires unrenewed is the sweep's to find. Walks `action_pending` in due order.
    """
    now = now_epoch() if now is None else now
    return (
        Action.select(Action.next_attempt_at)
        .where(
            (Action.done == False)  # noqa: E712
            & (Action.claimed_until.is_null() | (Action.claimed_until < now))
        )
        .order_by(Action.next_attempt_at)
        .limit(1)
        .scalar()
    )
