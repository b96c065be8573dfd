"""The visitor access policy as a pure function: event + settings + now → a plan.

No I/O here. `plan_visitor` decides whether an event opens, moves or closes an access window,
or is ignored (and why, in words an admin understands). The grant service applies the plan.

Approvals: an entry that Envoy has not approved (its `approval-status` under review, or the
block list's `entry_blacklist_review`) has its access *held*: closed, and opened again only
by an event that shows the entry approved. A denial (`entry_blacklist_deny`, or a denied
status) closes it for good, the invite's access included.
"""

from dataclasses import dataclass

from daemon.rules.settings import Settings
from daemon.rules.visits import Visit


@dataclass(frozen=True)
class Ignore:
    """Nothing to do. 400 = ignored in Envoy's dashboard; 412 = failed, shown to the admin."""

    status: int
    message: str


@dataclass(frozen=True)
class Open:
    """Access for `subject` from `starts_at` to `ends_at`.

    `extend`: merge with an existing window (start no later, end no earlier), as when a guest
    whose invite already has a grant signs in. Otherwise the window replaces the old one, as
    when an invite is moved. `approved`: the event shows the entry approved, which lifts a
    hold (see `Close.hold`).
    """

    subject: str
    starts_at: int
    ends_at: int | None
    group_ids: tuple[str, ...]
    visit: Visit
    extend: bool = False
    approved: bool = False


@dataclass(frozen=True)
class Close:
    """End the access of the grant of `subject` at `at` (cancel it if never issued).

    `tombstone`: with no grant yet, leave a closed one so that a later opening event changes
    nothing (a sign-out that overtook its sign-in). Not for an invite moved into the past:
    with no grant, there is simply nothing to end.
    `hold`: closed while the entry awaits approval; only an `Open` with `approved` opens the
    subject again (any other Close makes it final). `reason`: what Envoy is told when no
    access was left to end.
    """

    subject: str
    at: int
    visit: Visit
    tombstone: bool = True
    hold: bool = False
    reason: str | None = None


Plan = Ignore | Open | Close

REVIEW_EVENT = "entry_blacklist_review"
DENY_EVENT = "entry_blacklist_deny"
ENTRY_EVENTS = ("entry_sign_in", "entry_sign_out", REVIEW_EVENT, DENY_EVENT)
VISITOR_EVENTS = (
    *ENTRY_EVENTS,
    "invite_created",
    "invite_updated",
    "upcoming_visit",
    "invite_removed",
)
HELD = (
    "the entry is under review in Envoy (approval or block list): no Proxy credential until "
    "Envoy shows it approved"
)
DENIED = "the entry was denied in Envoy: its Proxy access is ended and stays ended"


def _not_mapped(visit: Visit) -> Ignore:
    return Ignore(400, f"flow {visit.flow_label} is not mapped to Proxy groups")


def _no_email(visit: Visit) -> Ignore:
    return Ignore(
        412,
        "the visitor has no usable email address, and Proxy needs one to issue a mobile "
        "credential; ask visitors in this flow for their email",
    )


def visit_subject(visit: Visit) -> str:
    """The grant an entry belongs to: its invite's when it has one, else its own."""
    if visit.kind == "entries" and visit.invite_id:
        return f"invites:{visit.invite_id}"
    return visit.subject


def plan_sign_in(visit: Visit, settings: Settings, now: int) -> Plan:
    if visit.approval not in (None, "approved"):
        return Ignore(412, DENIED if visit.approval == "denied" else HELD)
    groups = settings.groups_for_flow(visit.flow_id)
    if not groups:
        return _not_mapped(visit)
    if settings.invite_required and not visit.invite_id:
        return Ignore(
            400, "walk-in visitor: this install issues credentials to invited guests only"
        )
    if visit.email is None:
        return _no_email(visit)
    signed_in = visit.signed_in_at or now
    ends = signed_in + settings.access_duration_minutes * 60
    if visit.signed_out_at is not None:
        ends = min(ends, visit.signed_out_at)
    if ends <= now:
        return Ignore(400, "the visit's access window is already over")
    approved = visit.approval == "approved"
    subject = visit_subject(visit)
    return Open(subject, now, ends, tuple(groups), visit, extend=True, approved=approved)


def plan_invite(visit: Visit, settings: Settings, now: int) -> Plan:
    groups = settings.groups_for_flow(visit.flow_id)
    if not groups:
        return _not_mapped(visit)
    if visit.email is None:
        return _no_email(visit)
    if visit.expected_arrival is None:
        return Ignore(400, "the invite has no readable `expected-arrival-time`")
    arrival = visit.expected_arrival
    ends = arrival + settings.access_duration_minutes * 60
    if ends <= now:
        return Ignore(400, "the invite's access window is already over")
    starts = max(now, arrival - settings.early_access_minutes * 60)
    return Open(visit.subject, starts, ends, tuple(groups), visit)


def plan_visitor(event: str, visit: Visit, settings: Settings, now: int) -> Plan:
    """What a visitor event means for access; see the README's rules table."""
    if event in (REVIEW_EVENT, DENY_EVENT, "entry_sign_in"):
        held = _approval_hold(event, visit, now)
        if held is not None:
            return held
    if event == "entry_sign_in":
        return plan_sign_in(visit, settings, now)
    if event == "entry_sign_out":
        return Close(visit_subject(visit), now, visit)
    if event == "invite_removed":
        return Close(visit.subject, now, visit)
    if visit.kind != "invites":
        return Ignore(400, f"`{event}` expects an invite payload")
    plan = plan_invite(visit, settings, now)
    if (
        event == "invite_updated"
        and isinstance(plan, Ignore)
        and _window_over(visit, settings, now)
    ):
        # Moved into the past: whatever access the invite has ends now.
        return Close(visit.subject, now, visit, tombstone=False)
    return plan


def _approval_hold(event: str, visit: Visit, now: int) -> Close | None:
    """The Close of an entry Envoy has not approved: held, or ended for good if denied.

    Its subject is the entry's grant, which is its invite's when it has one."""
    if event == DENY_EVENT or visit.approval == "denied":
        return Close(visit_subject(visit), now, visit, reason=DENIED)
    if event == REVIEW_EVENT or visit.approval not in (None, "approved"):
        return Close(visit_subject(visit), now, visit, hold=True, reason=HELD)
    return None


def _window_over(visit: Visit, settings: Settings, now: int) -> bool:
    arrival = visit.expected_arrival
    return arrival is not None and arrival + settings.access_duration_minutes * 60 <= now
