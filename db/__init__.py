"""Storage: the peewee models, their migrations and the few queries the daemon needs.

This package imports nothing else of ours. The database is deferred (`open_database()` at
start) so that tests, the CLI and the daemon open whichever SQLite file or PostgreSQL URL they
are given.
"""

from db.connection import (
    close_database,
    database,
    describe_location,
    is_postgres,
    open_database,
    truncate_wal,
)
from db.engines import (
    like_pattern,
    lock_within_transaction,
    refresh_statistics,
    schema_version,
    shared_by_instances,
    stored_bytes,
    take_turns_claiming,
    write_probe,
    writes_one_at_a_time,
)
from db.lookups import grant_by_id, install_by_id, install_or_none
from db.migrations import SCHEMA_VERSION, migrate
from db.models import (
    LIVE_STATES,
    Action,
    ActionKind,
    ActionOutcome,
    AuditEntry,
    Event,
    Grant,
    GrantState,
    Install,
    Instance,
    PlacedStatus,
    ProxyAccount,
    Verification,
    WatchlistEntry,
    now_epoch,
)
from db.passes_lock import PassesLock
from db.postgres import is_postgres_url
from db.statements import first, insert, insert_rows

__all__ = [
    "LIVE_STATES",
    "SCHEMA_VERSION",
    "Action",
    "ActionKind",
    "ActionOutcome",
    "AuditEntry",
    "Event",
    "Grant",
    "GrantState",
    "Install",
    "Instance",
    "PassesLock",
    "PlacedStatus",
    "ProxyAccount",
    "Verification",
    "WatchlistEntry",
    "close_database",
    "database",
    "describe_location",
    "first",
    "grant_by_id",
    "insert",
    "insert_rows",
    "install_by_id",
    "install_or_none",
    "is_postgres",
    "is_postgres_url",
    "like_pattern",
    "lock_within_transaction",
    "migrate",
    "now_epoch",
    "open_database",
    "refresh_statistics",
    "schema_version",
    "shared_by_instances",
    "stored_bytes",
    "take_turns_claiming",
    "truncate_wal",
    "write_probe",
    "writes_one_at_a_time",
]
