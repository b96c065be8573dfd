"""Reconcile one Proxy person, (Proxy org, email), with what its grants want.

Level-triggered, the way controllers converge: the desired state comes from the database
(every grant of the person, whichever install), Proxy's view is read (every person with the
email: the one our grants name, and the twins that carry our marker), and the fewest calls
make them equal. Running it twice, or again after a crash, finds nothing left to do.

It runs as an outbox action (`reconcile`) under the person's lock key, so it never runs
beside an issue or a revoke of the same person and endings are always claimed first: after
an ambiguous outcome, and from the periodic repair pass over persons with live or recently
ended grants.
"""

import logging
from dataclasses import dataclass, field, replace

from peewee import fn

from daemon.access import grants, outbox
from daemon.access.issuing import Outcome, carries_our_marker, end_twin, placed_nets, record_net
from db import Action, ActionKind, Grant, GrantState, database, install_by_id

log = logging.getLogger("envoy_proxy.reconcile")

RECENT_SECONDS = 3600  # a person whose last grant ended this long ago is left alone
REPAIR_EVERY_SECONDS = 300
REPAIR_BATCH = 20  # persons per repair pass: bounded work, the rest wait for the next pass
AFTER_AMBIGUOUS_SECONDS = 30  # time for a call Proxy may still carry out to land
# A status we scheduled takes effect a second or two later, and Proxy's schedule cannot be
# read: while a grant of the person changed this recently, its status is left as it is.
SETTLE_SECONDS = 10


@dataclass(frozen=True)
class Desired:
    """What one person should be in Proxy, as its grants say.

    `status`: "active", "suspended", or None when the grants leave it as it is (a person that
    existed before us, unless its Protect grants have all ended; an issue still under way).
    `give`: groups the live grants need; `keep`: those that grants live or under way need;
    `take`: groups we added that no grant needs any more. `end`: where Proxy's own net ends
    access."""

    person_id: str | None
    status: str | None
    give: frozenset[str]
    keep: frozenset[str]
    take: frozenset[str]
    end: int | None
    netted: bool  # a net of ours already stands at `end`
    holder: int | None  # the grant whose net that is


@dataclass
class Done:
    """The calls one reconcile made (for the log and the action's note)."""

    calls: list[str] = field(default_factory=list)

    def note(self, person_id: str | None) -> str:
        said = "; ".join(self.calls) if self.calls else "already as its grants want"
        return f"person {person_id or '(none)'}: {said}"


def person_grants(scope: str, email: str) -> list[Grant]:
    """Every grant of the person (org or, for old grants, install) with this email."""
    in_scope = (Grant.proxy_org_id == scope) | (
        Grant.proxy_org_id.is_null() & (Grant.install_id == scope)
    )
    return list(Grant.select().where(in_scope & (Grant.email == email)).order_by(Grant.id))


def _live(grant: Grant, now: int) -> bool:
    return grant.state == GrantState.ACTIVE and (grant.ends_at is None or grant.ends_at > now)


def _under_way(grant: Grant, now: int) -> bool:
    """A started grant whose issue has not run or not finished: that issue gives access, and
    until then nothing it needs is taken away (an issue given up on does not count)."""
    started = grant.starts_at <= now and (grant.ends_at is None or grant.ends_at > now)
    return (
        grant.state == GrantState.PENDING
        and started
        and grants.pending_action(grant, ActionKind.ISSUE) is not None
    )


def named_person(rows: list[Grant], now: int) -> str | None:
    """The Proxy person the grants name: a live grant's, else the latest known."""
    for grant in rows:
        if _live(grant, now) and grant.proxy_person_id:
            return grant.proxy_person_id
    known = [g for g in rows if g.proxy_person_id]
    return known[-1].proxy_person_id if known else None


def created_by_us(rows: list[Grant]) -> bool | None:
    """Whether the grants recorded that we created the person (None: none knows yet)."""
    flags = {g.person_ours for g in rows if g.person_ours is not None}
    return (True in flags) if flags else None


def desired(rows: list[Grant], now: int, ours: bool) -> Desired:
    """The person's desired state from its grants (pure but for a look at pending issues)."""
    live = [g for g in rows if _live(g, now)]
    kept = live + [g for g in rows if _under_way(g, now)]
    # Protect grants are the only ones that set the status of a person that existed before us.
    setters = rows if ours else [g for g in rows if g.kind == "employee"]
    live_setters = [g for g in setters if g in live]
    status = None
    if all(g.updated_at <= now - SETTLE_SECONDS for g in rows):  # else: may not be in force yet
        # Only a person we created is re-activated here: an employee an admin suspended in
        # Proxy stays suspended, whatever its Protect grant says.
        if live_setters and ours:
            status = "active"
        elif setters and not any(g in kept for g in setters):
            status = "suspended"
    end, holder = None, None
    if live_setters and all(g.ends_at is not None for g in live_setters):
        holder = max(live_setters, key=lambda g: g.ends_at)
        end = holder.ends_at
    keep = frozenset(gid for g in kept for gid in g.group_ids)
    added = frozenset(gid for g in rows for gid in g.added_group_ids)
    return Desired(
        person_id=named_person(rows, now),
        status=status,
        give=frozenset(gid for g in live for gid in g.group_ids),
        keep=keep,
        take=added - keep,
        end=end,
        netted=holder is not None and holder.safety_net_at == end,
        holder=None if holder is None else holder.id,
    )


def reconcile(ctx, scope: str, email: str, now: int) -> Outcome:
    """Make Proxy's view of the person equal to what its grants want; the outcome records it."""
    rows = person_grants(scope, email)
    if not rows:
        return Outcome("no grants: nothing to reconcile")
    chosen = max(rows, key=lambda g: (_live(g, now), g.id))
    # In the person's org, also one its install has left since (step 1 changed).
    client = ctx.proxy.client(install_by_id(chosen.install_id), chosen.proxy_org_id)
    person_id = named_person(rows, now)
    everyone = client.find_persons_by_email(email)
    person = next((p for p in everyone if p.get("id") == person_id), None)
    if person is None and person_id is not None:
        person = client.get_person(person_id)  # its email may have been edited in Proxy
    ours = created_by_us(rows)
    if ours is None:
        ours = person is not None and carries_our_marker(person)
    want = desired(rows, now, ours)
    if want.end is not None and want.end in placed_nets(rows[0], now, want.end):
        want = replace(want, netted=True)  # placed by a grant whose net moved on
    tags = ctx.proxy.group_tags(client, sorted(want.keep | want.take | want.give))
    done = Done()
    net = None
    if person is not None:
        net = _converge(client, person, want, tags, now, done)
    # Any other person of ours with this email is a twin (an import carried out after we gave
    # up on it): never active, never in our groups. Left alone while an issue is under way
    # and no person is named yet: that issue adopts one of them.
    if person_id is not None or not want.keep:
        for twin in everyone:
            if twin.get("id") != person_id and carries_our_marker(twin):
                done.calls += end_twin(client, twin, tags)
    if done.calls:
        log.info("reconciled %s in %s: %s", email, scope, "; ".join(done.calls))

    def record() -> None:
        ids = [g.id for g in rows]
        Grant.update(reconciled_at=now).where(Grant.id.in_(ids)).execute()
        if person is not None:
            unknown = Grant.id.in_(ids) & Grant.person_ours.is_null()
            Grant.update(person_ours=ours).where(unknown & (Grant.state != "pending")).execute()
        if net is not None:
            Grant.update(safety_net_at=net).where(Grant.id == want.holder).execute()
            record_net(rows[0], person["id"], net, now)

    return Outcome(done.note(person_id), record)


def _converge(client, person: dict, want: Desired, tags, now: int, done: Done) -> int | None:
    """Groups first, then the status and the net at the end; the net's instant if it placed
    one."""
    person_id = person["id"]
    have = set(person.get("tags") or [])
    for group in sorted(want.give):
        if tags[group] not in have:
            client.add_to_group(group, person_id)
            done.calls.append(f"added to {group}")
    for group in sorted(want.take):
        if tags[group] in have:
            client.remove_from_group(group, person_id, email=person.get("email"))
            done.calls.append(f"taken out of {group}")
    if want.status is not None and person.get("status") != want.status:
        client.schedule_status(person_id, want.status, now)
        done.calls.append(want.status)
    if want.status == "active" and want.end is not None and not want.netted:
        # Proxy's own schedule must end access if the daemon is down at the end.
        client.schedule_status(person_id, "suspended", want.end)
        done.calls.append(f"net at {want.end}")
        return want.end
    return None


# -- when it runs ---------------------------------------------------------------------------


def enqueue(grant: Grant, due_at: int) -> bool:
    """Reconcile the grant's person at `due_at`, unless a reconcile of it is already waiting;
    whether one was queued."""
    key = grants.person_key(grant)
    if key is None:
        return False
    waiting = (Action.lock_key == key) & (Action.kind == ActionKind.RECONCILE)
    if Action.select().where(waiting & (Action.done == False)).exists():  # noqa: E712
        return False
    payload = {"scope": grant.proxy_org_id or grant.install_id, "email": grant.email}
    outbox.enqueue(ActionKind.RECONCILE, grant.install_id, due_at, lock_key=key, payload=payload)
    return True


def repair_pass(now: int, limit: int = REPAIR_BATCH) -> int:
    """Queue a reconcile for the persons with live or recently ended grants that were
    compared longest ago (at most `limit`); how many were queued."""
    with database.atomic():
        return sum(enqueue(grant, now) for grant in _compared_longest_ago(now, limit))


def _compared_longest_ago(now: int, limit: int) -> list[Grant]:
    """One grant of each of up to `limit` persons, those compared longest ago (never first).

    Each candidate set is read in its index's order and cut short (`grant_state_reconciled`,
    `grant_state_ends`): a scan of every live grant took 2.5 s at a million pending, every pass,
    in the way of due endings (BENCHMARKS.md, issue 16). A person with several grants shows
    more than once, hence the margin; the pass is bounded, so an approximate cut is enough."""
    margin = limit * 4
    named = Grant.email.is_null(False)
    active = (Grant.state == GrantState.ACTIVE) & named
    never = Grant.select().where(active & Grant.reconciled_at.is_null()).limit(margin)
    oldest = (
        Grant.select()
        .where(active & Grant.reconciled_at.is_null(False))
        .order_by(Grant.reconciled_at)
        .limit(margin)
    )
    ended = (Grant.state == GrantState.ENDED) & (Grant.ends_at >= now - RECENT_SECONDS)
    recently = (
        Grant.select()
        .where(ended & named)
        .order_by(fn.COALESCE(Grant.reconciled_at, 0))
        .limit(margin)
    )
    candidates = sorted([*never, *oldest, *recently], key=lambda g: (g.reconciled_at or 0, g.id))
    persons: dict[str, Grant] = {}
    for grant in candidates:
        persons.setdefault(grants.person_key(grant), grant)
    return list(persons.values())[:limit]
