"""The outbox's bookkeeping: enqueue, claim when due, record success or failure.

A claim is a lease (`claimed_until`) taken by a conditional update inside an IMMEDIATE
transaction, so a run that is late, repeated or concurrent never executes an action twice,
and a claim left behind by a crash expires by itself (or is released at the next start).
"""

import random

from db import Action, database, now_epoch
from db.planner import unindexed
from db.prepared import NewRows, Prepared, Slot, SlotList, columns

LEASE_SECONDS = 120
FLAG_AFTER_ATTEMPTS = 5  # shown as failing on the status page and in metrics
# A visitor waits in the lobby for an issue and an ending must not lag, so Proxy actions are
# retried at least every 2 minutes: with a 15-minute cap, an issue was retried 295 s after an
# outage ended (BENCHMARKS.md, C3). Envoy's job updates can wait longer.
BACKOFF_CAP_SECONDS = 120
JOB_UPDATE_BACKOFF_CAP_SECONDS = 900


_NEW_ACTIONS = NewRows(Action)
_COMPLETE = Prepared(
    lambda: Action.update(
        {
            **columns(Action.outcome, Action.done_at, Action.last_error),
            Action.done: True,
            Action.claimed_until: None,
        }
    ).where(Action.id == Slot("id"))
)


def _row(kind: str, install_id: str, due_at: int, *, grant=None, payload=None, lock_key=None):
    return {
        "kind": kind,
        "install_id": install_id,
        "grant": grant,
        "lock_key": lock_key,
        "payload": payload or {},
        "due_at": due_at,
        "next_attempt_at": due_at,
    }


def enqueue(
    kind: str, install_id: str, due_at: int, *, grant=None, payload=None, lock_key=None
) -> Action:
    """Add an action; call inside the transaction that makes it necessary."""
    return _NEW_ACTIONS.add(
        **_row(kind, install_id, due_at, grant=grant, payload=payload, lock_key=lock_key)
    )


def enqueue_many(actions: list[dict]) -> None:
    """Add several actions (each a dict of `enqueue`'s arguments) in one call into SQLite."""
    _NEW_ACTIONS.add_many(_row(**action) for action in actions)


def reschedule(action: Action, due_at: int) -> None:
    """Move a pending action's due time (e.g. an invite moved, a sign-out came early)."""
    Action.update(due_at=due_at, next_attempt_at=due_at).where(
        (Action.id == action.id) & (Action.done == False)  # noqa: E712 (peewee expression)
    ).execute()


def _claimable(among_ids: bool = False):
    """Due, unclaimed, and not waiting behind a claimed action with the same lock key.

    `among_ids`: the query names its actions; `done` is unindexed so that SQLite looks them
    up by id instead of walking `action_pending` through every due action (as it did on a
    database analysed while still empty).
    """
    now = Slot("now")
    held_keys = Action.select(Action.lock_key).where(
        (Action.claimed_until >= now) & Action.lock_key.is_null(False)
    )
    pending = (unindexed(Action.done) == 0) if among_ids else (Action.done == False)  # noqa: E712
    return (
        pending
        & (Action.next_attempt_at <= now)
        & (Action.claimed_until.is_null() | (Action.claimed_until < now))
        & (Action.lock_key.is_null() | Action.lock_key.not_in(held_keys))
    )


_DUE = Prepared(
    lambda: (
        Action.select()
        .where(_claimable())
        .order_by(Action.next_attempt_at, Action.id)
        .limit(Slot("limit"))
    )
)
_DUE_AMONG = Prepared(
    lambda: (
        Action.select()
        .where(_claimable(among_ids=True) & Action.id.in_(SlotList("ids")))
        .order_by(Action.next_attempt_at, Action.id)
        .limit(Slot("limit"))
    )
)
_LEASE = Prepared(
    lambda: Action.update({Action.claimed_until: Slot("until", Action.claimed_until)}).where(
        Action.id.in_(SlotList("ids"))
    )
)
_RUNNING_AMONG = Prepared(
    lambda: (
        Action.select(Action.id)
        .where(
            Action.id.in_(SlotList("ids"))
            & (unindexed(Action.done) == 0)  # by id, as in `_claimable`
            & Action.claimed_until.is_null(False)
        )
        .limit(1)
    )
)


def claim_due(now: int, limit: int, ids: list[int] | None = None) -> list[Action]:
    """Take a lease on up to `limit` due, unclaimed actions (or on those of `ids` that are).

    An action whose lock key is held by a claimed action waits; the claimer runs its batch
    in order, one action at a time.
    """
    with database.atomic():
        if ids is None:
            claimed = _DUE.all(now=now, limit=limit)
        else:
            claimed = _DUE_AMONG.all(now=now, limit=limit, ids=ids)
        if claimed:
            _LEASE.run(until=now + LEASE_SECONDS, ids=[a.id for a in claimed])
    return claimed


def in_progress(action_ids: list[int]) -> bool:
    """Some of these actions are claimed and running (by the scheduler, say) right now."""
    return bool(_RUNNING_AMONG.rows(ids=action_ids))


def complete(action: Action, now: int, outcome: str = "done", note: str | None = None) -> None:
    """Mark done; call inside the transaction that records the action's effect."""
    _COMPLETE.run(outcome=outcome, done_at=now, last_error=note, id=action.id)


def backoff_seconds(attempts: int, cap: float = BACKOFF_CAP_SECONDS) -> float:
    """Exponential backoff with full jitter: 0..min(cap, 5·2^attempts) seconds, at least 2."""
    return max(2.0, random.uniform(0, min(cap, 5 * 2**attempts)))


def fail(action: Action, now: int, error: str, *, retry_after: float = 0, dead: bool = False):
    """Record a failed attempt: push the next one back, or give up if `dead`."""
    attempts = action.attempts + 1
    changes = {"attempts": attempts, "last_error": error[:500], "claimed_until": None}
    if dead:
        changes.update(done=True, outcome="dead", done_at=now)
    else:
        cap = JOB_UPDATE_BACKOFF_CAP_SECONDS if action.kind == "job_update" else BACKOFF_CAP_SECONDS
        delay = max(backoff_seconds(attempts, cap), retry_after)
        changes["next_attempt_at"] = now + int(delay + 0.999)
    with database.atomic():
        Action.update(**changes).where(Action.id == action.id).execute()


def retry(action_ids: list[int], now: int) -> int:
    """Run these actions again at once, including ones that were given up (dead)."""
    with database.atomic():
        return (
            Action.update(
                next_attempt_at=now, claimed_until=None, done=False, outcome=None, done_at=None
            )
            .where(
                Action.id.in_(action_ids) & ((Action.done == False) | (Action.outcome == "dead"))  # noqa: E712
            )
            .execute()
        )


def release_claims() -> int:
    """Drop every lease: called at start, when no runner of a previous process can be alive.

    Only the `claimed_until` index is consulted (finished actions never hold a lease): a
    condition on `done` would walk every pending action, 1.5 s at a million.
    """
    with database.atomic():
        return (
            Action.update(claimed_until=None).where(Action.claimed_until.is_null(False)).execute()
        )


_NEXT_DUE = Prepared(
    lambda: (
        Action.select(Action.next_attempt_at)
        .where(
            (Action.done == False)  # noqa: E712
            & (Action.claimed_until.is_null() | (Action.claimed_until < Slot("now")))
        )
        .order_by(Action.next_attempt_at)
        .limit(1)
    )
)


def next_due(now: int | None = None) -> int | None:
    """The earliest instant at which some pending action not being run must run.

    Actions under a live lease are left out: their runner re-arms the alarm when it is done
    (counting them made the alarm fire again and again while a slow call was in flight). A
    lease that expires unrenewed is the sweep's to find. Walks `action_pending` in due order.
    """
    return _NEXT_DUE.scalar(now=now_epoch() if now is None else now)
