"""Who runs the periodic passes: one instance at a time, taken over when it dies.

PostgreSQL: a session advisory lock (`pg_try_advisory_lock`) on a connection of its own,
outside the pool. The server frees it when that session ends: at once when the process dies
(its socket closes), and within `IDLE_SESSION_SECONDS` when the instance hangs or loses the
network (the server ends a session left idle that long, and the holder asks every heartbeat).
SQLite: the daemon's instance lock (daemon.startup) already makes it the only one, so it
always holds this one.
"""

import contextlib
import logging

from db.connection import database, is_postgres

log = logging.getLogger("envoy_proxy.db")

_PASSES_LOCK = 0x656E766F79 + 2  # beside db.engines' migration and claim locks
IDLE_SESSION_SECONDS = 15


class PassesLock:
    """`hold()` at every heartbeat: whether this instance (still) runs the periodic passes."""

    def __init__(self) -> None:
        self._connection = None
        self._held = False

    def hold(self) -> bool:
        if not is_postgres():
            return True
        try:
            self._held = self._hold_on_postgres()
        except Exception as error:  # the session is gone, and the lock with it
            if self._held:
                log.warning("the periodic passes' lock is lost: %s", str(error).strip())
            self.release()
        return self._held

    def _hold_on_postgres(self) -> bool:
        import psycopg  # present whenever the database is PostgreSQL

        if self._connection is None:
            self._connection = psycopg.connect(database.obj.database, autocommit=True)
            self._connection.execute(f"SET idle_session_timeout = {IDLE_SESSION_SECONDS * 1000:d}")
        if self._held:  # a question proves the session, and so the lock, still alive
            self._connection.execute("SELECT 1")
            return True
        (held,) = self._connection.execute(
            "SELECT pg_try_advisory_lock(%s)", (_PASSES_LOCK,)
        ).fetchone()
        return bool(held)

    def release(self) -> None:
        """Give the lock up (closing the session frees it)."""
        connection, self._connection, self._held = self._connection, None, False
        if connection is not None:
            with contextlib.suppress(Exception):  # closing a broken session: it is gone anyway
                connection.close()
