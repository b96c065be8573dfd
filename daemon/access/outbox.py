"""The outbox's bookkeeping: enqueue, claim when due, record success or failure.

A claim is a lease (`claimed_until`) taken by a conditional update inside a write
transaction, so a run that is late, repeated or concurrent never executes an action twice,
and a claim left behind by a crash expires by itself. Endings are claimed before anything else
that is due.

Claims name their holder (`claimed_by`, the instance). On one SQLite file one daemon runs: a
lease of 2 minutes, and a fresh start releases every claim. On a database shared by several
instances (PostgreSQL) claims take turns (`db.take_turns_claiming`), the lease is short and
each live instance renews its own at every heartbeat (daemon.ops.instances), so the work of an
instance that died is taken over within `SHARED_LEASE_SECONDS`.
"""

import os
import secrets
import socket

from daemon.access import audit
from daemon.retry import backoff_seconds
from db import (
    Action,
    ActionKind,
    ActionOutcome,
    database,
    insert,
    insert_rows,
    now_epoch,
    shared_by_instances,
    take_turns_claiming,
)

LEASE_SECONDS = 120
# Renewed every HEARTBEAT_SECONDS by a live instance: two heartbeats may be missed.
SHARED_LEASE_SECONDS = 10
HEARTBEAT_SECONDS = 3
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
    return insert(Action, **_row(kind, install_id, due_at, grant, lock_key, payload))


def enqueue_each(dues: list[tuple[str, int]], install_id: str, *, grant, lock_key) -> None:
    """Add one action per (kind, due time) of one grant, in one statement (a new grant's
    issue and revoke)."""
    insert_rows(
        Action, [_row(kind, install_id, due_at, grant, lock_key, None) for kind, due_at in dues]
    )


def enqueue_held(kind: str, install_id: str, now: int, holder: str, *, payload: dict) -> Action:
    """Add an action due now and already claimed by `holder`, which runs it next itself (the
    job update that a worker's outcome made due): no claim and no wake-up of the alarm. If
    the holder dies first, its lease runs out as any claim's does."""
    row = _row(kind, install_id, now, None, None, payload)
    row.update(claimed_until=now + lease_seconds(), claimed_by=holder)
    return Action(id=insert(Action, **row), **row)


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


def new_claimer() -> str:
    """A name for this process's claims, unique across machines and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def lease_seconds() -> int:
    """How long a claim holds unless renewed."""
    return SHARED_LEASE_SECONDS if shared_by_instances() else LEASE_SECONDS


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


def claim_due(now: int, limit: int, claimer: str | None = None) -> list[Action]:
    """Take a lease on up to `limit` due, unclaimed actions: endings first, then by due time.

    An action whose lock key is held by a claimed action waits, whichever instance holds it;
    of several due actions of one person, the claimer runs them in order, one at a time.
    """
    if limit <= 0:
        return []
    with database.atomic():
        take_turns_claiming()
        ending_first = (Action.kind != ActionKind.REVOKE).asc()
        claimed = list(
            Action.select()
            .where(_due(now))
            .order_by(ending_first, Action.next_attempt_at, Action.id)
            .limit(limit)
        )
        if claimed:
            _hold(claimed, now, claimer)
    return claimed


def claim_one(action_id: int, now: int, claimer: str | None = None) -> Action | None:
    """Take a lease on this action if it is due and unclaimed (the admin CLI runs it)."""
    with database.atomic():
        take_turns_claiming()
        action = Action.select().where(_due(now) & (Action.id == action_id)).first()
        if action is not None:
            _hold([action], now, claimer)
    return action


def _hold(actions: list[Action], now: int, claimer: str | None) -> None:
    until = now + lease_seconds()
    Action.update(claimed_until=until, claimed_by=claimer).where(
        Action.id.in_([action.id for action in actions])
    ).execute()
    for action in actions:  # as stored now: `still_held` trusts a fresh claim of its own
        action.claimed_until, action.claimed_by = until, claimer


def renew(claimer: str, now: int) -> int:
    """Extend the leases `claimer` still holds (its heartbeat); how many it holds.

    A lease that ran out is not renewed: another instance may have taken the action over.
    """
    with database.atomic():
        return (
            Action.update(claimed_until=now + lease_seconds())
            .where((Action.claimed_by == claimer) & (Action.claimed_until >= now))
            .execute()
        )


def still_held(action: Action, claimer: str | None, now: int) -> bool:
    """Whether `claimer` still holds this action, renewing its lease; asked just before
    running it. Where one daemon serves the database nobody else can have taken it.

    An instance whose heartbeat stalled (a paused VM) must not run an action that another
    took over meanwhile: the two would run it at once. A claim this instance made with more
    than half its lease still ahead cannot have been taken over (another instance takes a
    claim only once its lease has run out): it is run without asking the database.
    """
    if not shared_by_instances():
        return True
    fresh = action.claimed_until is not None and now < action.claimed_until - lease_seconds() / 2
    if fresh and action.claimed_by == claimer:
        return True
    with database.atomic():
        renewed = (
            Action.update(claimed_until=now + lease_seconds())
            .where(
                (Action.id == action.id)
                & (Action.claimed_by == claimer)
                & (Action.claimed_until >= now)
            )
            .execute()
        )
    return renewed == 1


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
    (the instance lock says so). On a database shared by instances the others' claims are
    alive: nothing is dropped, and a dead process's claims run out with their short lease.

    Only the `claimed_until` index is consulted (finished actions never hold a lease): a
    condition on `done` would walk every pending action, 1.5 s at a million.
    """
    if shared_by_instances():
        return 0
    with database.atomic():
        return (
            Action.update(claimed_until=None).where(Action.claimed_until.is_null(False)).execute()
        )


def next_due(now: int | None = None) -> int | None:
    """The earliest instant at which some pending action not being run must run.

    Actions under a live lease are left out: their runner re-arms the alarm when it is done.
    A lease that expires unrenewed is the sweep's to find on one SQLite daemon; where
    instances share the database, the end of the earliest lease counts too (its holder may
    have died), so that the work of a dead instance is taken over when its lease runs out.
    Walks `action_pending` in due order.
    """
    now = now_epoch() if now is None else now
    unclaimed = (
        Action.select(Action.next_attempt_at)
        .where(
            (Action.done == False)  # noqa: E712
            & (Action.claimed_until.is_null() | (Action.claimed_until < now))
        )
        .order_by(Action.next_attempt_at)
        .limit(1)
        .scalar()
    )
    if not shared_by_instances():
        return unclaimed
    lease_end = (
        Action.select(Action.claimed_until)
        .where(Action.claimed_until >= now)
        .order_by(Action.claimed_until)
        .limit(1)
        .scalar()
    )
    due = [at for at in (unclaimed, None if lease_end is None else lease_end + 1) if at is not None]
    return min(due) if due else None
