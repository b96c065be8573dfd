"""The grant service: turns a plan into rows (grants and their actions) in one transaction.

Callers hold the IMMEDIATE transaction; nothing here calls Proxy. An access window has one
`issue` action (due at its start) and one `revoke` action (due at its end); moving the window
moves them. Ending a grant that was never issued cancels it without any Proxy call.
"""

from daemon.access import audit, outbox
from daemon.rules.policy import Close, Open
from db import (
    LIVE_STATES,
    Action,
    ActionKind,
    ActionOutcome,
    Grant,
    GrantState,
    first,
    grant_by_id,
    insert,
)


def person_key(grant: Grant, email: str | None = None) -> str | None:
    """The outbox lock key of the grant's Proxy person: its org and email (its install for
    grants from before orgs were recorded). One person's actions never run side by side,
    whichever install they come from."""
    email = email or grant.email
    return f"{grant.proxy_org_id or grant.install_id}:{email}" if email else None


def pending_action(grant: Grant, kind: str) -> Action | None:
    return (
        Action.select()
        .where((Action.grant == grant) & (Action.kind == kind) & (Action.done == False))  # noqa: E712
        .first()
    )


def _ensure_action(grant: Grant, kind: str, due_at: int) -> int:
    """The id of the grant's pending action of this kind, created or moved to `due_at`."""
    action = pending_action(grant, kind)
    if action is None:
        key = person_key(grant)
        return outbox.enqueue(kind, grant.install_id, due_at, grant=grant, lock_key=key)
    if action.due_at != due_at:
        outbox.reschedule(action, due_at)
    return action.id


def _create(install_id: str, plan: Open, kind: str, now: int, org_id: str | None) -> Grant:
    """A new grant with its issue (and revoke) action: it has no actions yet to look up."""
    visit = plan.visit
    row = dict(
        install_id=install_id,
        proxy_org_id=org_id,
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
        created_at=now,
        updated_at=now,
    )
    grant = Grant(id=insert(Grant, **row), **row)
    audit.planned(grant, created=True)
    dues = [(ActionKind.ISSUE, plan.starts_at)]
    if plan.ends_at is not None:
        dues.append((ActionKind.REVOKE, plan.ends_at))
    outbox.enqueue_each(dues, install_id, grant=grant, lock_key=person_key(grant))
    return grant


def _merged_window(grant: Grant, plan: Open) -> tuple[int, int | None]:
    if not plan.extend:
        return plan.starts_at, plan.ends_at
    starts = min(grant.starts_at, plan.starts_at)
    if grant.ends_at is None or plan.ends_at is None:
        return starts, None
    return starts, max(grant.ends_at, plan.ends_at)


def open_window(
    install_id: str, plan: Open, now: int, kind: str = "visitor", org_id: str | None = None
) -> tuple[Grant, bool]:
    """Create or move the grant of `plan.subject`; a closed grant stays closed.

    `org_id`: the install's Proxy org, recorded on a new grant. Returns the grant and whether
    it was created here."""
    grant = first(Grant, install_id=install_id, subject=plan.subject)
    if grant is not None and grant.on_hold:
        if not plan.approved:
            return grant, False  # held: only an event showing the entry approved opens it
        # Approved: the held grant stays closed, and the visit gets a grant anew.
        retire(grant, now, "held")
        grant = None
    if grant is None:
        return _create(install_id, plan, kind, now, org_id), True
    if grant.state not in LIVE_STATES:
        return grant, False
    if _starts_over(grant, plan, now):
        retire(grant, now, "replaced")
        return _create(install_id, plan, kind, now, org_id or grant.proxy_org_id), True
    starts, ends = _merged_window(grant, plan)
    if grant.state == GrantState.ACTIVE:
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
    if grant.state == GrantState.PENDING and visit.email and visit.email != grant.email:
        changes["email"] = visit.email  # not issued yet: the right guest simply gets it
        Action.update(lock_key=person_key(grant, visit.email)).where(
            (Action.grant == grant.id) & (Action.done == False)  # noqa: E712
        ).execute()
    moved = (starts, ends, list(plan.group_ids)) != (
        grant.starts_at,
        grant.ends_at,
        list(grant.group_ids),
    )
    Grant.update(**changes).where(Grant.id == grant.id).execute()
    grant = grant_by_id(grant.id)
    if moved:
        audit.planned(grant, created=False)
    if grant.state == GrantState.PENDING:
        _ensure_action(grant, ActionKind.ISSUE, starts)
    elif moved:
        # Already issued: re-issue now to re-tag and move Proxy's safety net to the new end.
        # A re-activation queued for later stays where it is: it follows a net in Proxy.
        due_now = (
            (Action.grant == grant) & (Action.kind == ActionKind.ISSUE) & (Action.due_at <= now)
        )
        if not Action.select().where(due_now & (Action.done == False)).exists():  # noqa: E712
            outbox.enqueue(ActionKind.ISSUE, grant.install_id, now, grant=grant,
                           lock_key=person_key(grant))  # fmt: skip
    if ends is not None:
        _ensure_action(grant, ActionKind.REVOKE, max(ends, now))
    return grant, False


def _starts_over(grant: Grant, plan: Open, now: int) -> bool:
    """Whether this change needs a new grant rather than a moved one (issue 16, items 6-7):
    an issued (or half-issued) grant whose email was corrected — the credential belongs to
    the other address — or whose invite moved to a later start, which must not keep access
    on until then."""
    issued = grant.state == GrantState.ACTIVE or not untouched(grant)
    if not issued:
        return False
    new_email = plan.visit.email is not None and plan.visit.email != grant.email
    return new_email or (not plan.extend and plan.starts_at > now)


def retire(grant: Grant, now: int, why: str) -> None:
    """End this grant's access now and free its subject, so that the visit's next event
    starts a grant of its own (an invite that changed, a hook's credential given back)."""
    end_at(grant, now, now)
    audit.closing(grant, why)
    Grant.update(subject=f"{grant.subject}#{why}-{grant.id}").where(Grant.id == grant.id).execute()


def reactivate_at(grant_id: int, at: int) -> None:
    """Issue the grant again at `at`, just after an earlier safety net took access away.

    Dropped with the grant's other pending issues when it ends first, so a visitor who left
    is never re-activated."""
    grant = grant_by_id(grant_id)
    if grant.state in LIVE_STATES:
        key = person_key(grant)
        outbox.enqueue(ActionKind.ISSUE, grant.install_id, at, grant=grant, lock_key=key)


def close_window(install_id: str, plan: Close, now: int, kind: str = "visitor") -> Grant | None:
    """End access at `plan.at`; a grant not yet issued (or not yet seen) is cancelled now.

    The grant is left on hold if the plan holds it (unless it was already closed for good),
    else final. None when there is no grant and the plan leaves no tombstone."""
    grant = first(Grant, install_id=install_id, subject=plan.subject)
    if grant is None and not plan.tombstone:
        return None
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
            state=GrantState.CANCELLED,
            on_hold=plan.hold,
            created_at=now,
            updated_at=now,
        )
    # A grant closed for good (denied, signed out) stays so: a hold never reopens it.
    hold = plan.hold and (grant.on_hold or grant.state in LIVE_STATES)
    end_at(grant, plan.at, now)
    if grant.on_hold != hold:
        Grant.update(on_hold=hold).where(Grant.id == grant.id).execute()
    return grant_by_id(grant.id)


def end_at(grant: Grant, at: int, now: int) -> int | None:
    """End a live grant at `at` (no later than planned); call in a transaction.

    A grant never issued is cancelled outright. Returns the revoke action's id, or None when
    the grant was cancelled or already closed.
    """
    if grant.state not in LIVE_STATES:
        return None
    if _cancellable(grant, now):
        cancel(grant, now)
        return None
    ends = at if grant.ends_at is None else min(grant.ends_at, at)
    Grant.update(ends_at=ends, updated_at=now).where(Grant.id == grant.id).execute()
    return _ensure_action(grant, ActionKind.REVOKE, ends)


def untouched(grant: Grant) -> bool:
    """Nothing of this grant ever reached Proxy: it may be cancelled without a Proxy call.

    The issue executor records the person and the groups it is about to add before it calls
    Proxy, so an attempt that failed or crashed half-way leaves the grant touched.
    """
    return grant.proxy_person_id is None and not grant.added_group_ids


def _cancellable(grant: Grant, now: int) -> bool:
    issue = pending_action(grant, ActionKind.ISSUE)
    claimed = issue is not None and issue.claimed_until is not None and issue.claimed_until >= now
    return grant.state == GrantState.PENDING and untouched(grant) and not claimed


def cancel(grant: Grant, now: int) -> None:
    """A grant that was never issued ends with no Proxy call; its actions are dropped."""
    Grant.update(
        state=GrantState.CANCELLED, ends_at=now, updated_at=now, version=Grant.version + 1
    ).where(Grant.id == grant.id).execute()
    drop_pending(grant, now)


def drop_pending(grant: Grant, now: int, kind: str | None = None) -> None:
    """Mark the grant's pending actions (of `kind`) cancelled; call after closing the grant."""
    pending = (Action.grant == grant.id) & (Action.done == False)  # noqa: E712
    if kind is not None:
        pending &= Action.kind == kind
    Action.update(
        done=True, outcome=ActionOutcome.CANCELLED, done_at=now, claimed_until=None
    ).where(pending).execute()
