"""Retention: personal data older than `ENVOY_PROXY_RETENTION_DAYS` that no access needs any
more is erased; ids, times, outcomes and counts stay, so statistics survive.

`PERSONAL_DATA` is the one list of where personal data is kept. A periodic pass (its own alarm,
apart from due work) first removes from Proxy the persons we created whose every grant has
passed the retention, then erases rows in small transactions, then empties the WAL. `forget`
does the same for one email address at once (a data-subject request).
"""

import logging
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from peewee import OP, Expression, Field, Model, Value, fn

from daemon.access import grants, outbox, proxy_persons
from daemon.access.issuing import _same_person
from daemon.proxy.access import NotConfigured
from daemon.proxy.client import ProxyAuthError, ProxyError, ProxyUnavailable
from db import (
    LIVE_STATES,
    Action,
    ActionKind,
    AuditEntry,
    Event,
    Grant,
    GrantState,
    PlacedStatus,
    database,
    install_or_none,
    like_pattern,
    now_epoch,
    truncate_wal,
)

log = logging.getLogger("envoy_proxy.retention")

DAY = 86400
PASS_SECONDS = 3600  # the retention sweep: hourly
FIRST_PASS_DELAY = 60  # after a start, the catch-up of due work goes first
AGAIN_SECONDS = 5  # more is left: the next batch soon, with due work in between
ROWS_PER_BATCH = 500  # rows changed per transaction and table in one pass
PERSONS_PER_PASS = 20  # Proxy persons looked at in one pass
PROXY_BUDGET = 5.0  # seconds a retention call to Proxy may take, retries included
ERASED = "[erased]"
# Every token with an "@" in it, up to what no unquoted address holds: no address (or part
# of one) is kept in a text.
ADDRESS = re.compile(r'[^\s"<>()\[\],;:\\]*@[^\s"<>()\[\],;:\\]*')
MIN_LITERAL = 3  # shorter names are not scrubbed from texts: they would erase ordinary words


@dataclass(frozen=True)
class PersonalData:
    """Where one table keeps personal data, and when a row no longer needs it.

    `erase`: nullable columns set to NULL; `scrub`: text (or JSON) that may quote someone,
    kept with every address and the row's erased values replaced by "[erased]"; `since`:
    the instant a row's age counts from; `closed`: rows no access depends on (None: every
    row, as for a record of what happened); `owned`: the rows of one (lower-case) email
    address, for `forget`; `held`: rows kept until their Proxy person is removed.
    """

    model: type[Model]
    erase: tuple[Field, ...]
    scrub: tuple[Field, ...]
    since: Expression
    closed: Expression | None = None
    owned: Callable[[str], Expression] | None = None
    held: Expression | None = None


_GRANT_HELD = (
    (Grant.kind == "visitor")
    & Grant.proxy_person_id.is_null(False)
    & (Grant.person_ours.is_null() | (Grant.person_ours == True))  # noqa: E712
)
GRANTS = PersonalData(
    Grant,
    erase=(Grant.email, Grant.full_name, Grant.phone, Grant.photo_url),
    scrub=(Grant.last_error,),
    closed=Grant.state.not_in(LIVE_STATES),
    since=fn.COALESCE(Grant.ends_at, Grant.updated_at),
    owned=lambda email: fn.LOWER(Grant.email) == email,
    held=_GRANT_HELD,
)
AUDIT = PersonalData(
    AuditEntry,
    erase=(AuditEntry.email, AuditEntry.full_name),
    scrub=(AuditEntry.reason, AuditEntry.details),
    since=AuditEntry.at,  # a record of what happened: every entry ages out
    owned=lambda email: fn.LOWER(AuditEntry.email) == email,
)
# Not here: placed statuses (rows whose key names the person, needed only while ahead: deleted
# outright by the pass and by `forget`), verifications (ids and reason codes only), the
# watchlist (the admin's own list, needed for access decisions: `envoy-proxy watchlist
# remove`), installs (the company's setup).
PERSONAL_DATA: tuple[PersonalData, ...] = (
    GRANTS,
    AUDIT,
    # A quarantined delivery keeps its body until it is planned: it may be an ending.
    PersonalData(
        Event,
        erase=(),
        scrub=(Event.answer, Event.last_error),
        closed=Event.body.is_null(),
        since=Event.received_at,
    ),
    PersonalData(
        Action,
        erase=(Action.lock_key,),  # "org:email", needed only while the action is pending
        scrub=(Action.payload, Action.last_error),
        closed=Action.done == True,  # noqa: E712
        since=fn.COALESCE(Action.done_at, Action.created_at),
        owned=lambda email: _like(Action.lock_key, f"%:{email}"),
    ),
)


@dataclass
class Erased:
    """What a pass (or a `forget`) did: rows changed per table, Proxy persons by outcome."""

    rows: Counter = field(default_factory=Counter)
    persons: Counter = field(default_factory=Counter)
    more: bool = False  # a limit was reached or Proxy must be asked again: run again soon

    @property
    def anything(self) -> bool:
        return bool(sum(self.rows.values()))

    def summary(self) -> str:
        rows = ", ".join(f"{n} {table}" for table, n in sorted(self.rows.items())) or "no rows"
        persons = ", ".join(f"{n} {what}" for what, n in sorted(self.persons.items()))
        return f"{rows}; Proxy persons: {persons or 'none'}"


def describe(days: int | None) -> dict | None:
    """The retention setting in plain words, for /status (None: not known here)."""
    if days is None:
        return None
    if days == 0:
        summary = "kept forever (ENVOY_PROXY_RETENTION_DAYS=0): nothing is erased by age"
    else:
        summary = (
            f"erased {days} days after a visit ends (names, emails, phones, photos; the Proxy "
            "persons we created are removed)"
        )
    return {"days": days, "summary": summary}


def cutoff(now: int, days: int) -> int:
    return now - days * DAY


def scrub(value, literals=()):
    """`value` (text, or JSON data) with every address and each literal replaced."""
    if isinstance(value, str):
        for literal in literals:
            value = re.sub(re.escape(literal), ERASED, value, flags=re.IGNORECASE)
        return ADDRESS.sub(ERASED, value)
    if isinstance(value, dict):
        return {scrub(key, literals): scrub(item, literals) for key, item in value.items()}
    if isinstance(value, list):
        return [scrub(item, literals) for item in value]
    return value


def _like(column: Field, pattern: str) -> Expression:
    """`column` matches the LIKE `pattern`, ignoring case; the pattern is not run through
    JSON fields' own conversion."""
    return Expression(column, OP.ILIKE, Value(like_pattern(pattern), converter=False))


def _mentions(column: Field, text: str) -> Expression:
    return _like(column, f"%{text}%")


def _any(conditions) -> Expression | None:
    combined = None
    for condition in conditions:
        combined = condition if combined is None else combined | condition
    return combined


def _holds(spec: PersonalData) -> Expression:
    """Rows that still hold something to erase: a pass never changes a row twice."""
    return _any([*(f.is_null(False) for f in spec.erase), *(_mentions(f, "@") for f in spec.scrub)])


def _closed(spec: PersonalData) -> Expression:
    return spec.closed if spec.closed is not None else spec.model._meta.primary_key.is_null(False)


def _expired(spec: PersonalData, before: int | None) -> Expression:
    """Closed rows older than `before` (None: every closed row)."""
    return _closed(spec) if before is None else _closed(spec) & (spec.since < before)


def _literals(values) -> list[str]:
    return sorted({v for v in values if v and len(v) >= MIN_LITERAL}, key=len, reverse=True)


def _erase_rows(spec: PersonalData, where: Expression, owned: bool, literals=()) -> list:
    """Erase (`owned`) or only scrub a batch of rows in one transaction; their keys, in order."""
    key = spec.model._meta.primary_key
    with database.atomic():
        rows = list(spec.model.select().where(where).order_by(key).limit(ROWS_PER_BATCH))
        for row in rows:
            own = [getattr(row, f.name) for f in spec.erase] if owned else []
            changes = {f: None for f in spec.erase} if owned else {}
            for column in spec.scrub:
                changes[column] = scrub(getattr(row, column.name), _literals([*own, *literals]))
            spec.model.update(changes).where(key == getattr(row, key.name)).execute()
    return [getattr(row, key.name) for row in rows]


def _erase_all(spec: PersonalData, where: Expression, owned: bool, literals) -> int:
    """Every row matching `where`, batch by batch, each visited once."""
    key = spec.model._meta.primary_key
    total, last = 0, None
    while True:
        keys = _erase_rows(spec, where if last is None else where & (key > last), owned, literals)
        if not keys:
            return total
        total, last = total + len(keys), keys[-1]


# ---------------------------------------------------------------------------- Proxy persons


def _remove_person(ctx, grant: Grant, before: int | None, erased: Erased) -> list[int] | None:
    """Remove the grant's person from Proxy unless a grant not yet expired needs it; the ids
    of the person's expired grants that may now be erased, or None to try again later."""
    mine = list(
        Grant.select(Grant.id).where(_same_person(grant, _expired(GRANTS, before))).tuples()
    )
    cleared = [grant.id, *(grant_id for (grant_id,) in mine)]
    if Grant.select().where(_same_person(grant, ~_expired(GRANTS, before))).exists():
        erased.persons["still needed"] += 1
        return cleared
    install = install_or_none(grant.install_id)
    try:
        if install is None:
            raise NotConfigured("the install is gone")
        outcomes = proxy_persons.remove_ours(ctx.proxy.limited(PROXY_BUDGET).client(install), grant)
    except (ProxyUnavailable, ProxyAuthError) as error:
        log.warning("grant %s: Proxy person not removed now (%s); next pass", grant.id, error)
        return None
    except (NotConfigured, ProxyError) as error:
        # Nothing to try again: the local data goes, the log keeps the person's id.
        log.warning("grant %s: Proxy person %s not removed: %s", grant.id, grant.proxy_person_id,
                    error)  # fmt: skip
        outcomes = {grant.proxy_person_id: "kept"}
    erased.persons.update(outcomes.values())
    if {"deleted", "anonymised"} & set(outcomes.values()):
        _reissue_racing(ctx, grant)
    return cleared


def _reissue_racing(ctx, grant: Grant) -> None:
    """A visit of the same person that started while we removed it (issued, or being issued)
    lost its credential with the person: issue it again now (a new person is imported)."""
    now = now_epoch()
    claimed = Action.select(Action.grant).where(
        (Action.kind == ActionKind.ISSUE) & (Action.done == False) & (Action.claimed_until >= now)  # noqa: E712
    )
    racing = (Grant.state == GrantState.ACTIVE) | Grant.id.in_(claimed)
    with database.atomic():
        ids = [g.id for g in Grant.select(Grant.id).where(_same_person(grant, racing))]
        for grant_id in ids:
            grants.reactivate_at(grant_id, now)
    if ids:
        log.warning("grants %s started while their Proxy person was removed: issued again", ids)
        ctx.rearm(now)


def _remove_persons(ctx, before: int, now: int, erased: Erased) -> list[int]:
    """Proxy persons of grants past the retention, a bounded number per pass, never while due
    work waits; the grants that may now be erased."""
    due = outbox.next_due(now)
    if due is not None and due <= now:
        erased.more = True  # endings first: Proxy is asked next pass
        return []
    candidates = list(
        Grant.select()
        .where(_expired(GRANTS, before) & _holds(GRANTS) & _GRANT_HELD)
        .order_by(Grant.id)
        .limit(PERSONS_PER_PASS)
    )
    erased.more |= len(candidates) == PERSONS_PER_PASS
    cleared: list[int] = []
    for grant in candidates:
        ids = _remove_person(ctx, grant, before, erased)
        if ids is None:
            erased.more = False
            break  # Proxy is down or refuses the key: the hourly sweep asks again
        cleared.extend(ids)
    return cleared


# ---------------------------------------------------------------------------- the pass


def erase_expired(ctx, before: int, now: int) -> Erased:
    """One bounded pass over everything closed before `before`; call with a connection."""
    erased = Erased()
    cleared = _remove_persons(ctx, before, now, erased)
    for spec in PERSONAL_DATA:
        where = _expired(spec, before) & _holds(spec)
        if spec.held is not None:
            where &= ~spec.held | spec.model._meta.primary_key.in_(cleared)
        count = len(_erase_rows(spec, where, owned=True))
        erased.rows[spec.model._meta.table_name] += count
        erased.more |= count == ROWS_PER_BATCH
    # The statuses we placed in Proxy are kept only while ahead (their key names the person).
    past = PlacedStatus.delete().where(PlacedStatus.at < before).execute()
    erased.rows[PlacedStatus._meta.table_name] += past
    if erased.anything:
        _empty_wal()
        log.info("retention: erased %s", erased.summary())
    return erased


def _empty_wal() -> None:
    if not truncate_wal():
        log.warning("retention: a reader kept the WAL from being emptied; the next pass retries")


def run_pass(ctx, now: int | None = None) -> int | None:
    """The retention alarm's call: one bounded pass; when to run the next one (None: the
    hourly sweep's turn), sooner while more is left."""
    days = ctx.config.retention_days
    if not days:
        return None
    now = now_epoch() if now is None else now
    with database.connection_context():
        erased = erase_expired(ctx, cutoff(now, days), now)
    return now + AGAIN_SECONDS if erased.more else None


# ---------------------------------------------------------------------------- one person


class StillLive(RuntimeError):
    """The person has access now or to come; `grants` are those live grants."""

    def __init__(self, grants: list[Grant]):
        self.grants = grants
        super().__init__(f"{len(grants)} live grant(s)")


def grants_of(email: str) -> list[Grant]:
    return list(
        Grant.select().where(fn.LOWER(Grant.email) == email.strip().lower()).order_by(Grant.id)
    )


def waiting_deliveries(email: str) -> int:
    """Deliveries naming this address still waiting to be planned (kept: they may end access)."""
    return Event.select().where(Event.body.is_null(False) & _mentions(Event.body, email)).count()


def forget(ctx, email: str) -> Erased:
    """Erase everything kept about `email` now, whatever its age, and remove its Proxy persons
    of ours; raises StillLive (erasing nothing) while one of its grants is live."""
    mine = grants_of(email)
    live = [g for g in mine if g.state in LIVE_STATES]
    if live:
        raise StillLive(live)
    erased = Erased()
    cleared = set()
    for grant in mine:
        if grant.id in cleared or not proxy_persons.removable(grant):
            continue
        ids = _remove_person(ctx, grant, None, erased)
        if ids is None:
            raise ProxyUnavailable("Proxy could not be reached; nothing here was erased yet")
        cleared.update(ids)
    values = _literals([email, *(v for g in mine for v in (g.full_name, g.phone, g.photo_url))])
    for spec in PERSONAL_DATA:
        erased.rows[spec.model._meta.table_name] += _forget_rows(spec, email, values)
    placed = PlacedStatus.delete().where(_like(PlacedStatus.lock_key, f"%:{email}")).execute()
    erased.rows[PlacedStatus._meta.table_name] += placed
    _empty_wal()
    return erased


def _forget_rows(spec: PersonalData, email: str, values: list[str]) -> int:
    """Erase the rows `email` owns and scrub its values from every row's texts (a live row's
    access is not touched: only closed rows lose fields)."""
    total = 0
    if spec.owned is not None:
        owned = _closed(spec) & spec.owned(email.strip().lower())
        total += _erase_all(spec, owned, True, values)
    mentioned = _any(_mentions(f, v) for f in spec.scrub for v in values)
    if mentioned is not None:
        total += _erase_all(spec, mentioned, False, values)
    return total
