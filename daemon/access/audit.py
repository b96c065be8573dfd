"""The audit trail: every access change and decision, written in the transaction that makes it.

Each writer is one line at the place where the change happens; this module alone writes
`AuditEntry` rows, and never updates or deletes one. Who acted is `envoy` (an event),
`daemon` (its own due work) or `cli:<OS user>` (an admin command): set around the work with
`acting_as`. Details carry ids, times and outcomes, never a secret's value.
"""

import contextlib
import contextvars
import getpass

from daemon.rules.policy import Close
from db import AuditEntry, Grant, insert, now_epoch

ENVOY, DAEMON = "envoy", "daemon"

PLANNED = "planned"  # a grant created or its window moved
IGNORED = "ignored"  # an event that gives no access, and why (Envoy's "ignored" or "failed")
END_REQUESTED = "end_requested"  # access is to end now: why (sign-out, admin revoke, …)
CANCELLED = "cancelled"  # a grant ended before it ever reached Proxy
ISSUED = "issued"  # the grant's person has access in Proxy
ENDED = "ended"  # the grant's access was taken away in Proxy (or kept only for another grant)
PROXY = "proxy"  # one run of a grant's due work against Proxy, and its result
ADMIN = "admin"  # an admin command, and what it did
WATCHLIST = "watchlist"  # a watchlist entry added or removed
VERIFIED = "verified"  # an identity-verification decision (approved, or review and why)
SETUP = "setup"  # a setup step changed an install's settings (keys only)
UNINSTALLED = "uninstalled"  # the plugin was uninstalled for an install
# An install's stored Proxy secret was erased (the name of a kind of entry, not a secret).
SECRET_ERASED = "secret_erased"  # noqa: S105

# An ending planned at the window's end and never asked for earlier: the visit's duration.
DURATION = "duration"
# Failed attempts of one action recorded one by one up to this many, then one in this many:
# an ending retried every 2 minutes through a day-long outage must not flood the trail.
FAILURES_RECORDED, FAILURES_SAMPLED = 5, 30
_SECRET_WORDS = ("secret", "password", "token", "authorization")

_actor: contextvars.ContextVar[str] = contextvars.ContextVar("audit_actor", default=DAEMON)


def cli_actor() -> str:
    """The admin at the prompt: `cli:<OS user>`."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no passwd entry, no LOGNAME: still say it was the CLI
        return "cli:unknown"


@contextlib.contextmanager
def acting_as(actor: str):
    """Entries written by this thread meanwhile name `actor`."""
    token = _actor.set(actor)
    try:
        yield
    finally:
        _actor.reset(token)


def _without_secrets(details: dict | None) -> dict | None:
    """`details` with the values of secret-looking keys left out (the key stays: it changed)."""
    if details is None:
        return None
    return {
        key: "(secret)" if any(word in key.lower() for word in _SECRET_WORDS) else value
        for key, value in details.items()
    }


def record(
    kind: str,
    *,
    grant: Grant | None = None,
    reason: str | None = None,
    details: dict | None = None,
    actor: str | None = None,
    at: int | None = None,
    **who,
) -> None:
    """Append one entry; call inside the transaction of the change it records.

    With `grant`, its install, id, subject, email and name as they are now; `who` may give
    them instead (`install_id`, `subject`, `email`, `full_name`)."""
    if grant is not None:
        who = {
            "install_id": grant.install_id,
            "grant_id": grant.id,
            "subject": grant.subject,
            "email": grant.email,
            "full_name": grant.full_name,
            **who,
        }
    insert(
        AuditEntry,
        at=now_epoch() if at is None else at,
        kind=kind,
        reason=None if reason is None else str(reason)[:1000],
        actor=actor or _actor.get(),
        details=_without_secrets(details),
        **who,
    )


# -- Envoy events -------------------------------------------------------------------------------

_ENDING_EVENTS = {
    "entry_sign_out": "sign-out",
    "employee_entry_sign_out": "sign-out",
    "invite_removed": "invite removed",
    "invite_updated": "invite moved into the past",
}


def _of_event(request) -> dict:
    return {"event": request.event, "job_id": request.job_id}


def ignored(request, visit, answer):
    """Record why an event gives no access; returns `answer` (the intake returns it)."""
    record(
        IGNORED,
        reason=answer.body.get("message"),
        details={**_of_event(request), "status": answer.status},
        install_id=request.install_id,
        subject=visit.subject,
        email=visit.email,
        full_name=visit.full_name,
    )
    return answer


def decided(request, plan, grant: Grant, answer) -> None:
    """Record what an event did to an existing grant: an ending asked for, or nothing."""
    if answer.status >= 400:
        record(
            IGNORED,
            grant=grant,
            reason=answer.body.get("message"),
            details={**_of_event(request), "status": answer.status},
        )
    elif isinstance(plan, Close):
        closing(grant, _ENDING_EVENTS.get(request.event, request.event), _of_event(request))


def closing(grant: Grant, why: str, details: dict | None = None) -> None:
    """Record that the grant's access is to end, and why: cancelled outright if it never
    reached Proxy, else an ending that its revoke carries out (`ended` names the same why)."""
    state = Grant.select(Grant.state).where(Grant.id == grant.id).scalar()
    record(
        CANCELLED if state == "cancelled" else END_REQUESTED,
        grant=grant,
        reason=why,
        details=details,
    )


def verified(request, visit, verdict: str, decision) -> None:
    """Record an identity-verification decision: approved, or sent to review and why."""
    record(
        VERIFIED,
        reason=f"{verdict}: {decision.answer.body.get('message') or decision.reason}",
        details={
            "entry_id": visit.id,
            "code": decision.reason,
            "deadline_hit": decision.deadline_hit,
        },
        actor=ENVOY,
        install_id=request.install_id,
        subject=visit.subject,
        email=visit.email,
        full_name=visit.full_name,
    )


def planned(grant: Grant, created: bool) -> None:
    """Record a grant's window as planned now (created, or moved by a later event)."""
    record(
        PLANNED,
        grant=grant,
        reason="created" if created else "window moved",
        details={
            "starts_at": grant.starts_at,
            "ends_at": grant.ends_at,
            "groups": list(grant.group_ids),
            "kind": grant.kind,
        },
    )


# -- due work -------------------------------------------------------------------------------------


def issued(grant: Grant, person_id: str, added: list[str], ours: bool) -> None:
    record(
        ISSUED,
        grant=grant,
        details={"proxy_person_id": person_id, "groups_added": added, "person_ours": ours},
    )


def ending_reason(grant_id: int) -> str:
    """Why the grant's access ends: the last ending asked for, else its duration ran out."""
    why = (
        AuditEntry.select(AuditEntry.reason)
        .where((AuditEntry.grant_id == grant_id) & (AuditEntry.kind == END_REQUESTED))
        .order_by(AuditEntry.id.desc())
        .limit(1)
        .scalar()
    )
    return why or DURATION


def ended(grant: Grant) -> None:
    record(ENDED, grant=grant, reason=ending_reason(grant.id))


def _of_action(action, outcome: str, details: dict) -> None:
    """One run of a grant's issue or revoke (Envoy job updates are not access)."""
    if action.grant_id is None or action.kind == "job_update":
        return
    grant = Grant.get_or_none(Grant.id == action.grant_id)
    who = {} if grant is not None else {"grant_id": action.grant_id}
    details = {"action": action.kind, "action_id": action.id, **details}
    record(PROXY, grant=grant, reason=outcome, details=details, **who)


def work_done(action, note: str) -> None:
    _of_action(action, note, {"ok": True})


def work_failed(action, error: str, dead: bool) -> None:
    """Record a failed attempt (sampled past the first few)."""
    attempt = action.attempts + 1
    if attempt <= FAILURES_RECORDED or attempt % FAILURES_SAMPLED == 0 or dead:
        _of_action(action, error, {"ok": False, "attempt": attempt, "given_up": dead})


# -- admin, watchlist, setup ----------------------------------------------------------------------


def admin(what: str, details: dict | None = None, grant_id: int | None = None) -> None:
    """An admin command and what it did (about this grant, if it is about one)."""
    grant = None if grant_id is None else Grant.get_or_none(Grant.id == grant_id)
    record(ADMIN, grant=grant, reason=what, details=details)


def watchlist_changed(change: str, entry) -> None:
    """`change`: added or removed; the entry as it was."""
    record(
        WATCHLIST,
        reason=f"{change}: {entry.reason}",
        details={"entry_id": entry.id},
        email=entry.email,
        full_name=entry.display_name,
    )


def setup_changed(install_id: str, before: dict | None, after: dict, secret_replaced: bool) -> None:
    """Record which settings keys a setup step changed (names only: values may be secret)."""
    before = before or {}
    keys = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    if secret_replaced:
        keys.append("proxy_app_secret")
    if keys:
        record(
            SETUP,
            reason="settings changed",
            details={"keys": keys},
            actor=ENVOY,
            install_id=install_id,
        )
