"""The tables. Instants that are compared or indexed are integer UTC epoch seconds.

Aware datetimes in a `DateTimeField` compare as text in SQLite, which orders wrongly across
offsets; integers do not. Converting to a person's time zone happens at the edges.
"""

import enum
import json
import time

from peewee import (
    CharField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

from db.connection import database


def now_epoch() -> int:
    """The current instant as stored: integer UTC seconds (time-machine moves it in tests)."""
    return int(time.time())


class Unreadable:
    """A stored JSON text that does not parse (a damaged row).

    Loading the row still works, so one damaged row never stops a query over many (the
    outbox's claim, the status page); only the work that uses the value fails, on its own and
    with its error shown. Written back unchanged, so the evidence stays for an admin."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return f"Unreadable({self.text[:40]!r})"


class JSONField(TextField):
    """A JSON document kept as text; `None` stays NULL; a text that is not JSON loads as
    `Unreadable`."""

    def db_value(self, value):
        if isinstance(value, Unreadable):
            return value.text
        return None if value is None else json.dumps(value, sort_keys=True)

    def python_value(self, value):
        if value is None:
            return None
        try:
            return json.loads(value)
        except ValueError:
            return Unreadable(value)


class FlagField(IntegerField):
    """A yes/no kept as 0 or 1, as the schema's INTEGER columns hold it on either engine
    (PostgreSQL will not compare an integer column with a boolean)."""

    def db_value(self, value):
        return None if value is None else int(bool(value))

    def python_value(self, value):
        return None if value is None else bool(value)


class GrantState(enum.StrEnum):
    """Where a grant stands. Stored as its text, so rows and queries compare with strings."""

    PENDING = "pending"  # not yet issued
    ACTIVE = "active"  # issued in Proxy
    ENDED = "ended"  # taken away
    CANCELLED = "cancelled"  # ended before it was ever issued


LIVE_STATES = (GrantState.PENDING, GrantState.ACTIVE)


class ActionKind(enum.StrEnum):
    ISSUE = "issue"
    REVOKE = "revoke"
    JOB_UPDATE = "job_update"
    RECONCILE = "reconcile"  # make one Proxy person match its grants (no grant of its own)


class ActionOutcome(enum.StrEnum):
    DONE = "done"
    CANCELLED = "cancelled"
    DEAD = "dead"  # given up: shown on the status page, retryable from the CLI


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


class Install(BaseModel):
    """One Envoy install of the plugin: its latest config and its Proxy secret (encrypted)."""

    install_id = CharField(primary_key=True)
    plugin_id = CharField(null=True)
    company_id = CharField(null=True)
    company_name = CharField(null=True)
    location_id = CharField(null=True)
    location_name = CharField(null=True)
    timezone = CharField(null=True)
    config = JSONField(default=dict)
    proxy_secret = TextField(null=True)
    created_at = IntegerField(default=now_epoch)
    updated_at = IntegerField(default=now_epoch)
    last_event_at = IntegerField(null=True)
    last_error = TextField(null=True)
    # When Envoy accepted our `identity-verification` purpose (registered once per install).
    purpose_registered_at = IntegerField(null=True)
    # When the plugin was uninstalled: its events are refused, and its Proxy secret is erased
    # once the endings it left to do are done.
    uninstalled_at = IntegerField(null=True)


class Event(BaseModel):
    """The inbox: every accepted Envoy delivery, unique on its job id, with our answer.

    A delivery is planned in the transaction that stores it. One whose planning failed for a
    reason of its own is quarantined: stored with its raw `body`, its `last_error` and when
    to try again (`next_attempt_at`), answered 202, and retried with backoff apart from the
    rest. `body` is NULL once the delivery is planned.
    """

    job_id = CharField(unique=True)
    event = CharField()
    install_id = CharField(index=True)
    entity = CharField(null=True)
    received_at = IntegerField(default=now_epoch, index=True)
    status = IntegerField()
    answer = JSONField(default=dict)
    body = TextField(null=True)
    attempts = IntegerField(default=0)
    next_attempt_at = IntegerField(null=True)
    last_error = TextField(null=True)
    # The grant whose due work this job, answered 202, waits for: told its outcome once that
    # work is done (`jobs.settle`), then NULL.
    waits_on = IntegerField(null=True, index=True)


class Grant(BaseModel):
    """One person's access window for one Envoy entity (an invite, an entry or a Protect day).

    States: `pending` (not yet issued), `active` (issued in Proxy), `ended` (taken away) and
    `cancelled` (ended before it was ever issued). `version` guards transitions.
    """

    install_id = CharField()
    # The Proxy org of the grant's person: persons belong to the org, which several installs
    # (locations) may share, so a person's grants are looked at together across installs.
    proxy_org_id = CharField(null=True)
    kind = CharField()  # visitor | employee
    subject = CharField()  # e.g. "invites:7", "entries:42"
    entry_id = CharField(null=True)
    invite_id = CharField(null=True)
    email = CharField(null=True, index=True)
    full_name = CharField(null=True)
    phone = CharField(null=True)
    photo_url = TextField(null=True)
    group_ids = JSONField(default=list)
    proxy_person_id = CharField(null=True, index=True)
    # Whether we created that person (a visitor we imported): only then does a visit set its
    # status. None: not known yet (not issued, or issued by a version before schema 6).
    person_ours = FlagField(null=True)
    # An import of ours whose fate was unknown (Proxy may carry it out after we gave up): at
    # the end, every person with this email that carries our marker is ended, twins included.
    twins_possible = FlagField(default=False)
    # Groups whose tags the person lacked when we issued: the ones we take away at the end.
    added_group_ids = JSONField(default=list)
    # A `suspended` we scheduled in Proxy at the end, as a net if the daemon is down then.
    safety_net_at = IntegerField(null=True)
    # When the reconciler last compared this grant's person with Proxy (the repair pass
    # visits the persons compared longest ago first).
    reconciled_at = IntegerField(null=True)
    starts_at = IntegerField()
    ends_at = IntegerField(null=True)
    state = CharField(default="pending", index=True)
    version = IntegerField(default=0)
    job_id = CharField(null=True)  # the Envoy job to update when the outcome is known
    # Closed while its entry awaits approval in Envoy: only an event showing it approved
    # opens the subject again (daemon/rules/policy.py, `Close.hold`).
    on_hold = FlagField(default=False)
    last_error = TextField(null=True)
    created_at = IntegerField(default=now_epoch)
    updated_at = IntegerField(default=now_epoch)

    class Meta:
        indexes = ((("install_id", "subject"), True),)


class PlacedStatus(BaseModel):
    """A status we scheduled in Proxy for a person, kept while it is ahead. Proxy cannot delete
    one: a net placed for a shorter stay still fires, and a longer stay of the same person
    must be re-activated just after it, whichever grant placed it."""

    lock_key = CharField()  # the person: its org (or install) and email, as the outbox keys it
    person_id = CharField()
    status = CharField()
    at = IntegerField()  # our clock

    class Meta:
        indexes = ((("lock_key", "at"), False),)


class Action(BaseModel):
    """The outbox: one side effect to carry out at `due_at`, retried until done.

    `next_attempt_at` is when it runs next (the due time, pushed back after a failure);
    `claimed_until` is a lease so that a crashed runner's claim expires by itself.
    """

    grant = ForeignKeyField(Grant, null=True, backref="actions", on_delete="CASCADE")
    install_id = CharField()
    kind = CharField()
    # Actions with the same key (one Proxy person) never run at the same time: two grants
    # for one email must not both import the person.
    lock_key = CharField(null=True)
    payload = JSONField(default=dict)
    due_at = IntegerField()
    next_attempt_at = IntegerField()
    claimed_until = IntegerField(null=True, index=True)
    claimed_by = CharField(null=True)  # the instance holding the claim (`Instance.id`)
    attempts = IntegerField(default=0)
    last_error = TextField(null=True)
    done = FlagField(default=False)
    outcome = CharField(null=True)  # done | cancelled | dead
    done_at = IntegerField(null=True)
    created_at = IntegerField(default=now_epoch)


class ProxyAccount(BaseModel):
    """Proxy credentials an install used for an org it has since left (step 1 changed).

    Grants remember their org (`Grant.proxy_org_id`); one of a left org is issued and ended
    with these, in the org that gave the access, and the row goes once no live grant of that
    org remains. The install's current credentials stay in its config and `proxy_secret`.
    """

    install_id = CharField()
    org_id = CharField()
    app_key = CharField()
    secret = TextField()  # encrypted, like `Install.proxy_secret`
    site_id = CharField(null=True)
    retired_at = IntegerField(default=now_epoch)

    class Meta:
        indexes = ((("install_id", "org_id"), True),)


class WatchlistEntry(BaseModel):
    """A person the identity-verification hook sends to manual review, and why."""

    email = CharField(null=True, index=True)  # lower-cased
    name_key = CharField(null=True, index=True)  # full name, lower-cased, single-spaced
    display_name = CharField(null=True)
    reason = TextField()
    created_at = IntegerField(default=now_epoch)


class Verification(BaseModel):
    """One identity-verification decision: who (ids only), what, why and how long it took."""

    install_id = CharField(index=True)
    entry_id = CharField(null=True)
    decision = CharField()  # approved | review
    reason = TextField(null=True)
    watchlist_entry = ForeignKeyField(WatchlistEntry, null=True, on_delete="SET NULL")
    deadline_hit = FlagField(default=False)
    duration_ms = IntegerField()
    decided_at = IntegerField(default=now_epoch, index=True)


class AuditEntry(BaseModel):
    """One access change or decision, as it was when it happened: append-only.

    Who and what are copied (not linked) so that the trail outlives the grant's later changes;
    `details` never holds a secret value.
    """

    at = IntegerField(index=True)
    install_id = CharField(null=True, index=True)
    grant_id = IntegerField(null=True, index=True)
    subject = CharField(null=True)
    email = CharField(null=True, index=True)
    full_name = CharField(null=True)
    kind = CharField()
    reason = TextField(null=True)
    actor = CharField()
    details = JSONField(null=True)


class Instance(BaseModel):
    """One running daemon sharing the database, as its last heartbeat left it.

    `claims` counts the actions it held then; `runs_passes` says it holds the periodic passes'
    lock (the repair pass, retention, quarantine retries).
    """

    id = CharField(primary_key=True)
    host = CharField()
    pid = IntegerField()
    started_at = IntegerField()
    last_seen_at = IntegerField()
    claims = IntegerField(default=0)
    runs_passes = FlagField(default=False)
