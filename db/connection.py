"""Opening the database: a SQLite file the way a revocation store must be opened, or
PostgreSQL when `ENVOY_PROXY_DB` is a `postgresql://` URL (`db.postgres`).

`database` is a proxy the models are bound to; `open_database` points it at either engine.

WAL for concurrent readers, `synchronous=FULL` so that a committed revocation survives a power
cut, foreign keys on, a busy timeout, and every write transaction begun IMMEDIATE: a deferred
read-then-write transaction fails at once with "database is locked" under WAL, whatever the
busy timeout says.

Two measured choices (BENCHMARKS.md):
- Connections come from a pool (peewee's `PooledSqliteDatabase`): "a connection per request"
  keeps its meaning, but closing returns it to the pool. Really closing the last connection
  makes SQLite checkpoint and delete the WAL, stalling every writer, and each new connection
  re-runs the PRAGMAs.
- Write transactions of this process queue on a lock before `BEGIN IMMEDIATE`. Otherwise
  waiting writers sit in SQLite's busy handler, which sleeps 1, 2, 5 … 100 ms between tries
  whether or not the lock was freed: writers sleep while the database is idle. The busy
  timeout still arbitrates between processes (the daemon and an admin command).
"""

import os
import threading
import urllib.parse

from peewee import DatabaseProxy
from playhouse.pool import PooledSqliteDatabase

from db.postgres import PostgresDatabase, is_postgres_url, postgres_database

PRAGMAS = (
    ("journal_mode", "wal"),
    ("synchronous", "full"),
    ("foreign_keys", 1),
    ("busy_timeout", 10_000),
    # Deleted and overwritten text is zeroed, not left in free space: erased personal data
    # must not be readable in the file (README, "Privacy and retention").
    ("secure_delete", 1),
)
_WRITE_LOCKS = ("IMMEDIATE", "EXCLUSIVE")
# Waitress' threads, the runner's (each holds one across its Proxy calls), the scheduler's,
# the hook's: about 100 at the busiest.
MAX_CONNECTIONS = 160


class QueuedWriterDatabase(PooledSqliteDatabase):
    """A pooled SQLite database whose write transactions take turns within the process."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._writer = threading.Lock()
        self._holds_writer = threading.local()

    def begin(self, lock_type=None):
        if (lock_type or self._lock_type) not in _WRITE_LOCKS:
            return super().begin(lock_type)
        self._writer.acquire()
        self._holds_writer.value = True
        try:
            super().begin(lock_type)
        except BaseException:
            self._release_writer()
            raise

    def commit(self):
        try:
            return super().commit()
        finally:
            self._release_writer()

    def rollback(self):
        try:
            return super().rollback()
        finally:
            self._release_writer()

    def _release_writer(self):
        if getattr(self._holds_writer, "value", False):
            self._holds_writer.value = False
            self._writer.release()


_sqlite = QueuedWriterDatabase(
    None,
    pragmas=PRAGMAS,
    lock_type="IMMEDIATE",
    check_same_thread=False,
    max_connections=MAX_CONNECTIONS,
    timeout=30,  # wait this long for a free connection rather than fail at once
)
database = DatabaseProxy()


def _create_private_file(path: str) -> None:
    """Create the database file readable by its owner only, before SQLite creates it 0644."""
    if path == ":memory:" or os.path.exists(path):
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def open_database(location: str, *, create: bool = True):
    """Point the shared database at `location`: a `postgresql://` URL, or a SQLite file,
    created 0600 if needed and allowed.

    With `create=False` a missing file raises FileNotFoundError: the daemon and the admin
    commands must not replace a database that went missing with an empty one. (A PostgreSQL
    database is created by its admin, never by us.)
    """
    close_database()
    if is_postgres_url(location):
        database.initialize(postgres_database(location, MAX_CONNECTIONS))
        return database
    if not create and location != ":memory:" and not os.path.exists(location):
        raise FileNotFoundError(f"no database at {location}")
    _create_private_file(location)
    _sqlite.init(location)
    database.initialize(_sqlite)
    return database


def is_postgres() -> bool:
    """Whether the open database is PostgreSQL (else SQLite)."""
    return isinstance(database.obj, PostgresDatabase)


def describe_location(location: str | None) -> str | None:
    """`location` as people may see it: a file's absolute path, a URL without its password."""
    if not location or location == ":memory:":
        return location
    if not is_postgres_url(location):
        return os.path.abspath(location)
    url = urllib.parse.urlsplit(location)
    if url.password is None:
        return location
    host = url.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(url._replace(netloc=f"{url.username or ''}:***@{host}"))


def truncate_wal() -> bool:
    """Copy the WAL into the database and empty it, so that text erased since the last
    checkpoint lingers nowhere; False when a reader kept it from finishing (try again).

    PostgreSQL has no file of ours to empty (its own WAL is the server's): True at once.
    """
    if is_postgres():
        return True
    busy, _, _ = database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return not busy


def close_database() -> None:
    """Close every pooled connection (the process is stopping or switching databases)."""
    if database.obj is not None and database.obj.database is not None:
        database.obj.close_all()
