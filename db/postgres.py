"""PostgreSQL, for several daemons on one database (README, "Database").

The same models and migrations as on SQLite. Transactions run at PostgreSQL's default
isolation (READ COMMITTED): the lock types the daemon passes for SQLite (`IMMEDIATE`,
`DEFERRED`) name when SQLite takes its one write lock, which PostgreSQL does not have; it
locks rows as they are written, and a conditional UPDATE re-checks its condition on the row it
waited for. Connections come from a pool, like SQLite's.
"""

from playhouse.pool import PooledPostgresqlDatabase

URL_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(location: str) -> bool:
    return location.startswith(URL_SCHEMES)


class PostgresDatabase(PooledPostgresqlDatabase):
    """A pooled psycopg 3 connection to the database a `postgresql://` URL names."""

    def begin(self, lock_type=None):
        """Begin at the default isolation, whatever SQLite lock type the caller names."""
        super().begin()


def postgres_database(url: str, max_connections: int) -> PostgresDatabase:
    """The database at `url`, not yet connected; connections are opened as threads need them
    (the server's `max_connections` must leave room for every instance's busiest moment)."""
    return PostgresDatabase(
        url.replace("postgres://", "postgresql://", 1),
        prefer_psycopg3=True,
        max_connections=max_connections,
        timeout=30,
    )
