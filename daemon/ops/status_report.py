"""The facts behind `/status`, `/status.json` and `envoy-proxy status`, read from the database.

Reads only, in one snapshot. Every list is bounded and answered from an index (grants by
`state`, the outbox by `(done, next_attempt_at)`, verifications by `decided_at`), so the page
stays fast whatever the number of rows. Instants come as `{"epoch", "iso", "local"}`, `local`
in the zone of the install the row belongs to. Secrets are never read: the install's
encrypted Proxy secret is not selected, and known secrets are masked in error texts.
"""

import os

from peewee import JOIN, SQL, fn

import db
from daemon import __version__
from daemon.access import outbox, retention
from daemon.access.outbox import FLAG_AFTER_ATTEMPTS
from daemon.access.watchlist import count as watchlist_size
from daemon.health import Verdict
from daemon.masking import Masker
from daemon.ops import instances
from daemon.rules.settings import config_problem
from daemon.rules.times import iso_utc, local_time
from db import Action, Event, Grant, Install, Verification

LIST_LIMIT = 100
UPCOMING_LIMIT = 50
VERIFICATION_LIMIT = 20


def moment(epoch: int | None, zone_name: str | None) -> dict | None:
    """An instant for scripts (epoch, ISO UTC) and for people (local time in `zone_name`)."""
    if epoch is None:
        return None
    return {
        "epoch": int(epoch),
        "iso": iso_utc(int(epoch)),
        "local": local_time(int(epoch), zone_name, "%Y-%m-%d %H:%M:%S %Z"),
    }


def _file_size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def _zones(install_ids) -> dict[str, str | None]:
    ids = sorted({i for i in install_ids if i})
    if not ids:
        return {}
    rows = Install.select(Install.install_id, Install.timezone).where(Install.install_id.in_(ids))
    return {row.install_id: row.timezone for row in rows}


def _home_zone() -> str:
    """The zone shared by every install (most sites have one), else UTC."""
    zones = [row.timezone for row in Install.select(Install.timezone).distinct().limit(2)]
    return zones[0] if len(zones) == 1 and zones[0] else "UTC"


def _install(row: Install, mask) -> dict:
    config = row.config if isinstance(row.config, dict) else {}
    mapping = config.get("visitor_mapping")
    flows = sorted(str(f) for f in mapping) if isinstance(mapping, dict) else []
    tz = row.timezone
    problem = config_problem(config)
    return {
        "install_id": row.install_id,
        "company_id": row.company_id,
        "company_name": row.company_name,
        "location_id": row.location_id,
        "location_name": row.location_name,
        "timezone": tz or "UTC",
        "site_id": config.get("proxy_site_id"),
        "site_name": config.get("proxy_site_name"),
        "flows": flows,
        "flows_count": len(flows),
        "last_event_at": moment(row.last_event_at, tz),
        # A stored config the daemon refuses is the install's problem until the setup is rerun.
        "last_error": mask(row.last_error) or problem,
        "config_problem": problem,
        "purpose_registered": row.purpose_registered_at is not None,
        "purpose_registered_at": moment(row.purpose_registered_at, tz),
    }


def _grant(row: Grant, zones: dict, mask) -> dict:
    tz = zones.get(row.install_id)
    return {
        "id": row.id,
        "install_id": row.install_id,
        "kind": row.kind,
        "subject": row.subject,
        "state": row.state,
        "full_name": row.full_name,
        "email": row.email,
        "proxy_person_id": row.proxy_person_id,
        "starts_at": moment(row.starts_at, tz),
        "ends_at": moment(row.ends_at, tz),
        "last_error": mask(row.last_error),
    }


def _action(row: Action, zones: dict, mask) -> dict:
    tz = zones.get(row.install_id)
    return {
        "id": row.id,
        "kind": row.kind,
        "install_id": row.install_id,
        "grant_id": row.grant_id,
        "full_name": row.grant_name,
        "attempts": row.attempts,
        "outcome": row.outcome,
        "reason": mask(row.last_error),
        "due_at": moment(row.due_at, tz),
        "next_attempt_at": None if row.done else moment(row.next_attempt_at, tz),
        "done_at": moment(row.done_at, tz),
    }


def _verification(row: Verification, zones: dict, mask) -> dict:
    return {
        "id": row.id,
        "install_id": row.install_id,
        "entry_id": row.entry_id,
        "decision": row.decision,
        "reason": mask(row.reason),
        "watchlist_entry_id": row.watchlist_entry_id,
        "deadline_hit": bool(row.deadline_hit),
        "duration_ms": row.duration_ms,
        "decided_at": moment(row.decided_at, zones.get(row.install_id)),
    }


_GRANT_FIELDS = (
    Grant.id,
    Grant.install_id,
    Grant.kind,
    Grant.subject,
    Grant.state,
    Grant.full_name,
    Grant.email,
    Grant.proxy_person_id,
    Grant.starts_at,
    Grant.ends_at,
    Grant.last_error,
)


def _actions_with_names(where, order, limit: int, *extra) -> list[Action]:
    query = (
        Action.select(Action, Grant.full_name.alias("grant_name"), *extra)
        .join(Grant, JOIN.LEFT_OUTER, on=(Action.grant == Grant.id))
        .where(where)
        .order_by(*order)
        .limit(limit)
        .objects()
    )
    return list(query)


def _dead_actions(where, limit: int) -> tuple[list[Action], int]:
    """The newest dead actions and how many there are, from a single pass over the table.

    Nothing indexes `outcome`, so finding dead actions reads the table; the window count
    saves a second pass.
    """
    rows = _actions_with_names(
        where, (Action.id.desc(),), limit, fn.COUNT(SQL("*")).over().alias("total")
    )
    return rows, (rows[0].total if rows else 0)


def gather(
    now: int,
    *,
    started_at: float | None = None,
    health: Verdict | None = None,
    scheduler_next_due: int | None = None,
    secrets=(),
    limit: int = LIST_LIMIT,
    retention_days: int | None = None,
    retention_runs=None,
    this_instance: str | None = None,
) -> dict:
    """Every fact of the status page as JSON-ready data; call with a connection open.

    `health`: the daemon's health check (`daemon.health`), read before this snapshot.
    `this_instance`: the id of the instance answering (marked among the instances).
    """
    mask = Masker(secrets)
    pending = Action.done == False  # noqa: E712 (peewee expression)
    failing = pending & (Action.attempts >= FLAG_AFTER_ATTEMPTS)
    # No index covers `outcome`: one scan, which also counts (see _dead_actions).
    dead = Action.outcome == "dead"
    # One read transaction: the counts and the lists describe the same instant.
    with db.database.atomic("DEFERRED"):
        home = _home_zone()
        installs = list(
            Install.select(
                Install.install_id,
                Install.company_id,
                Install.company_name,
                Install.location_id,
                Install.location_name,
                Install.timezone,
                Install.config,
                Install.last_event_at,
                Install.last_error,
                Install.purpose_registered_at,
            )
            .order_by(Install.install_id)
            .limit(limit)
        )
        active = list(
            Grant.select(*_GRANT_FIELDS)
            .where(Grant.state == "active")
            .order_by(Grant.id.desc())
            .limit(limit)
        )
        # A pending grant's activation is its pending issue action: walking the outbox index
        # in due order gives the soonest first without sorting every pending grant.
        upcoming = list(
            Grant.select(*_GRANT_FIELDS, Action.next_attempt_at.alias("activates_at"))
            .join(Action, on=(Action.grant == Grant.id))
            .where(pending & (Action.kind == "issue") & (Grant.state == "pending"))
            .order_by(Action.next_attempt_at, Action.id)
            .limit(min(limit, UPCOMING_LIMIT))
            .objects()
        )
        # The most-tried first: read in the order of the `action_failing` index.
        failing_rows = _actions_with_names(
            failing, (Action.attempts.desc(), Action.next_attempt_at, Action.id), limit
        )
        dead_rows, dead_count = _dead_actions(dead, limit)
        quarantined = list(
            Event.select(Event.job_id, Event.event, Event.install_id, Event.received_at,
                         Event.attempts, Event.next_attempt_at, Event.last_error)
            .where(Event.body.is_null(False))
            .order_by(Event.next_attempt_at, Event.id)
            .limit(limit)
        )  # fmt: skip
        verifications = list(
            Verification.select()
            .order_by(Verification.decided_at.desc(), Verification.id.desc())
            .limit(VERIFICATION_LIMIT)
        )
        counts = {
            "installs": Install.select().count(),
            "grants_active": Grant.select().where(Grant.state == "active").count(),
            "grants_pending": Grant.select().where(Grant.state == "pending").count(),
            "actions_pending": Action.select().where(pending).count(),
            # Deliveries whose planning failed, waiting for their retry (quarantined).
            "events_quarantined": Event.select().where(Event.body.is_null(False)).count(),
            "actions_failing": Action.select().where(failing).count(),
            "actions_dead": dead_count,
            "watchlist": watchlist_size(),
        }
        next_due = outbox.next_due()
        schema = db.schema_version()
        running = instances.registry(now)
        zones = {row.install_id: row.timezone for row in installs}
        zones.update(
            _zones(
                [g.install_id for g in active + upcoming]
                + [a.install_id for a in failing_rows + dead_rows]
                + [v.install_id for v in verifications]
            )
        )

    path = db.database.database
    upcoming_facts = []
    for row in upcoming:
        fact = _grant(row, zones, mask)
        fact["activates_at"] = moment(row.activates_at, zones.get(row.install_id))
        upcoming_facts.append(fact)
    uptime = None if started_at is None else max(0, int(now - started_at))
    return {
        "version": __version__,
        "now": moment(now, home),
        "zone": home,
        "started_at": moment(int(started_at), home) if started_at is not None else None,
        "uptime_seconds": uptime,
        "database": {
            "path": db.describe_location(path),
            "size_bytes": db.stored_bytes(path),
            "wal_bytes": _file_size(f"{path}-wal"),
            "schema_version": schema,
            "schema_expected": db.SCHEMA_VERSION,
        },
        "health": _health(health, mask, home),
        "scheduler": {
            "alive": None if health is None else health.scheduler_alive,
            "alarm_at": moment(scheduler_next_due, home),
            "next_due": moment(next_due, home),
        },
        "instances": [_instance(row, this_instance, home) for row in running],
        "counts": counts,
        "limit": limit,
        "installs": [_install(row, mask) for row in installs],
        "grants": {
            "active": [_grant(row, zones, mask) for row in active],
            "upcoming": upcoming_facts,
        },
        "actions": {
            "failing": [_action(row, zones, mask) for row in failing_rows],
            "dead": [_action(row, zones, mask) for row in dead_rows],
            "flag_after_attempts": FLAG_AFTER_ATTEMPTS,
        },
        "quarantined": [_quarantined(row, zones, mask) for row in quarantined],
        "verifications": [_verification(row, zones, mask) for row in verifications],
        "watchlist": {"size": counts["watchlist"]},
        "retention": _retention(retention_days, retention_runs, mask, home),
    }


def _instance(row: dict, this_instance: str | None, home: str) -> dict:
    """An instance from the registry, its instants as moments, whether it is the one asked."""
    return {
        **row,
        "started_at": moment(row["started_at"], home),
        "last_seen_at": moment(row["last_seen_at"], home),
        "this": row["id"] == this_instance,
    }


def _retention(days: int | None, runs, mask, home: str) -> dict | None:
    """The setting in words and, in the daemon, how its passes went (scheduler.Runs)."""
    facts = retention.describe(days)
    if facts is not None and runs is not None:
        facts["last_pass_at"] = moment(runs.last_success_at, home)
        facts["last_failure_at"] = moment(runs.last_failure_at, home)
        facts["last_error"] = mask(runs.last_error) if runs.failing else None
    return facts


def _quarantined(row: Event, zones: dict, mask) -> dict:
    zone_name = zones.get(row.install_id)
    return {
        "job_id": row.job_id,
        "event": row.event,
        "install_id": row.install_id,
        "received_at": moment(row.received_at, zone_name),
        "attempts": row.attempts,
        "next_attempt_at": moment(row.next_attempt_at, zone_name),
        "error": mask(row.last_error),
    }


def _health(verdict: Verdict | None, mask, home: str) -> dict | None:
    """Healthy or not, every reason (with the admin's detail), and the scheduler's runs."""
    if verdict is None:
        return None
    runs = verdict.runs
    return {
        "healthy": verdict.healthy,
        "reasons": [
            {"code": r.code, "summary": r.summary, "detail": mask(r.detail)}
            for r in verdict.reasons
        ],
        "runs": None
        if runs is None
        else {
            "last_success_at": moment(runs.last_success_at, home),
            "last_failure_at": moment(runs.last_failure_at, home),
            "last_error": mask(runs.last_error),
            "consecutive_failures": runs.consecutive_failures,
        },
    }


def duration(seconds: int | None) -> str:
    """`3d 4h 5m` for people."""
    if seconds is None:
        return "-"
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def size(count: int | None) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"  # unreachable, keeps type checkers calm
