"""Versioned schema steps, each in its own transaction, for SQLite and PostgreSQL alike.

Each step is plain SQL frozen at the time it was written, so that upgrading an old file gives
exactly the schema a new file gets. Add a step; never edit one that has shipped. The SQL is
written once, in SQLite's words; PostgreSQL runs it with SQLite's 64-bit INTEGER spelled
BIGINT (`postgres_form`). Data steps use peewee queries, which each engine words its own way.
The version is kept in `PRAGMA user_version` on SQLite and in the one-row table
`schema_version` on PostgreSQL (`db.engines`).
"""

import json
import logging
import re

from peewee import Table

from db.connection import database, is_postgres
from db.engines import record_schema_version, schema_version, serialized_migrations
from db.models import now_epoch

log = logging.getLogger("envoy_proxy.db")

STEPS: list[tuple[int, str, list]] = [
    (
        1,
        "installs, inbox, grants, outbox",
        [
            """CREATE TABLE install (
                install_id VARCHAR(255) NOT NULL PRIMARY KEY,
                plugin_id VARCHAR(255), company_id VARCHAR(255), company_name VARCHAR(255),
                location_id VARCHAR(255), location_name VARCHAR(255), timezone VARCHAR(255),
                config TEXT NOT NULL, proxy_secret TEXT,
                created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
                last_event_at INTEGER, last_error TEXT)""",
            """CREATE TABLE event (
                id INTEGER NOT NULL PRIMARY KEY,
                job_id VARCHAR(255) NOT NULL, event VARCHAR(255) NOT NULL,
                install_id VARCHAR(255) NOT NULL, entity VARCHAR(255),
                received_at INTEGER NOT NULL, status INTEGER NOT NULL, answer TEXT NOT NULL)""",
            "CREATE UNIQUE INDEX event_job_id ON event (job_id)",
            "CREATE INDEX event_install_id ON event (install_id)",
            "CREATE INDEX event_received_at ON event (received_at)",
            """CREATE TABLE "grant" (
                id INTEGER NOT NULL PRIMARY KEY,
                install_id VARCHAR(255) NOT NULL, kind VARCHAR(255) NOT NULL,
                subject VARCHAR(255) NOT NULL, entry_id VARCHAR(255), invite_id VARCHAR(255),
                email VARCHAR(255), full_name VARCHAR(255), phone VARCHAR(255), photo_url TEXT,
                group_ids TEXT NOT NULL, proxy_person_id VARCHAR(255),
                added_group_ids TEXT NOT NULL, safety_net_at INTEGER,
                starts_at INTEGER NOT NULL, ends_at INTEGER,
                state VARCHAR(255) NOT NULL, version INTEGER NOT NULL, job_id VARCHAR(255),
                last_error TEXT,
                created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)""",
            'CREATE UNIQUE INDEX grant_install_id_subject ON "grant" (install_id, subject)',
            'CREATE INDEX grant_email ON "grant" (email)',
            'CREATE INDEX grant_proxy_person_id ON "grant" (proxy_person_id)',
            'CREATE INDEX grant_state ON "grant" (state)',
            'CREATE INDEX grant_entry ON "grant" (install_id, entry_id)',
            'CREATE INDEX grant_invite ON "grant" (install_id, invite_id)',
            """CREATE TABLE action (
                id INTEGER NOT NULL PRIMARY KEY,
                grant_id INTEGER REFERENCES "grant" (id) ON DELETE CASCADE,
                install_id VARCHAR(255) NOT NULL, kind VARCHAR(255) NOT NULL,
                lock_key VARCHAR(255), payload TEXT NOT NULL, due_at INTEGER NOT NULL,
                next_attempt_at INTEGER NOT NULL, claimed_until INTEGER,
                attempts INTEGER NOT NULL, last_error TEXT, done INTEGER NOT NULL,
                outcome VARCHAR(255), done_at INTEGER, created_at INTEGER NOT NULL)""",
            # The scheduler's two questions ("what is due?", "when is the next one?") are
            # answered from this index alone, whatever the number of finished actions.
            "CREATE INDEX action_pending ON action (done, next_attempt_at)",
            "CREATE INDEX action_grant_id ON action (grant_id)",
            "CREATE INDEX action_claimed_until ON action (claimed_until)",
        ],
    ),
    (
        2,
        "purpose registration, watchlist, verification decisions",
        [
            "ALTER TABLE install ADD COLUMN purpose_registered_at INTEGER",
            """CREATE TABLE watchlist_entry (
                id INTEGER NOT NULL PRIMARY KEY,
                email VARCHAR(255), name_key VARCHAR(255), display_name VARCHAR(255),
                reason TEXT NOT NULL, created_at INTEGER NOT NULL)""",
            "CREATE INDEX watchlist_entry_email ON watchlist_entry (email)",
            "CREATE INDEX watchlist_entry_name_key ON watchlist_entry (name_key)",
            """CREATE TABLE verification (
                id INTEGER NOT NULL PRIMARY KEY,
                install_id VARCHAR(255) NOT NULL, entry_id VARCHAR(255),
                decision VARCHAR(255) NOT NULL, reason TEXT,
                watchlist_entry_id INTEGER
                    REFERENCES watchlist_entry (id) ON DELETE SET NULL,
                deadline_hit INTEGER NOT NULL, duration_ms INTEGER NOT NULL,
                decided_at INTEGER NOT NULL)""",
            "CREATE INDEX verification_install_id ON verification (install_id)",
            "CREATE INDEX verification_decided_at ON verification (decided_at)",
        ],
    ),
    (
        3,
        "index of given-up actions",
        # The status page and every /metrics scrape count dead actions; without this they
        # read the whole outbox (0.1 s at a million rows).
        ["CREATE INDEX action_dead ON action (id) WHERE outcome = 'dead'"],
    ),
    (
        4,
        "deliveries stored before they are planned",
        [
            # The raw body of a delivery accepted but not yet planned; NULL once planned.
            "ALTER TABLE event ADD COLUMN body TEXT",
            "CREATE INDEX event_unplanned ON event (id) WHERE body IS NOT NULL",
        ],
    ),
]


def _jobs_out_of_payloads() -> None:
    """Version 5's data step: Envoy jobs kept as JSON lists in `action.payload["jobs"]`
    become `job_wait` rows (one home for which job waits on which grant)."""
    action = Table("action", ("grant_id", "install_id", "payload", "done")).bind(database)
    job_wait = Table("job_wait", ("job_id", "install_id", "grant_id", "created_at")).bind(database)
    rows = (
        action.select(action.grant_id, action.install_id, action.payload)
        .where((action.done == 0) & action.grant_id.is_null(False))
        .where(action.payload.contains('"jobs"'))
        .tuples()
    )
    for grant_id, install_id, payload in rows:
        for job_id in json.loads(payload).get("jobs") or []:
            job_wait.insert(
                job_id=job_id, install_id=install_id, grant_id=grant_id, created_at=now_epoch()
            ).on_conflict_ignore().execute()


STEPS.append(
    (
        5,
        "one transaction per event: job waits, quarantined deliveries, person indexes",
        [
            """CREATE TABLE job_wait (
                id INTEGER NOT NULL PRIMARY KEY,
                job_id VARCHAR(255) NOT NULL, install_id VARCHAR(255) NOT NULL,
                grant_id INTEGER NOT NULL REFERENCES "grant" (id) ON DELETE CASCADE,
                created_at INTEGER NOT NULL)""",
            "CREATE UNIQUE INDEX job_wait_job_id ON job_wait (job_id)",
            "CREATE INDEX job_wait_grant_id ON job_wait (grant_id)",
            _jobs_out_of_payloads,
            # A delivery whose planning failed waits here for its retry, apart from the rest.
            "ALTER TABLE event ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE event ADD COLUMN next_attempt_at INTEGER",
            "ALTER TABLE event ADD COLUMN last_error TEXT",
            # Deliveries stored unplanned by an older version are planned by the retry pass.
            "UPDATE event SET next_attempt_at = received_at WHERE body IS NOT NULL",
            "DROP INDEX event_unplanned",
            "CREATE INDEX event_quarantined ON event (next_attempt_at) WHERE body IS NOT NULL",
            # A person's grants, found by email or by Proxy person id within one install: the
            # planner takes these over the install's whole list on any engine, with or without
            # statistics.
            'CREATE INDEX grant_install_email ON "grant" (install_id, email)',
            'CREATE INDEX grant_install_person ON "grant" (install_id, proxy_person_id)',
        ],
    )
)

STEPS.append(
    (
        6,
        "whether a grant's Proxy person is ours",
        # NULL for grants issued before: they keep being treated as ours, as they were.
        ['ALTER TABLE "grant" ADD COLUMN person_ours INTEGER'],
    )
)


def _orgs_of_grants() -> None:
    """Version 7's data step: each grant's Proxy org, from its install's config."""
    install = Table("install", ("install_id", "config")).bind(database)
    grant = Table("grant", ("install_id", "proxy_org_id")).bind(database)
    for install_id, config in install.select(install.install_id, install.config).tuples():
        org = (json.loads(config or "{}") or {}).get("proxy_org_id")
        if org is not None:
            grant.update(proxy_org_id=str(org)).where(grant.install_id == install_id).execute()


STEPS.append(
    (
        7,
        "a grant's Proxy org: persons are per org, across installs",
        [
            'ALTER TABLE "grant" ADD COLUMN proxy_org_id VARCHAR(255)',
            _orgs_of_grants,
            'CREATE INDEX grant_org_email ON "grant" (proxy_org_id, email)',
            'CREATE INDEX grant_org_person ON "grant" (proxy_org_id, proxy_person_id)',
        ],
    )
)

STEPS.append(
    (
        8,
        "grants whose import may have left a twin",
        ['ALTER TABLE "grant" ADD COLUMN twins_possible INTEGER NOT NULL DEFAULT 0'],
    )
)

STEPS.append(
    (
        9,
        "indexes for the status page and /metrics at a million pending actions",
        [
            # Failing actions (attempts past the flag) are few: counted and listed from this
            # index alone instead of a walk over every pending action (1.3 s at 1M).
            "CREATE INDEX action_failing ON action (done, attempts, next_attempt_at)",
            # The upcoming activations: pending issues in due order.
            "CREATE INDEX action_kind_next ON action (done, kind, next_attempt_at)",
        ],
    )
)

STEPS.append(
    (
        10,
        "a job answered 202 waits on its grant in its own inbox row (one statement less)",
        [
            "ALTER TABLE event ADD COLUMN waits_on INTEGER",
            "CREATE INDEX event_waits_on ON event (waits_on)",
            "UPDATE event SET waits_on = (SELECT grant_id FROM job_wait"
            " WHERE job_wait.job_id = event.job_id)"
            " WHERE job_id IN (SELECT job_id FROM job_wait)",
            "DROP TABLE job_wait",
        ],
    )
)

STEPS.append(
    (
        11,
        "the Proxy accounts of orgs an install has left, kept while their grants are live",
        [
            """CREATE TABLE proxy_account (
                id INTEGER NOT NULL PRIMARY KEY,
                install_id VARCHAR(255) NOT NULL, org_id VARCHAR(255) NOT NULL,
                app_key VARCHAR(255) NOT NULL, secret TEXT NOT NULL, site_id VARCHAR(255),
                retired_at INTEGER NOT NULL)""",
            "CREATE UNIQUE INDEX proxy_account_install_id_org_id"
            " ON proxy_account (install_id, org_id)",
        ],
    )
)

STEPS.append(
    (
        12,
        "the audit trail; uninstalled installs",
        [
            """CREATE TABLE audit_entry (
                id INTEGER NOT NULL PRIMARY KEY,
                at INTEGER NOT NULL, install_id VARCHAR(255), grant_id INTEGER,
                subject VARCHAR(255), email VARCHAR(255), full_name VARCHAR(255),
                kind VARCHAR(255) NOT NULL, reason TEXT, actor VARCHAR(255) NOT NULL,
                details TEXT)""",
            "CREATE INDEX audit_entry_at ON audit_entry (at)",
            "CREATE INDEX audit_entry_install_id ON audit_entry (install_id)",
            "CREATE INDEX audit_entry_grant_id ON audit_entry (grant_id)",
            "CREATE INDEX audit_entry_email ON audit_entry (email)",
            "ALTER TABLE install ADD COLUMN uninstalled_at INTEGER",
        ],
    )
)

STEPS.append(
    (
        13,
        "grants held while their entry awaits approval",
        ['ALTER TABLE "grant" ADD COLUMN on_hold INTEGER NOT NULL DEFAULT 0'],
    )
)

STEPS.append(
    (
        14,
        "the reconciler: when each grant's person was last compared; the statuses placed",
        [
            'ALTER TABLE "grant" ADD COLUMN reconciled_at INTEGER',
            # Live and recently ended grants, found without a walk over every ended one.
            'CREATE INDEX grant_state_ends ON "grant" (state, ends_at)',
            # The statuses we placed in Proxy's schedule, whichever grant placed them.
            """CREATE TABLE placed_status (
                id INTEGER NOT NULL PRIMARY KEY, lock_key VARCHAR(255) NOT NULL,
                person_id VARCHAR(255) NOT NULL, status VARCHAR(255) NOT NULL,
                at INTEGER NOT NULL)""",
            "CREATE INDEX placed_status_lock_key_at ON placed_status (lock_key, at)",
            # "Is a reconcile of this person already waiting?", asked after every failure.
            "CREATE INDEX action_lock_key_kind ON action (lock_key, kind, done)",
        ],
    )
)

STEPS.append(
    (
        15,
        "several instances: who holds each claim, and the registry of instances",
        [
            "ALTER TABLE action ADD COLUMN claimed_by VARCHAR(255)",
            """CREATE TABLE instance (
                id VARCHAR(255) NOT NULL PRIMARY KEY, host VARCHAR(255) NOT NULL,
                pid INTEGER NOT NULL, started_at INTEGER NOT NULL,
                last_seen_at INTEGER NOT NULL, claims INTEGER NOT NULL,
                runs_passes INTEGER NOT NULL)""",
        ],
    )
)

STEPS.append(
    (
        16,
        "the repair pass finds the persons compared longest ago from an index",
        ['CREATE INDEX grant_state_reconciled ON "grant" (state, reconciled_at)'],
    )
)

SCHEMA_VERSION = STEPS[-1][0]


_SQLITE_ROWID = re.compile(r"\bINTEGER NOT NULL PRIMARY KEY\b")
_SQLITE_INTEGER = re.compile(r"\bINTEGER\b")


def postgres_form(sql: str) -> str:
    """A step's SQL as PostgreSQL runs it: SQLite's INTEGER holds 64 bits (epoch seconds past
    2038, ids), PostgreSQL's BIGINT does; a rowid key becomes an identity column."""
    sql = _SQLITE_ROWID.sub("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", sql)
    return _SQLITE_INTEGER.sub("BIGINT", sql)


def _run(statement) -> None:
    if callable(statement):
        statement()
    else:
        database.execute_sql(postgres_form(statement) if is_postgres() else statement)


def migrate(target: int = SCHEMA_VERSION) -> int:
    """Bring the open database up to `target`, one logged transaction per step."""
    with serialized_migrations():
        current = schema_version()
        if current > SCHEMA_VERSION:
            raise RuntimeError(
                f"database schema version {current} is newer than this program"
                f" ({SCHEMA_VERSION}); upgrade envoy-proxy or restore a backup"
            )
        for version, title, statements in STEPS:
            if current < version <= target:
                with database.atomic():
                    for statement in statements:
                        _run(statement)
                    record_schema_version(version)
                log.info("database migrated to version %d (%s)", version, title)
                current = version
    return current
