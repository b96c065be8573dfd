"""Admin commands on the daemon's own database: status, grants, revoke, retry, backup, watchlist,
audit, uninstall.

They open the same database as the running daemon (a SQLite file: WAL lets them read while it
serves, and their writes are short IMMEDIATE transactions; or PostgreSQL) and take the same
settings as `serve`. Errors go
to stderr with a non-zero exit: 1 when the command failed, 2 for a setting, 75 (EX_TEMPFAIL)
when a revocation is recorded but left to the daemon because Proxy did not answer. What a
command changes is in the audit trail, under `cli:<OS user>`.
"""

import argparse
import dataclasses
import json
import os
import sqlite3
import sys
import unicodedata
from datetime import UTC, datetime

import peewee

import db
from daemon import config, startup
from daemon.access import audit, grants, jobs, outbox, uninstall, watchlist
from daemon.access.outbox import FLAG_AFTER_ATTEMPTS
from daemon.health import Health
from daemon.masking import Masker
from daemon.ops import audit_report, status_report
from daemon.rules.times import local_time
from db import LIVE_STATES, Action, Grant, Install, now_epoch

EXIT_OK, EXIT_FAILED, EXIT_QUEUED = 0, 1, 75
INSTALL_HEADERS = [
    "INSTALL",
    "COMPANY",
    "LOCATION",
    "ZONE",
    "SITE",
    "FLOWS",
    "LAST EVENT",
    "PURPOSE",
    "LAST ERROR",
]
CELL_WIDTH = 40
ADMIN_PROXY_BUDGET = 3.0
# Bidirectional overrides can make a terminal show text other than what is stored.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class AdminError(RuntimeError):
    """The command cannot do what was asked; the message says why (exit 1)."""


# ---------------------------------------------------------------------------- plumbing


def _open(cfg: config.Config) -> None:
    """Open and migrate the daemon's database; the Envoy client secret is not needed here.

    Never one that is missing or empty: migrating it would hand the daemon a fresh database.
    No instance lock either: these commands run beside the daemon.
    """
    startup.open_existing(cfg.db)
    with db.database.connection_context():
        db.migrate()


def _command(run):
    """Open the database, run, turn known failures into a message and an exit status."""

    def wrapped(args) -> int:
        cfg = config.load(args, require=False)
        try:
            _open(cfg)
            with db.database.connection_context(), audit.acting_as(audit.cli_actor()):
                return run(args, cfg)
        except AdminError as error:
            _error(str(error))
            return EXIT_FAILED
        except peewee.DatabaseError as error:  # locked past the busy timeout, not a database…
            _error(f"database {cfg.db}: {error}")
            return EXIT_FAILED
        finally:
            db.close_database()

    return wrapped


def _error(message: str) -> None:
    print(f"envoy-proxy: {message}", file=sys.stderr)


def clean(value) -> str:
    """Text safe to print on a terminal: control characters (escape sequences) shown as `?`."""
    if value is None:
        return "-"
    return "".join(
        "?" if unicodedata.category(ch) == "Cc" or ch in _BIDI_CONTROLS else ch for ch in str(value)
    )


def _cell(value) -> str:
    text = clean(value)
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 1] + "…"


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _local(epoch: int | None, zone_name: str | None) -> str:
    return "-" if epoch is None else local_time(epoch, zone_name)


def _when(stamp: dict | None) -> str:
    return stamp["local"] if stamp else "-"


def _add(commands, name: str, help_text: str, run, description: str | None = None):
    parser = commands.add_parser(name, help=help_text, description=description or help_text)
    parser.set_defaults(run=_command(run))
    return parser


def _settings(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (as for serve; only the database is needed)")
    config.add_arguments(group)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


# ---------------------------------------------------------------------------- status


def _health_lines(health: dict | None) -> list[str]:
    """UNHEALTHY and why, first: what an admin must act on."""
    if health is None:
        return []
    if health["healthy"]:
        return ["health:         ok"]
    lines = ["health:         UNHEALTHY"]
    for reason in health["reasons"]:
        lines.append(f"  - {clean(reason['summary'])}")
        if reason["detail"]:
            lines.append(f"    {clean(reason['detail'])}")
    return lines


def render_status(facts: dict) -> str:
    """The status page as plain text."""
    sched, database, counts = facts["scheduler"], facts["database"], facts["counts"]
    alive = sched["alive"]
    if alive is None:
        alive_text = "not visible from the CLI (see /status, or systemctl status envoy-proxy)"
    else:
        alive_text = "alive" if alive else "NOT RUNNING: due work is not being done"
    out = [
        f"envoy-proxy {facts['version']} — status at {_when(facts['now'])}",
        *_health_lines(facts["health"]),
        f"scheduler:      {alive_text}",
        f"next due work:  {_when(sched['next_due'])}",
        f"database:       {clean(database['path'])} "
        f"({status_report.size(database['size_bytes'])}, "
        f"WAL {status_report.size(database['wal_bytes'])}), "
        f"schema version {database['schema_version']}",
        f"events:         {counts['events_quarantined']} quarantined (planning failed)",
        f"actions:        {counts['actions_pending']} pending, {counts['actions_failing']} "
        f"failing (≥ {FLAG_AFTER_ATTEMPTS} attempts), {counts['actions_dead']} dead",
        f"watchlist:      {counts['watchlist']} entries",
    ]
    if facts["started_at"] is not None:
        out.insert(
            2,
            f"started:        {_when(facts['started_at'])} "
            f"(up {status_report.duration(facts['uptime_seconds'])})",
        )

    def section(title: str, total: int | None, rows: list, headers: list[str], row) -> None:
        shown = f", showing {len(rows)}" if total is not None and total > len(rows) else ""
        out.append("")
        out.append(f"{title} ({total if total is not None else len(rows)}{shown})")
        out.append(table(headers, [row(r) for r in rows]) if rows else "  none")

    section(
        "Instances",
        None,
        facts["instances"],
        ["INSTANCE", "HOST", "PID", "STARTED", "LAST SEEN", "CLAIMS", "PERIODIC PASSES"],
        lambda n: [
            n["id"],
            n["host"],
            n["pid"],
            _when(n["started_at"]),
            _when(n["last_seen_at"]) + ("" if n["alive"] else " (NOT ALIVE)"),
            n["claims"],
            "runs them" if n["runs_passes"] else "",
        ],
    )
    section(
        "Installs",
        counts["installs"],
        facts["installs"],
        INSTALL_HEADERS,
        lambda i: [
            i["install_id"],
            i["company_name"] or i["company_id"],
            i["location_name"] or i["location_id"],
            i["timezone"],
            i["site_name"] or i["site_id"],
            f"{i['flows_count']}: {', '.join(i['flows'])}" if i["flows"] else "0",
            _when(i["last_event_at"]),
            "registered" if i["purpose_registered"] else "not registered",
            i["last_error"],
        ],
    )
    grant_headers = ["GRANT", "NAME", "EMAIL", "SUBJECT", "STARTS", "ENDS", "ERROR"]

    def grant_row(g):
        return [
            g["id"],
            g["full_name"],
            g["email"],
            g["subject"],
            _when(g["starts_at"]),
            _when(g["ends_at"]),
            g["last_error"],
        ]

    section(
        "Active grants",
        counts["grants_active"],
        facts["grants"]["active"],
        grant_headers,
        grant_row,
    )
    section(
        "Upcoming activations",
        counts["grants_pending"],
        facts["grants"]["upcoming"],
        ["GRANT", "NAME", "EMAIL", "SUBJECT", "ACTIVATES", "ENDS", "ERROR"],
        lambda g: [*grant_row(g)[:4], _when(g["activates_at"]), *grant_row(g)[5:]],
    )
    action_headers = ["ACTION", "KIND", "GRANT", "NAME", "ATTEMPTS", "DUE", "NEXT TRY", "REASON"]

    def action_row(a):
        return [
            a["id"],
            a["kind"],
            a["grant_id"],
            a["full_name"],
            a["attempts"],
            _when(a["due_at"]),
            _when(a["next_attempt_at"]),
            a["reason"],
        ]

    section(
        "Failing actions",
        counts["actions_failing"],
        facts["actions"]["failing"],
        action_headers,
        action_row,
    )
    section(
        "Dead actions", counts["actions_dead"], facts["actions"]["dead"], action_headers, action_row
    )
    section(
        "Quarantined deliveries",
        counts["events_quarantined"],
        facts["quarantined"],
        ["JOB", "EVENT", "INSTALL", "RECEIVED", "ATTEMPTS", "NEXT TRY", "ERROR"],
        lambda q: [
            q["job_id"],
            q["event"],
            q["install_id"],
            _when(q["received_at"]),
            q["attempts"],
            _when(q["next_attempt_at"]),
            q["error"],
        ],
    )
    section(
        "Recent identity verifications",
        None,
        facts["verifications"],
        ["WHEN", "INSTALL", "ENTRY", "DECISION", "REASON", "WATCHLIST", "MS"],
        lambda v: [
            _when(v["decided_at"]),
            v["install_id"],
            v["entry_id"],
            v["decision"],
            v["reason"],
            v["watchlist_entry_id"],
            f"{v['duration_ms']}{' (deadline)' if v['deadline_hit'] else ''}",
        ],
    )
    return "\n".join(out)


def _status(args, cfg) -> int:
    # The database's checks only: the scheduler's live in the daemon (its /healthz).
    health = Health(cfg.overdue_seconds, Masker(cfg.secrets())).check()
    facts = status_report.gather(
        now_epoch(), health=health, secrets=cfg.secrets(), retention_days=cfg.retention_days
    )
    if args.json:
        print(json.dumps(facts, indent=2, ensure_ascii=False))
    else:
        print(render_status(facts))
    return EXIT_OK


# ---------------------------------------------------------------------------- grants


def _failed_grant_ids():
    return Action.select(Action.grant).where(
        Action.grant.is_null(False)
        & (
            ((Action.done == False) & (Action.attempts >= FLAG_AFTER_ATTEMPTS))  # noqa: E712
            | (Action.outcome == "dead")
        )
    )


def _grants(args, cfg) -> int:
    query = Grant.select()
    if args.active:
        query = query.where(Grant.state == "active").order_by(Grant.id.desc())
    elif args.pending:
        query = query.where(Grant.state == "pending").order_by(Grant.starts_at, Grant.id)
    elif args.failed:
        query = query.where(Grant.id.in_(_failed_grant_ids())).order_by(Grant.id.desc())
    else:
        query = query.order_by(Grant.id.desc())
    rows = list(query.limit(args.limit))
    zones = {
        i.install_id: i.timezone
        for i in Install.select(Install.install_id, Install.timezone).where(
            Install.install_id.in_(sorted({g.install_id for g in rows}))
        )
    }
    if not rows:
        print("no grants")
        return EXIT_OK
    print(
        table(
            ["ID", "STATE", "NAME", "EMAIL", "STARTS", "ENDS", "INSTALL", "SUBJECT", "ERROR"],
            [
                [
                    g.id,
                    g.state,
                    g.full_name,
                    g.email,
                    _local(g.starts_at, zones.get(g.install_id)),
                    _local(g.ends_at, zones.get(g.install_id)),
                    g.install_id,
                    g.subject,
                    g.last_error,
                ]
                for g in rows
            ],
        )
    )
    if len(rows) == args.limit:
        print(f"(first {args.limit}; use --limit to see more)")
    return EXIT_OK


# ---------------------------------------------------------------------------- revoke


def _carry_out(cfg, action_ids: list[int], now: int) -> list[Action] | None:
    """Run these recorded endings against Proxy now, within an admin's patience, and return
    them as they stand after; None when Proxy cannot be called from here (no key file).

    The first one Proxy does not finish leaves the rest to the daemon's sweep.
    """
    # Imported here: the other commands need neither the HTTP clients nor the key file.
    from daemon.access.runner import execute
    from daemon.context import Context
    from daemon.secretbox import SecretBox

    if not os.path.exists(cfg.key_file):
        return None
    ctx = Context.build(cfg, SecretBox.from_key_file(cfg.key_file))
    # An admin at a prompt waits a few seconds at most; the daemon finishes what remains.
    inline = dataclasses.replace(ctx, proxy=ctx.proxy.limited(ADMIN_PROXY_BUDGET))
    try:
        for action_id in action_ids:
            claimed = outbox.claim_one(action_id, now)
            if claimed is None or execute(inline, claimed, now) is None:
                break
    finally:
        ctx.proxy.close()
    return [Action.get_by_id(action_id) for action_id in action_ids]


def _revoke(args, cfg) -> int:
    now = now_epoch()
    with db.database.atomic():
        grant = Grant.get_or_none(Grant.id == args.grant_id)
        if grant is None:
            raise AdminError(f"no grant {args.grant_id} (see `envoy-proxy grants`)")
        before = grant.state
        action_id = grants.end_at(grant, now, now)
        if before in LIVE_STATES:
            audit.closing(grant, "admin revoke")
        jobs.settle(grant.id, now)
    who = clean(grant.full_name or grant.email or grant.subject)
    if action_id is None:
        if before in LIVE_STATES:
            print(f"grant {grant.id} ({who}) was not issued yet: cancelled, no Proxy call needed")
        else:
            print(f"grant {grant.id} ({who}) is already {before}: nothing to do")
        return EXIT_OK
    carried = _carry_out(cfg, [action_id], now)
    if carried is None:
        _error(
            f"key file {cfg.key_file} not found, so Proxy cannot be called from here; the "
            f"revocation is recorded (action {action_id}) and the daemon will carry it out"
        )
        return EXIT_QUEUED
    [done] = carried
    if done.done and done.outcome == "done":
        state = Grant.get_by_id(grant.id).state
        print(f"grant {grant.id} ({who}): access ended in Proxy (grant {state})")
        return EXIT_OK
    reason = clean(done.last_error) if done.last_error else "another run holds this person"
    _error(
        f"grant {grant.id} ({who}): Proxy could not be reached now ({reason}); the revocation is "
        f"recorded as action {action_id} and the daemon's sweep will finish it (within "
        f"{cfg.sweep_seconds} s once Proxy answers; retried until it succeeds)"
    )
    return EXIT_QUEUED


# ---------------------------------------------------------------------------- retry


def _retry(args, cfg) -> int:
    now = now_epoch()
    if args.all_failed:
        failing = (Action.done == False) & (Action.attempts >= FLAG_AFTER_ATTEMPTS)  # noqa: E712
        ids = [a.id for a in Action.select(Action.id).where(failing | (Action.outcome == "dead"))]
        if not ids:
            print("no failing or dead actions")
            return EXIT_OK
        with db.database.atomic():
            count = sum(outbox.retry(ids[i : i + 500], now) for i in range(0, len(ids), 500))
            audit.admin("retry every failing or dead action", {"actions": count})
    else:
        action = Action.get_or_none(Action.id == args.action_id)
        if action is None:
            raise AdminError(f"no action {args.action_id} (see `envoy-proxy status`)")
        if action.done and action.outcome != "dead":
            raise AdminError(
                f"action {action.id} is already finished ({action.outcome}): nothing to retry"
            )
        with db.database.atomic():
            count = outbox.retry([action.id], now)
            audit.admin(f"retry action {action.id}", {"action_id": action.id}, action.grant_id)
    print(
        f"{count} action{'s' if count != 1 else ''} will run again at the daemon's next sweep "
        f"(within {cfg.sweep_seconds} s)"
    )
    return EXIT_OK


# ---------------------------------------------------------------------------- backup


def _backup(args, cfg) -> int:
    if db.is_postgres():
        raise AdminError(
            "backup copies a SQLite file; a PostgreSQL database is backed up with its own "
            "tools: pg_dump (README, Database)"
        )
    target = os.path.abspath(args.path)
    if os.path.exists(target) and not args.force:
        raise AdminError(f"{target} exists; pass --force to overwrite it")
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise AdminError(f"directory {directory} does not exist")
    source_path = os.path.abspath(cfg.db)
    if target in (source_path, f"{source_path}-wal", f"{source_path}-shm"):
        raise AdminError("the backup must not overwrite the database itself")
    partial = f"{target}.partial-{os.getpid()}"
    # Created 0600 before SQLite opens it: the copy holds the same personal data.
    os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    try:
        copy = sqlite3.connect(partial)
        try:
            # One step (pages=-1) inside one read transaction: a consistent snapshot under WAL
            # while the daemon keeps writing; a stepwise copy would restart on every write.
            db.database.connection().backup(copy)
            check = copy.execute("PRAGMA quick_check").fetchone()[0]
            copy.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
        finally:
            copy.close()
        if check != "ok":
            raise AdminError(f"the copy failed its integrity check: {check}")
        os.chmod(partial, 0o600)
        os.replace(partial, target)
    except BaseException:
        for leftover in (partial, f"{partial}-journal", f"{partial}-wal", f"{partial}-shm"):
            if os.path.exists(leftover):
                os.unlink(leftover)
        raise
    print(f"backed up {source_path} to {target} ({status_report.size(os.path.getsize(target))})")
    return EXIT_OK


# ---------------------------------------------------------------------------- watchlist


def _watchlist_add(args, cfg) -> int:
    try:
        entry, created = watchlist.add(email=args.email, full_name=args.name, reason=args.reason)
    except watchlist.WatchlistError as error:
        raise AdminError(str(error)) from None
    who = clean(entry.email or entry.display_name)
    if created:
        print(f"added watchlist entry {entry.id}: {who}")
    else:
        print(f"{who} is already on the watchlist (entry {entry.id}: {clean(entry.reason)})")
    return EXIT_OK


def _watchlist_remove(args, cfg) -> int:
    try:
        removed = watchlist.remove(entry_id=args.id, email=args.email, full_name=args.name)
    except watchlist.WatchlistError as error:
        raise AdminError(str(error)) from None
    if not removed:
        raise AdminError("no matching watchlist entry (see `envoy-proxy watchlist list`)")
    print(f"removed {removed} watchlist entr{'ies' if removed != 1 else 'y'}")
    return EXIT_OK


def _watchlist_list(args, cfg) -> int:
    rows = watchlist.entries()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "id": e.id,
                        "email": e.email,
                        "name": e.display_name,
                        "name_key": e.name_key,
                        "reason": e.reason,
                        "created_at": e.created_at,
                    }
                    for e in rows
                ],
                indent=2,
                ensure_ascii=False,
            )
        )
        return EXIT_OK
    if not rows:
        print("the watchlist is empty")
        return EXIT_OK
    print(
        table(
            ["ID", "EMAIL", "NAME", "REASON", "ADDED"],
            [[e.id, e.email, e.display_name, e.reason, _local(e.created_at, None)] for e in rows],
        )
    )
    return EXIT_OK


# ---------------------------------------------------------------------------- audit


def instant(text: str) -> int:
    """An instant from ISO 8601 (without an offset: UTC) or from epoch seconds."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2026-11-24T14:00+01:00, got {text!r}"
        ) from None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())


AUDIT_HEADERS = ["WHEN", "KIND", "ACTOR", "NAME", "EMAIL", "GRANT", "REASON"]
ACCESS_HEADERS = ["NAME", "EMAIL", "INSTALL", "GRANT", "FROM", "UNTIL"]


def _print_rows(args, rows: list[dict], fields: list[str], headers: list[str], cells) -> None:
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    elif args.csv:
        print(audit_report.to_csv(rows, fields), end="")
    elif not rows:
        print("nothing found")
    else:
        print(table(headers, [cells(row) for row in rows]))


def _audit(args, cfg) -> int:
    if args.who_had_access_between:
        start, end = args.who_had_access_between
        if end <= start:
            raise AdminError("--who-had-access-between: the second time must be after the first")
        found = audit_report.access_between(start, end)
        if args.json:
            print(json.dumps(found, indent=2, ensure_ascii=False))
            return EXIT_OK
        rows = audit_report.window_rows(found)
        _print_rows(
            args,
            rows,
            audit_report.WINDOW_FIELDS,
            ACCESS_HEADERS,
            lambda w: [
                w["full_name"],
                w["email"],
                w["install_id"],
                w["grant_id"],
                w["from_local"],
                w["until_local"],
            ],
        )
        return EXIT_OK
    rows = audit_report.entries(
        email=args.email,
        name=args.name,
        install_id=args.install,
        since=args.since,
        until=args.until,
        limit=args.limit,
    )
    _print_rows(
        args,
        rows,
        audit_report.FIELDS,
        AUDIT_HEADERS,
        lambda e: [
            e["at_local"],
            e["kind"],
            e["actor"],
            e["full_name"],
            e["email"],
            e["grant_id"],
            e["reason"],
        ],
    )
    return EXIT_OK


# ---------------------------------------------------------------------------- uninstall


def _uninstall(args, cfg) -> int:
    now = now_epoch()
    with db.database.atomic():
        summary = uninstall.uninstall(args.install, now)
        if summary is None:
            raise AdminError(f"no install {args.install} (see `envoy-proxy status`)")
    print(f"install {clean(args.install)} {uninstall.describe(summary)}")
    if not summary["ending"]:
        return EXIT_OK
    carried = _carry_out(cfg, summary["ending"], now)
    left = [a.id for a in carried or [] if not (a.done and a.outcome == "done")]
    if carried is not None and not left:
        print("every access ended in Proxy; the install's Proxy secret is erased")
        return EXIT_OK
    _error(
        f"{len(left) if carried is not None else len(summary['ending'])} ending(s) left to the "
        f"daemon's sweep (within {cfg.sweep_seconds} s once Proxy answers; retried until they "
        "succeed); the install's Proxy secret is erased when the last one is done"
    )
    return EXIT_QUEUED


# ---------------------------------------------------------------------------- the parsers


def register(commands) -> None:
    """Add the admin commands to the top-level `envoy-proxy` subparsers."""
    parser = _add(commands, "status", "show the daemon's state (as /status shows it)", _status)
    parser.add_argument("--json", action="store_true", help="the facts as JSON (as /status.json)")
    _settings(parser)

    parser = _add(commands, "grants", "list grants, newest first", _grants)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--active", action="store_true", help="only grants in force now")
    which.add_argument("--pending", action="store_true", help="only grants not yet issued")
    which.add_argument(
        "--failed", action="store_true", help="only grants with a failing or dead action"
    )
    parser.add_argument("--limit", type=_positive, default=50, help="at most N rows (50)")
    _settings(parser)

    parser = _add(
        commands,
        "revoke",
        "end a grant's access now",
        _revoke,
        "End a grant's access now: recorded first, then carried out in Proxy at once if it "
        "answers; otherwise the running daemon finishes it (exit status 75).",
    )
    parser.add_argument("grant_id", type=int, metavar="GRANT_ID")
    _settings(parser)

    parser = _add(
        commands,
        "retry",
        "run failing or dead outbox actions again",
        _retry,
        "Make outbox actions due now, including dead ones; the daemon's sweep runs them.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("action_id", nargs="?", type=int, metavar="ACTION_ID")
    which.add_argument(
        "--all-failed",
        action="store_true",
        help=f"every action failing (≥ {FLAG_AFTER_ATTEMPTS} attempts) or dead",
    )
    _settings(parser)

    parser = _add(
        commands,
        "backup",
        "copy the database safely while the daemon runs",
        _backup,
        "Copy the database with SQLite's online backup (safe while the daemon serves) into a "
        "new file readable by its owner only.",
    )
    parser.add_argument("path", metavar="PATH")
    parser.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    _settings(parser)

    parser = commands.add_parser(
        "watchlist",
        help="people the identity check sends to manual review",
        description="People the identity-verification hook sends to manual review.",
    )
    actions = parser.add_subparsers(dest="watchlist_command", required=True, metavar="ACTION")
    add = _add(actions, "add", "add a person by email or by full name", _watchlist_add)
    who = add.add_mutually_exclusive_group(required=True)
    who.add_argument("--email", metavar="ADDRESS")
    who.add_argument("--name", metavar="FULL_NAME", help="matched ignoring case and spacing")
    add.add_argument("--reason", required=True, help="why (the reviewer reads it)")
    _settings(add)
    remove = _add(actions, "remove", "remove entries by id, email or name", _watchlist_remove)
    who = remove.add_mutually_exclusive_group(required=True)
    who.add_argument("--id", type=int, metavar="N")
    who.add_argument("--email", metavar="ADDRESS")
    who.add_argument("--name", metavar="FULL_NAME")
    _settings(remove)
    listing = _add(actions, "list", "list the entries", _watchlist_list)
    listing.add_argument("--json", action="store_true", help="as JSON")
    _settings(listing)

    parser = _add(
        commands,
        "audit",
        "what happened, to whom: the audit trail",
        _audit,
        "The audit trail: every access change and decision, oldest first. Filters combine. "
        "Times are ISO 8601 (UTC unless they carry an offset) or epoch seconds.",
    )
    parser.add_argument("--email", metavar="ADDRESS", help="entries about this email address")
    parser.add_argument("--name", metavar="TEXT", help="entries whose name contains TEXT")
    parser.add_argument("--install", metavar="ID", help="entries of this install")
    parser.add_argument("--since", type=instant, metavar="TIME", help="at or after TIME")
    parser.add_argument("--until", type=instant, metavar="TIME", help="before TIME")
    parser.add_argument("--limit", type=_positive, help="only the newest N entries")
    parser.add_argument(
        "--who-had-access-between",
        nargs=2,
        type=instant,
        metavar=("T1", "T2"),
        help="everyone whose Proxy access overlapped T1..T2, with their windows",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="as JSON")
    output.add_argument("--csv", action="store_true", help="as CSV (safe to open in a spreadsheet)")
    _settings(parser)

    parser = _add(
        commands,
        "uninstall",
        "end an install's access and erase its Proxy secret",
        _uninstall,
        "What Envoy's plugin_uninstalled does, for when Envoy cannot reach the daemon: end every "
        "live access of the install in Proxy, cancel its grants not yet issued, refuse its "
        "later events, and erase its stored Proxy secret once the endings are done.",
    )
    parser.add_argument("--install", required=True, metavar="ID")
    _settings(parser)
