"""PostgreSQL, for several daemons on one database (README, "Database").

The same models and migrations as on SQLite. Transactions run at PostgreSQL's default
isolation (READ COMMITTED): the lock types the daemon passes for SQLite (`IMMEDIATE`,
`DEFERRED`) name when SQLite takes its one write lock, which PostgreSQL does not have; it
locks rows as they are written, and a conditional UPDATE re-checks its condition on the row it
waited for. Connections come from a pool, like SQLite's.

PostgreSQL's text cannot hold the NUL character, which SQLite stores and JSON can carry
(`"\\u0000"` in a visitor's name, in a Proxy error): each becomes U+FFFD on its way in, so
that such an event is planned (its ending kept) rather than failing on every retry.

psycopg is the optional dependency `envoy-proxy[postgres]`: imported only for PostgreSQL.
"""

import functools
import time
import weakref

from peewee import ImproperlyConfigured
from playhouse.pool import PooledPostgresqlDatabase

URL_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(location: str) -> bool:
    return location.startswith(URL_SCHEMES)


NUL, REPLACEMENT = "\x00", "\ufffd"


class _WithoutNul:
    def dump(self, obj: str):
        return super().dump(obj.replace(NUL, REPLACEMENT) if NUL in obj else obj)


@functools.cache
def _storable_text_dumpers() -> tuple[type, ...]:
    """psycopg's dumpers of `str` (binary, then text: the last registered is the default),
    each storing NUL as U+FFFD."""
    from psycopg.types.string import StrBinaryDumper, StrDumperUnknown

    return tuple(
        type(f"Storable{base.__name__}", (_WithoutNul, base), {})
        for base in (StrBinaryDumper, StrDumperUnknown)
    )


# A pooled connection that came back from use this recently is handed out as it is; one idle
# for longer is asked `SELECT 1` first, since the server (or a firewall) may have closed it.
PING_AFTER_IDLE_SECONDS = 5.0


class PostgresDatabase(PooledPostgresqlDatabase):
    """A pooled psycopg 3 connection to the database a `postgresql://` URL names.

    peewee's pool asks the server whether a pooled connection is alive (`SELECT 1`) at every
    checkout, holding the pool's one lock: every thread's checkout and check-in waited for one
    server round trip at a time (accept p50 85 ms at 50 sign-ins/s, BENCHMARKS.md, issue 18).
    Here the pool looks at the connection's own state only, and only a connection idle longer
    than PING_AFTER_IDLE_SECONDS is asked, once the pool has handed it out. A connection the server
    dropped within those seconds fails its first statement once (the work is retried: a
    webhook by Envoy, due work by the runner) and is then discarded.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._returned_at: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _connect(self):
        while True:
            connection = super()._connect()  # the pool's checkout, under its lock
            returned_at = self._returned_at.pop(connection, None)
            if returned_at is None:  # a new connection
                for dumper in _storable_text_dumpers():
                    connection.adapters.register_dumper(str, dumper)
                return connection
            idle = time.monotonic() - returned_at
            if idle < PING_AFTER_IDLE_SECONDS or not self._adapter.is_connection_closed(connection):
                return connection
            self._close(connection, close_conn=True)

    def _is_closed(self, connection) -> bool:
        return connection.closed or connection.broken

    def _close(self, connection, close_conn=False):
        if not close_conn:
            self._returned_at[connection] = time.monotonic()
        super()._close(connection, close_conn)

    def begin(self, lock_type=None):
        """Begin at the default isolation, whatever SQLite lock type the caller names."""
        super().begin()


def postgres_database(url: str, max_connections: int) -> PostgresDatabase:
    """The database at `url`, not yet connected; connections are opened as threads need them
    (the server's `max_connections` must leave room for every instance's busiest moment)."""
    try:
        import psycopg  # noqa: F401 (only whether it is there)
    except ImportError:
        raise ImproperlyConfigured(
            "a postgresql:// database needs psycopg: install envoy-proxy[postgres]"
        ) from None
    return PostgresDatabase(
        url.replace("postgres://", "postgresql://", 1),
        prefer_psycopg3=True,
        max_connections=max_connections,
        timeout=30,
    )
