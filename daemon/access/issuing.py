"""Carrying out `issue` and `revoke` actions against Proxy.

Issuing: reuse the Proxy person found by email (re-tag, re-activate) or import one, then
schedule `suspended` at the end in Proxy as a safety net that holds while the daemon is down.
Revoking: suspend and untag, unless another live grant of the same person still needs access.
Proxy has no idempotency keys, so every step first looks at what Proxy already has: running an
action twice (after a crash between the Proxy call and the commit) converges to one person.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

from daemon.access import accounts, audit, grants, uninstall
from daemon.proxy.client import ProxyClient, ProxyError, ProxyNotFound
from daemon.rules.settings import Settings
from db import Action, Grant, GrantState, PlacedStatus, database, install_by_id

log = logging.getLogger("envoy_proxy.issuing")


class GrantMoved(RuntimeError):
    """The grant changed while we were calling Proxy; the action is run again."""


class NotOurs(ProxyError):
    """A visit asked for access on a Proxy person that existed before us and is not active:
    a visitor grant never changes such a person's status (PROXY_API.md, Ownership)."""


def carries_our_marker(person: dict) -> bool:
    """Whether we created this person: our imports name the Envoy visit in `details`."""
    details = person.get("details") if isinstance(person.get("details"), dict) else {}
    return bool(details.get("envoyId") or details.get("createdBy"))


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class Outcome:
    """What an action did, and the write that records it in the grant. The caller runs
    `record` in the transaction that completes the action: the grant's new state and the
    action's completion commit together. `ambiguous`: Proxy may still carry out a call we
    gave up on (an import's twin), so the person is reconciled again a little later."""

    note: str
    record: Callable[[], None] = _nothing
    ambiguous: bool = False


def _same_person(grant: Grant, also=None):
    """The other grants of this grant's Proxy person (and `also`): those with its email or
    its Proxy person id in its Proxy org, whichever install they belong to.

    Each side of the OR names the org (or install) itself, so that the (org, email) and
    (org, person) indexes serve one side each. With the org outside the OR, SQLite searched
    every grant of the org, at every issue and every ending (BENCHMARKS.md, issue 15).
    """
    if grant.proxy_org_id:
        scope = Grant.proxy_org_id == grant.proxy_org_id
    else:  # recorded before orgs were: its install's grants
        scope = Grant.install_id == grant.install_id
    rest = Grant.id != grant.id
    if also is not None:
        rest &= also
    same = scope & (Grant.email == grant.email) & rest
    if grant.proxy_person_id:
        same |= scope & (Grant.proxy_person_id == grant.proxy_person_id) & rest
    return same


def _same_rule(grant: Grant, others: list[Grant]) -> list[Grant]:
    """The other grants whose status rule is this grant's: an employee's status follows her
    Protect grants alone, so a visit on her person neither keeps her active nor moves her net."""
    if grant.kind != "employee":
        return others
    return [g for g in others if g.kind == "employee"]


def _find_person(client: ProxyClient, grant: Grant) -> dict | None:
    if grant.proxy_person_id:
        person = client.get_person(grant.proxy_person_id)
        if person is not None:
            return person
    return client.find_person_by_email(grant.email) if grant.email else None


def _record_intent(grant: Grant, person_id: str | None, added: list[str]) -> None:
    """Commit what we are about to do in Proxy before doing it: after a crash or a failure
    half-way, the grant still knows whom it touched and which groups to take away.

    Nothing is written when the grant as read for this attempt already says so.
    """
    if (grant.proxy_person_id, grant.added_group_ids) == (person_id, added):
        return
    with database.atomic():
        Grant.update(proxy_person_id=person_id, added_group_ids=added).where(
            Grant.id == grant.id
        ).execute()
    grant.proxy_person_id, grant.added_group_ids = person_id, added


def _twins_possible(grant: Grant) -> None:
    """Remember, before anything else happens, that this grant's import may leave a twin."""
    if not grant.twins_possible:
        with database.atomic():
            Grant.update(twins_possible=True).where(Grant.id == grant.id).execute()
        grant.twins_possible = True


def _end_twins(client: ProxyClient, grant: Grant, person_id: str, tags: dict[str, str]) -> int:
    """Suspend and untag every other person with the grant's email that we created: twins
    that an import carried out after we gave up on it left behind (issue 16, item 4)."""
    twins = [
        p
        for p in client.find_persons_by_email(grant.email)
        if p.get("id") != person_id and carries_our_marker(p)
    ]
    for twin in twins:
        log.warning("grant %s: ending twin Proxy person %s", grant.id, twin["id"])
        end_twin(client, twin, tags)
    return len(twins)


def end_twin(client: ProxyClient, twin: dict, tags: dict[str, str]) -> list[str]:
    """Suspend a twin that is not suspended and take it out of these groups; what was done."""
    done = []
    if twin.get("status") != "suspended":
        client.schedule_status(twin["id"], "suspended")
        done.append(f"twin {twin['id']} suspended")
    for group, tag in tags.items():
        if tag in (twin.get("tags") or []):
            client.remove_from_group(group, twin["id"], email=twin.get("email"))
            done.append(f"twin {twin['id']} taken out of {group}")
    return done


def _issue_visitor(grant, client, tags, settings, now) -> tuple[dict, list[str], bool]:
    """Give a visitor access: (the person, the groups we added, whether we created it).

    A person we created follows its visits: tagged and activated. One that existed before us
    (an employee, anyone an admin made) only gets the groups the visit needs, and only while
    Proxy has it active: its status is never changed by a visit.
    """
    person = _find_person(client, grant)
    if person is None:
        added = sorted(set(grant.group_ids) | set(grant.added_group_ids))
        _record_intent(grant, grant.proxy_person_id, added)
        person = client.import_person(
            name=grant.full_name or grant.email,
            email=grant.email,
            tags=list(tags.values()),
            photo=grant.photo_url,
            phone=grant.phone,
            envoy_id=grant.subject,
            created_by_envoy=settings.created_by_envoy,
            send_invite=settings.proxy_notifications,
            known_absent=True,  # _find_person just looked the email up (visitors all have one)
            on_ambiguous=lambda: _twins_possible(grant),
        )
        # Before the safety net: a grant whose net call fails must name the person it created.
        _record_intent(grant, person["id"], added)
        return person, added, True
    ours = grant.person_ours if grant.person_ours is not None else carries_our_marker(person)
    if not ours and person.get("status") != "active":
        raise NotOurs(
            f"the Proxy person with the email {grant.email} existed before Envoy and is "
            f"{person.get('status') or 'not active'}: a visit does not re-activate it (an "
            "admin can, in Proxy)"
        )
    have = set(person.get("tags") or [])
    missing = [group for group, tag in tags.items() if tag not in have]
    # Groups recorded by an earlier, interrupted attempt stay ours even though the person
    # has them now: we added them.
    added = sorted(set(missing) | set(grant.added_group_ids))
    _record_intent(grant, person["id"], added)
    for group in missing:
        client.add_to_group(group, person["id"])
    if ours:
        _activate(client, person["id"], now)
    return person, added, ours


def _issue_employee(grant: Grant, client: ProxyClient, now: int) -> dict:
    """Activate the employee's existing person: employees are never created."""
    person = _find_person(client, grant)
    if person is None:
        raise ProxyNotFound(
            f"no Proxy person has the email {grant.email}: add the employee in Proxy",
            status=404,
            code="not_found",
        )
    _record_intent(grant, person["id"], [])
    _activate(client, person["id"], now)
    return person


def _activate(client: ProxyClient, person_id: str, now: int) -> None:
    """Schedule `active` even if Proxy says active now: a suspension may be seconds away."""
    client.schedule_status(person_id, "active", now)


def _person_grants(grant: Grant, now: int) -> tuple[Grant, list[Grant]]:
    """The grant as stored now, and the other grants of its person that bear on the safety net:
    the active ones and those with a net still ahead.

    Stored now: a webhook may have moved the window (or the email) while we called Proxy.
    """
    bearing = (Grant.state == GrantState.ACTIVE) | (Grant.safety_net_at > now)
    rows = list(Grant.select().where(_same_person(grant, bearing) | (Grant.id == grant.id)))
    [fresh] = [row for row in rows if row.id == grant.id]
    if (fresh.email, fresh.proxy_person_id) != (grant.email, grant.proxy_person_id):
        return _person_grants(fresh, now)  # the person is whom the stored grant names
    return fresh, [row for row in rows if row.id != grant.id]


@dataclass(frozen=True)
class SafetyNet:
    """Where Proxy's own schedule ends the person's access (`at`), and when the daemon must
    re-activate the person because an earlier net cuts a longer stay short: (grant, instant)."""

    at: int | None = None
    reactivations: tuple[tuple[int, int], ...] = ()
    placed: bool = False  # `at` was scheduled in Proxy by this issue


def _renew_safety_net(
    client: ProxyClient, grant: Grant, others: list[Grant], person_id: str, now: int
) -> SafetyNet:
    """Make Proxy's own schedule end access when the last live grant of the person ends.

    Proxy cannot delete a scheduled status. An earlier net that would cut a longer stay short
    is left to fire, and the daemon re-activates the person just after it, if a grant still
    needs access then: Proxy's schedule never holds a future `active`, so once every grant
    has ended nothing can turn access back on (an `active` scheduled after the old net did,
    for the whole time between the visitor leaving and the new net: issue 16, item 1).
    """
    live = [*(g for g in others if g.state == "active"), grant]
    if any(g.ends_at is None for g in live):
        return SafetyNet()
    end = max(g.ends_at for g in live)
    holder = max(live, key=lambda g: g.ends_at)
    netted = [g for g in [*others, grant] if g.safety_net_at is not None]
    nets = [g for g in netted if now < g.safety_net_at <= end]
    # Every net still ahead, also those a grant placed before its net moved (or it ended).
    earlier = {g.safety_net_at for g in nets} | placed_nets(grant, now, end)
    reactivations = tuple((holder.id, at + 1) for at in sorted(earlier) if at < end)
    if _has_net_at(grant, nets, end, now):
        return SafetyNet(end if grant.safety_net_at == end else None, reactivations)
    client.schedule_status(person_id, "suspended", end)
    return SafetyNet(end, reactivations, placed=True)


def _reactivation_queued(grant_id: int, at: int) -> bool:
    """Whether the grant already has an issue waiting at `at` (one per net is enough)."""
    pending = (Action.grant == grant_id) & (Action.kind == "issue") & (Action.due_at == at)
    return Action.select().where(pending & (Action.done == False)).exists()  # noqa: E712


def placed_nets(grant: Grant, now: int, until: int) -> set[int]:
    """The instants in (now, until] of the nets placed in Proxy for the grant's person."""
    ahead = (PlacedStatus.at > now) & (PlacedStatus.at <= until)
    mine = (PlacedStatus.lock_key == grants.person_key(grant)) & (
        PlacedStatus.status == "suspended"
    )
    return {row.at for row in PlacedStatus.select(PlacedStatus.at).where(mine & ahead)}


def record_net(grant: Grant, person_id: str, at: int, now: int) -> None:
    """Remember a net placed in Proxy (and forget the person's nets long past)."""
    key = grants.person_key(grant)
    PlacedStatus.delete().where(
        (PlacedStatus.lock_key == key) & (PlacedStatus.at < now - 3600)
    ).execute()
    PlacedStatus.insert(lock_key=key, person_id=person_id, status="suspended", at=at).execute()


def _has_net_at(grant: Grant, nets: list[Grant], end: int, now: int) -> bool:
    """Whether a grant of the person already has its net at `end`."""
    if end > now:
        return any(g.safety_net_at == end for g in nets)
    # Every window is over: a net at `end` is past, so not among the rows loaded.
    at_end = Grant.safety_net_at == end
    itself = (Grant.id == grant.id) & at_end
    return Grant.select().where(_same_person(grant, at_end) | itself).exists()


def issue(ctx, grant: Grant, now: int) -> Outcome:
    """Give the grant's person access in Proxy; the outcome records the grant active, or
    raises `GrantMoved` if a webhook changed the grant meanwhile."""
    install = install_by_id(grant.install_id)
    settings = Settings.from_config(install.config or {})
    client = ctx.proxy.client(install, grant.proxy_org_id)
    if grant.kind == "employee":  # Protect: the one grant that sets an employee's status
        person, added, ours, sets_status = _issue_employee(grant, client, now), [], False, True
    else:
        tags = ctx.proxy.group_tags(client, grant.group_ids)
        person, added, ours = _issue_visitor(grant, client, tags, settings, now)
        sets_status = ours
    grant, others = _person_grants(grant, now)
    net = SafetyNet()
    if sets_status:
        net = _renew_safety_net(client, grant, _same_rule(grant, others), person["id"], now)

    def record() -> None:
        changed = (
            Grant.update(
                state=GrantState.ACTIVE,
                person_ours=ours,
                added_group_ids=added,
                safety_net_at=net.at,
                last_error=None,
                updated_at=now,
                version=Grant.version + 1,
            )
            .where((Grant.id == grant.id) & (Grant.version == grant.version))
            .execute()
        )
        if not changed:
            raise GrantMoved(f"grant {grant.id} changed during issue")
        audit.issued(grant, person["id"], added, ours)
        if net.placed:
            record_net(grant, person["id"], net.at, now)
        for holder_id, at in net.reactivations:
            if not _reactivation_queued(holder_id, at):
                grants.reactivate_at(holder_id, at)

    return Outcome(f"person {person['id']} active", record, ambiguous=grant.twins_possible)


def revoke(ctx, grant: Grant, now: int) -> Outcome:
    """Take the grant's access away, or only close the grant if another one still needs it;
    the outcome records the grant ended."""
    live = (Grant.state == GrantState.ACTIVE) & (Grant.ends_at.is_null() | (Grant.ends_at > now))
    others = _same_rule(grant, list(Grant.select().where(_same_person(grant, live))))

    if others:
        # Keep the person active; whoever ends last takes away the groups we added.
        heir = max(others, key=lambda g: (g.ends_at is None, g.ends_at or 0))

        def bequeath() -> None:
            added = sorted(set(heir.added_group_ids) | set(grant.added_group_ids))
            twins = heir.twins_possible or grant.twins_possible  # the heir ends them too
            Grant.update(added_group_ids=added, twins_possible=twins).where(
                Grant.id == heir.id
            ).execute()
            _mark_ended(grant, now)

        return Outcome(f"access kept for grant {heir.id} of the same person", bequeath)
    install = install_by_id(grant.install_id)
    # The install's org now, when this grant's is one it has left since.
    current_org = grant.proxy_org_id and accounts.org_left(install, grant.proxy_org_id)

    def ended() -> None:
        _mark_ended(grant, now)
        if current_org:  # the last grant of an org the install left?
            accounts.release_unused(grant.install_id, current_org)

    client = ctx.proxy.client(install, grant.proxy_org_id)
    person_id = grant.proxy_person_id
    if person_id is None:  # an issue interrupted before it learnt the id: ask Proxy
        person = client.find_person_by_email(grant.email) if grant.email else None
        person_id = person["id"] if person else None
    if person_id is None:
        return Outcome("no Proxy person to suspend", ended)
    # A visit on a person that existed before us takes back only the groups it added.
    suspends = grant.kind == "employee" or grant.person_ours is not False
    try:
        if suspends:
            client.schedule_status(person_id, "suspended", now)
        for group in grant.added_group_ids:
            client.remove_from_group(group, person_id, email=grant.email)
    except ProxyNotFound:
        log.warning("grant %s: Proxy person %s no longer exists", grant.id, person_id)
    if suspends and grant.twins_possible and grant.kind == "visitor":
        _end_twins(client, grant, person_id, ctx.proxy.group_tags(client, grant.group_ids))
    if not suspends:
        return Outcome(f"person {person_id}: the visit's groups taken back", ended)
    return Outcome(f"person {person_id} suspended", ended)


def _mark_ended(grant: Grant, now: int) -> None:
    """Close the grant; an issue still waiting for a retry must not re-open access.

    Its window keeps the end it was given: a revoke retried through an outage ends access
    late, but the grant's window (the access it stood for) does not grow with the retries."""
    ends = now if grant.ends_at is None else min(grant.ends_at, now)
    Grant.update(
        state=GrantState.ENDED, ends_at=ends, updated_at=now, version=Grant.version + 1
    ).where(Grant.id == grant.id).execute()
    grants.drop_pending(grant, now, kind="issue")
    audit.ended(grant)
    uninstall.erase_secret_when_done(grant.install_id)
