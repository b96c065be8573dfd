"""The instances sharing the database: each one's heartbeat, and the registry it keeps.

Every `HEARTBEAT_SECONDS` an instance renews the leases of the work it claimed (so that only a
dead instance's claims run out, daemon.access.outbox), takes or keeps the periodic passes'
lock (db.PassesLock: one instance runs the quarantine retries, the repair pass and retention)
and writes its row: id, host, pid, started, last seen, claims held, whether it runs the
passes. `/status`, `/metrics` and `envoy-proxy status` read those rows. A row not refreshed
for a day is forgotten; a clean stop removes its own.

It is also how an instance learns of work another instance committed (an ending due sooner
than its alarm is set for): each beat re-arms the alarm for the earliest due instant, so such
work waits at most a heartbeat past its due time (a short poll of one indexed read, chosen
over LISTEN/NOTIFY: BENCHMARKS.md, issue 18).
"""

import logging
import os
import socket
import threading

from daemon.access import outbox
from daemon.access.runner import next_due
from db import Instance, PassesLock, database, now_epoch

log = logging.getLogger("envoy_proxy.instances")

HEARTBEAT_SECONDS = outbox.HEARTBEAT_SECONDS
FORGET_AFTER_SECONDS = 86_400


class Heartbeat:
    """One instance's heartbeat thread; `runs_passes()` answers from its last beat."""

    def __init__(self, claimer: str, started_at: int | None = None, rearm=lambda at: None):
        self.claimer = claimer
        self._rearm = rearm
        self.started_at = now_epoch() if started_at is None else started_at
        self._lock = PassesLock()
        self._runs_passes = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def runs_passes(self) -> bool:
        return self._runs_passes

    def beat(self, now: int | None = None) -> None:
        """Renew this instance's claims, take or keep the passes' lock, write its row, and
        arm the alarm for the earliest due work, whoever committed it."""
        now = now_epoch() if now is None else now
        held = self._lock.hold()
        if held != self._runs_passes:
            log.info("this instance %s the periodic passes", "runs" if held else "no longer runs")
        self._runs_passes = held
        with database.connection_context():
            claims = outbox.renew(self.claimer, now)
            with database.atomic():
                row = {
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "started_at": self.started_at,
                    "last_seen_at": now,
                    "claims": claims,
                    "runs_passes": held,
                }
                if not Instance.update(**row).where(Instance.id == self.claimer).execute():
                    Instance.insert(id=self.claimer, **row).execute()
                Instance.delete().where(
                    Instance.last_seen_at < now - FORGET_AFTER_SECONDS
                ).execute()
            due = next_due(now, held)
        self._rearm(due)

    def start(self) -> None:
        """Beat once now (the first start takes the passes if nobody holds them), then every
        HEARTBEAT_SECONDS on a thread of its own until `stop()`."""
        self._safe_beat()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self._safe_beat()

    def _safe_beat(self) -> None:
        try:
            self.beat()
        except Exception:  # the database is away: leases run out, the health check says why
            log.exception("the heartbeat failed; it beats again in %d s", HEARTBEAT_SECONDS)

    def stop(self) -> None:
        """Stop beating, give the passes back and leave the registry (a clean stop)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(HEARTBEAT_SECONDS + 5)
        self._lock.release()
        self._runs_passes = False
        try:
            with database.connection_context():
                Instance.delete().where(Instance.id == self.claimer).execute()
        except Exception:
            log.warning("this instance's row stays in the registry until it ages out")


def registry(now: int) -> list[dict]:
    """Each known instance: the one running the periodic passes first, then by last seen.

    An instance not seen for a lease is shown as not alive and not running the passes, even
    if its last heartbeat said it did: its claims and its lock are being taken over.
    """
    shown = []
    for row in Instance.select().order_by(Instance.last_seen_at.desc(), Instance.id):
        alive = now - row.last_seen_at <= outbox.SHARED_LEASE_SECONDS
        shown.append(
            {
                "id": row.id,
                "host": row.host,
                "pid": row.pid,
                "started_at": row.started_at,
                "last_seen_at": row.last_seen_at,
                "seen_seconds_ago": max(0, now - row.last_seen_at),
                "alive": alive,
                "claims": row.claims if alive else 0,
                "runs_passes": bool(row.runs_passes and alive),
            }
        )
    return sorted(shown, key=lambda instance: not instance["runs_passes"])
