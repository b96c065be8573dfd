"""What SQLite and PostgreSQL each do their own way: where the schema version lives, planner
statistics, migrations that take turns, and the health check's test write. One function per
job with one form per engine; the rest of the daemon calls these and never asks which engine.
"""

import contextlib
import math
import os
import sqlite3
import urllib.parse

from db.connection import database, is_postgres
from db.postgres import is_postgres_url

# The advisory lock that makes two instances starting together migrate one after the other.
_MIGRATION_LOCK = 0x656E766F79  # "envoy"
# The advisory lock under which instances claim due work, one claim at a time.
_CLAIM_LOCK = _MIGRATION_LOCK + 1


def writes_one_at_a_time() -> bool:
    """Whether one transaction at a time may write (SQLite's one write lock): concurrent
    events then share a transaction (daemon.access.group_commit). PostgreSQL locks the rows
    written: each event commits in its own transaction, alongside the others."""
    return not is_postgres()


def shared_by_instances() -> bool:
    """Whether several daemons may be using the open database at once (PostgreSQL). On
    SQLite the instance lock (daemon.startup) lets one daemon serve a file."""
    return is_postgres()


def schema_version() -> int:
    """The version of the last migration step applied; 0 for an empty database."""
    if not is_postgres():
        return database.execute_sql("PRAGMA user_version").fetchone()[0]
    (table,) = database.execute_sql("SELECT to_regclass('schema_version')").fetchone()
    if table is None:
        return 0
    row = database.execute_sql("SELECT version FROM schema_version").fetchone()
    return row[0] if row else 0


def record_schema_version(version: int) -> None:
    """Write `version` as the schema's, inside the step's transaction."""
    if not is_postgres():
        database.execute_sql(f"PRAGMA user_version = {version:d}")
        return
    database.execute_sql("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
    database.execute_sql("DELETE FROM schema_version")
    database.execute_sql("INSERT INTO schema_version (version) VALUES (%s)", (version,))


@contextlib.contextmanager
def serialized_migrations():
    """On PostgreSQL, hold a session advisory lock while migrating, so that a second instance
    starting at the same moment waits and then finds the schema done. SQLite: the single-
    instance lock (daemon.startup) and its write lock already serialize."""
    if not is_postgres():
        yield
        return
    with database.connection_context():
        database.execute_sql("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            yield
        finally:
            database.execute_sql("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))


def lock_within_transaction(key: str) -> None:
    """Make the open transaction and any other about the same `key` take turns until commit.

    For a read-then-write that must be atomic (planning an event reads its grant, then writes
    it). SQLite: nothing to do, a write transaction (IMMEDIATE) already holds the database's
    one write lock. PostgreSQL at READ COMMITTED would let two transactions read the same old
    state: a transaction-level advisory lock on the key's hash serializes them, and only them.
    """
    if is_postgres():
        database.execute_sql("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))


def take_turns_claiming() -> None:
    """Make the open transaction's claim of due work wait for any other instance's to commit.

    A claim reads what is due and not held (also: no action of the same person held), then
    marks it held. SQLite's write transaction already holds the one write lock. PostgreSQL at
    READ COMMITTED would let two instances read the same rows as free, or two actions of one
    person as each the only one: a transaction-level advisory lock makes claims take turns
    (each is one short statement pair), and each statement after it sees the claims before.
    """
    if is_postgres():
        database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_CLAIM_LOCK,))


def restart_ids(table: str) -> None:
    """After rows were copied in with their ids, make new rows' ids follow the largest.
    SQLite's rowid does so by itself; a PostgreSQL identity column counts on its own."""
    if not is_postgres():
        return
    row = database.execute_sql(
        "SELECT pg_get_serial_sequence(%s, 'id') FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s AND column_name = 'id'",
        (f'"{table}"', table),
    ).fetchone()
    sequence = row[0] if row else None
    if sequence is not None:
        database.execute_sql(
            f'SELECT setval(%s, max(id)) FROM "{table}" HAVING max(id) IS NOT NULL',  # noqa: S608 (a table of ours)
            (sequence,),
        )


def like_pattern(pattern: str) -> str:
    """`pattern` for LIKE with its backslashes matching themselves on either engine:
    PostgreSQL's LIKE takes `\\` as its escape character, SQLite's has none."""
    return pattern.replace("\\", "\\\\") if is_postgres() else pattern


def refresh_statistics() -> None:
    """Give the planner statistics.

    Without them SQLite may pick `grant (install_id)` for "the grants of this person" and walk
    every grant of the install: 0.3 s per issue or revoke at a million grants, against ~1 ms
    with the email and person-id indexes. SQLite's ANALYZE is sampled (milliseconds even at
    1M rows); PostgreSQL's samples by itself (and autovacuum repeats it).
    """
    if not is_postgres():
        database.execute_sql("PRAGMA analysis_limit = 1000")
    database.execute_sql("ANALYZE")


def stored_bytes(location: str) -> int | None:
    """The space the database takes: its SQLite file (None if unreadable), or PostgreSQL's
    whole database (asked on the open connection)."""
    if is_postgres():
        return database.execute_sql("SELECT pg_database_size(current_database())").fetchone()[0]
    try:
        return os.path.getsize(location)
    except OSError:
        return None


def write_probe(location: str | None, timeout: float = 1.0) -> str | None:
    """None when a tiny durable write to the database at `location` commits, else the
    engine's reason.

    A real write (the schema version written back unchanged): a rolled-back one writes
    nothing, so it passes where the daemon's own writes fail (a file made immutable, a file
    system remounted read-only, a standby promoted away from us). Its own connection, outside
    the pool and the process's queue of writers, waiting at most about `timeout` seconds.
    """
    if not location or location == ":memory:":
        return None
    if is_postgres_url(location):
        return _postgres_write_probe(location, timeout)
    return _sqlite_write_probe(location, timeout)


def _sqlite_write_probe(path: str, timeout: float) -> str | None:
    # `mode=rw` never creates the file: a database deleted under the daemon is reported.
    uri = f"file:{urllib.parse.quote(path)}?mode=rw"
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            (version,) = connection.execute("PRAGMA user_version").fetchone()
            connection.execute(f"PRAGMA user_version = {int(version)}")
            connection.execute("COMMIT")
        finally:
            connection.close()  # rolls back whatever did not commit
    except sqlite3.Error as error:
        return str(error)
    return None


def _postgres_write_probe(url: str, timeout: float) -> str | None:
    import psycopg  # the optional dependency, present whenever a PostgreSQL URL is in use

    milliseconds = max(1, int(timeout * 1000))
    try:
        with psycopg.connect(url, connect_timeout=max(1, math.ceil(timeout))) as connection:
            connection.execute(f"SET lock_timeout = {milliseconds:d}")
            connection.execute(f"SET statement_timeout = {milliseconds:d}")
            connection.execute("UPDATE schema_version SET version = version")
    except psycopg.Error as error:  # the block commits on success, rolls back on error
        return str(error).strip()
    return None
