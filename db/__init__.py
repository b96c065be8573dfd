"""Storage: the peewee models, their migrations and the few queries the daemon needs.

This package imports nothing else of ours. The database is deferred (`database.init()` at
start) so that tests, the CLI and the daemon open whichever file they are given.
"""

from db.connection import close_database, database, open_database
from db.lookups import grant_by_id, install_by_id, install_or_none
from db.migrations import SCHEMA_VERSION, migrate, refresh_statistics, schema_version
from db.models import (
    LIVE_STATES,
    Action,
    ActionKind,
    ActionOutcome,
    Event,
    Grant,
    GrantState,
    Install,
    JobWait,
    PlacedStatus,
    Verification,
    WatchlistEntry,
    now_epoch,
)

__all__ = [
    "LIVE_STATES",
    "SCHEMA_VERSION",
    "Action",
    "ActionKind",
    "ActionOutcome",
    "Event",
    "Grant",
    "GrantState",
    "Install",
    "JobWait",
    "PlacedStatus",
    "Verification",
    "WatchlistEntry",
    "close_database",
    "database",
    "grant_by_id",
    "install_by_id",
    "install_or_none",
    "migrate",
    "now_epoch",
    "open_database",
    "refresh_statistics",
    "schema_version",
]
