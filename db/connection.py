"""Opening the SQLite file the way a revocation store must be opened.

WAL for concurrent readers, `synchronous=FULL` so that a committed revocation survives a power
cut, foreign keys on, a busy timeout, and every write transaction begun IMMEDIATE: a deferred
read-then-write transaction fails at once with "database is locked" under WAL, whatever the
busy timeout says.
"""

import os

from peewee import SqliteDatabase

PRAGMAS = (
    ("journal_mode", "wal"),
    ("synchronous", "full"),
    ("foreign_keys", 1),
    ("busy_timeout", 10_000),
)

database = SqliteDatabase(None, pragmas=PRAGMAS, lock_type="IMMEDIATE", check_same_thread=False)


def _create_private_file(path: str) -> None:
    """Create the database file readable by its owner only, before SQLite creates it 0644."""
    if path == ":memory:" or os.path.exists(path):
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def open_database(path: str) -> SqliteDatabase:
    """Point the shared database at `path`, creating the file 0600 if needed."""
    _create_private_file(path)
    if not database.is_closed():
        database.close()
    database.init(path)
    return database


def close_database() -> None:
    if not database.is_closed():
        database.close()
