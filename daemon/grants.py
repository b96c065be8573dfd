"""The grant service: turns a plan into rows (grants and their actions) in one transaction.

Callers hold the IMMEDIATE transaction; nothing here calls Proxy. An access window has one
`issue` action (due at its start) and one `revoke` action (due at its end); moving the window
moves them. Ending a grant that was never issued cancels it without any Proxy call.
"""

from daemon import outbox
from daemon.outcomes import queue_job_update, waiting_jobs
from daemon.policy import Close, Open
from db import Action, Grant, grant_by_id
from db.prepared import NewRows

ISSUE, REVOKE = "issue", "revoke"
LIVE_STATES = ("pending", "active")


def person_key(install_id: str, email: str | None) -> str | None:
    """The outbox lock key of one Proxy person (per install, by email)."""
    return f"{install_id}:{email}" if email else None


def pending_action(grant: Grant, kind: str) -> Action | None:
    return (
        Action.select()
        .where((Action.grant == grant) & (Action.kind == kind) & (Action.done == False))  # noqa: E712
        .first()
    )


def _ensure_action(grant: Grant, kind: str, due_at: int, now: int) -> Action:
    """The grant's pending action of this kind, created or moved to `due_at`."""
    action = pending_action(grant, kind)
    if action is None:
        return outbox.enqueue(
            kind,
            grant.install_id,
            due_at,
            grant=grant,
            lock_key=person_key(grant.install_id, grant.email),
        )
    if action.due_at != due_at:
        outbox.reschedule(action, due_at)
        if due_at > now:
            _release_jobs(action, now)
    return action


def _release_jobs(action: Action, now: int) -> None:
    """Work moved to later no longer keeps Envoy jobs waiting: they are told where the grant
    stands now (e.g. an invite moved to another day after its early access was due)."""
    jobs = waiting_jobs(action.payload)
    if not jobs:
        return
    _set_jobs(action, [])
    grant = grant_by_id(action.grant_id)
    for job_id in jobs:
        queue_job_update(job_id, grant, now)


_NEW_GRANTS = NewRows(Grant)


def _create(install_id: str, plan: Open, kind: str, job_id: str | None, now: int) -> Grant:
    visit = plan.visit
    grant = _NEW_GRANTS.add(
        install_id=install_id,
        kind=kind,
        subject=plan.subject,
        entry_id=visit.id if visit.kind == "entries" else visit.entry_id,
        invite_id=visit.id if visit.kind == "invites" else visit.invite_id,
        email=visit.email,
        full_name=visit.full_name,
        phone=visit.phone,
        photo_url=visit.photo_url,
        group_ids=list(plan.group_ids),
        starts_at=plan.starts_at,
        ends_at=plan.ends_at,
        job_id=job_id,
        created_at=now,
        updated_at=now,
    )
    key = person_key(install_id, grant.email)
    # The job waits for the issue only if it runs now; a later start is answered at once.
    waiting = {"jobs": [job_id]} if job_id and plan.starts_at <= now else None
    actions = [dict(kind=ISSUE, install_id=install_id, due_at=plan.starts_at, grant=grant,
                    lock_key=key, payload=waiting)]  # fmt: skip
    if plan.ends_at is not None:
        actions.append(
            dict(kind=REVOKE, install_id=install_id, due_at=plan.ends_at, grant=grant, lock_key=key)
        )
    outbox.enqueue_many(actions)
    return grant


def _merged_window(grant: Grant, plan: Open) -> tuple[int, int | None]:
    if not plan.extend:
        return plan.starts_at, plan.ends_at
    starts = min(grant.starts_at, plan.starts_at)
    if grant.ends_at is None or plan.ends_at is None:
        return starts, None
    return starts, max(grant.ends_at, plan.ends_at)


def open_window(
    install_id: str,
    plan: Open,
    now: int,
    kind: str = "visitor",
    *,
    job_id: str | None = None,
    known_new: bool = False,
) -> Grant:
    """Create or move the grant of `plan.subject`; a closed grant stays closed.

    A grant created here records `job_id`, the Envoy job its due issue answers to.
    `known_new`: the caller has just found no grant of this subject (saves the lookup).
    """
    grant = None if known_new else Grant.get_or_none(install_id=install_id, subject=plan.subject)
    if grant is None:
        return _create(install_id, plan, kind, job_id, now)
    if grant.state not in LIVE_STATES:
        return grant
    starts, ends = _merged_window(grant, plan)
    if grant.state == "active":
        starts = grant.starts_at
    visit = plan.visit
    changes = {
        "starts_at": starts,
        "ends_at": ends,
        "group_ids": list(plan.group_ids),
        "entry_id": grant.entry_id or (visit.id if visit.kind == "entries" else visit.entry_id),
        "full_name": visit.full_name or grant.full_name,
        "phone": visit.phone or grant.phone,
        "photo_url": visit.photo_url or grant.photo_url,
        "updated_at": now,
    }
    if grant.state == "pending" and visit.email:
        changes["email"] = visit.email
    moved = (starts, ends, list(plan.group_ids)) != (
        grant.starts_at,
        grant.ends_at,
        list(grant.group_ids),
    )
    Grant.update(**changes).where(Grant.id == grant.id).execute()
    grant = grant_by_id(grant.id)
    if grant.state == "pending":
        _ensure_action(grant, ISSUE, starts, now)
    elif moved:
        # Already issued: re-issue now to re-tag and move Proxy's safety net to the new end.
        _ensure_action(grant, ISSUE, now, now)
    if ends is not None:
        _ensure_action(grant, REVOKE, max(ends, now), now)
    return grant


def close_window(install_id: str, plan: Close, now: int, kind: str = "visitor") -> Grant:
    """End access at `plan.at`; a grant not yet issued (or not yet seen) is cancelled now."""
    grant = Grant.get_or_none(install_id=install_id, subject=plan.subject)
    if grant is None:
        # The sign-out (or removal) came first: a tombstone makes the later sign-in a no-op.
        visit = plan.visit
        return Grant.create(
            install_id=install_id,
            kind=kind,
            subject=plan.subject,
            entry_id=visit.id if visit.kind == "entries" else None,
            invite_id=visit.id if visit.kind == "invites" else visit.invite_id,
            email=visit.email,
            full_name=visit.full_name,
            starts_at=plan.at,
            ends_at=plan.at,
            state="cancelled",
            created_at=now,
            updated_at=now,
        )
    if grant.state not in LIVE_STATES:
        return grant
    ends = plan.at if grant.ends_at is None else min(grant.ends_at, plan.at)
    if _cancellable(grant, now):
        cancel(grant, now)
        return grant_by_id(grant.id)
    Grant.update(ends_at=ends, updated_at=now).where(Grant.id == grant.id).execute()
    _ensure_action(grant, REVOKE, ends, now)
    return grant_by_id(grant.id)


def untouched(grant: Grant) -> bool:
    """Nothing of this grant ever reached Proxy: it may be cancelled without a Proxy call.

    The issue executor records the person and the groups it is about to add before it calls
    Proxy, so an attempt that failed or crashed half-way leaves the grant touched.
    """
    return grant.proxy_person_id is None and not grant.added_group_ids


def _cancellable(grant: Grant, now: int) -> bool:
    issue = pending_action(grant, ISSUE)
    return (
        grant.state == "pending"
        and untouched(grant)
        and (issue is None or not _claimed(issue, now))
    )


def _claimed(action: Action, now: int) -> bool:
    return action.claimed_until is not None and action.claimed_until >= now


def cancel(grant: Grant, now: int) -> None:
    """A grant that was never issued ends with no Proxy call; its actions are dropped."""
    Grant.update(state="cancelled", ends_at=now, updated_at=now, version=Grant.version + 1).where(
        Grant.id == grant.id
    ).execute()
    drop_pending(grant, now)


def drop_pending(grant: Grant, now: int, kind: str | None = None) -> None:
    """Mark the grant's pending actions (of `kind`) cancelled; call after closing the grant.

    An Envoy job answered 202 that waited for one of them is told how the grant ended (once:
    by the action itself if it is the one running).
    """
    pending = (Action.grant == grant.id) & (Action.done == False)  # noqa: E712
    if kind is not None:
        pending &= Action.kind == kind
    # An action being run (the revoke that cancels its own grant) reports when it completes.
    idle = Action.claimed_until.is_null() | (Action.claimed_until < now)
    waiting = {job for a in Action.select(Action.payload).where(pending & idle) for job in
               waiting_jobs(a.payload)}  # fmt: skip
    Action.update(done=True, outcome="cancelled", done_at=now, claimed_until=None).where(
        pending
    ).execute()
    closed = grant_by_id(grant.id)
    for job_id in sorted(waiting):
        queue_job_update(job_id, closed, now)


def report_to(grant: Grant, job_id: str, now: int) -> None:
    """Make the grant's due work report to this Envoy job (answered 202) when it is done.

    A job joins those already waiting: a later event for the same visit must not leave an
    earlier one's job unfinished.
    """
    due = (Action.grant == grant.id) & (Action.done == False) & (Action.due_at <= now)  # noqa: E712
    for action in Action.select(Action.id, Action.payload).where(due):
        jobs = waiting_jobs(action.payload)
        if job_id not in jobs:
            _set_jobs(action, [*jobs, job_id])


def forget_jobs(actions: list[Action], told: list[str]) -> None:
    """These jobs have been told: these actions (the grant's other work, pending or still
    running after a cancellation) no longer report to them."""
    for action in actions:
        jobs = waiting_jobs(action.payload)
        if set(jobs) & set(told):
            _set_jobs(action, [job_id for job_id in jobs if job_id not in told])


def _set_jobs(action: Action, jobs: list[str]) -> None:
    Action.update(payload={**action.payload, "jobs": jobs}).where(Action.id == action.id).execute()


def end_now(grant: Grant, now: int) -> Action | None:
    """End a live grant now through the outbox (an admin's revoke); call in a transaction.

    Returns the revoke action to run, or None when the grant was cancelled outright (never
    issued) or was already closed.
    """
    if grant.state not in LIVE_STATES:
        return None
    if _cancellable(grant, now):
        cancel(grant, now)
        return None
    Grant.update(ends_at=now, updated_at=now).where(Grant.id == grant.id).execute()
    return _ensure_action(grant, REVOKE, now, now)
