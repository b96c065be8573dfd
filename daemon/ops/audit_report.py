"""Answers from the audit trail for people: a person's story, and who had access when.

Read-only: the CLI (`envoy-proxy audit`) and the status page's Activity view ask the same
questions here. Instants stay UTC epoch; each row also says it in its install's zone.
"""

import csv
import io
import json
from datetime import UTC, datetime

from peewee import fn

from daemon.access import audit
from daemon.rules.times import local_time
from db import AuditEntry, Grant, Install

FIELDS = [
    "at",
    "at_utc",
    "at_local",
    "kind",
    "actor",
    "full_name",
    "email",
    "install_id",
    "grant_id",
    "subject",
    "reason",
    "details",
]
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def utc_text(epoch: int | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def _zones(install_ids) -> dict[str, str | None]:
    ids = sorted({i for i in install_ids if i is not None})
    if not ids:
        return {}
    rows = Install.select(Install.install_id, Install.timezone).where(Install.install_id.in_(ids))
    return {row.install_id: row.timezone for row in rows}


def _row(entry: AuditEntry, zones: dict) -> dict:
    return {
        "at": entry.at,
        "at_utc": utc_text(entry.at),
        "at_local": local_time(entry.at, zones.get(entry.install_id)),
        "kind": entry.kind,
        "actor": entry.actor,
        "full_name": entry.full_name,
        "email": entry.email,
        "install_id": entry.install_id,
        "grant_id": entry.grant_id,
        "subject": entry.subject,
        "reason": entry.reason,
        "details": entry.details,
    }


def _named(name: str):
    """Entries whose name contains `name`, ignoring case."""
    return fn.LOWER(AuditEntry.full_name).contains(name.strip().lower())


def entries(
    *,
    email: str | None = None,
    name: str | None = None,
    install_id: str | None = None,
    since: int | None = None,
    until: int | None = None,
    limit: int | None = None,
) -> list[dict]:
    """The entries that match every filter given, oldest first (`until` excluded)."""
    query = AuditEntry.select()
    if email:
        query = query.where(AuditEntry.email == email.strip().lower())
    if name:
        query = query.where(_named(name))
    if install_id:
        query = query.where(AuditEntry.install_id == install_id)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if until is not None:
        query = query.where(AuditEntry.at < until)
    if limit is not None:  # the newest `limit`, still shown oldest first
        query = query.order_by(AuditEntry.id.desc()).limit(limit)
        found = sorted(query, key=lambda e: e.id)
    else:
        found = list(query.order_by(AuditEntry.id))
    zones = _zones(e.install_id for e in found)
    return [_row(e, zones) for e in found]


def access_between(start: int, end: int) -> list[dict]:
    """Every grant whose Proxy access overlapped [start, end), with its access windows.

    A window runs from the grant's `issued` entry to its `ended` entry (still open if none):
    it overlaps when it began before `end` and had not ended by `start`. One that ended at
    `start` exactly did not overlap, nor one that began at `end`; one issued and ended within
    the same second counts as having access during that second.
    """
    issued_before = AuditEntry.select(AuditEntry.grant_id).where(
        (AuditEntry.kind == audit.ISSUED) & (AuditEntry.at < end)
    )
    marks = (
        AuditEntry.select()
        .where(
            AuditEntry.kind.in_([audit.ISSUED, audit.ENDED])
            & AuditEntry.grant_id.in_(issued_before)
        )
        .order_by(AuditEntry.at, AuditEntry.id)
    )
    windows: dict[int, list[list]] = {}
    people: dict[int, AuditEntry] = {}
    for mark in marks:
        spans = windows.setdefault(mark.grant_id, [])
        people.setdefault(mark.grant_id, mark)
        if mark.kind == audit.ISSUED and not (spans and spans[-1][1] is None):
            spans.append([mark.at, None])
        elif mark.kind == audit.ENDED and spans and spans[-1][1] is None:
            spans[-1][1] = mark.at
    found = []
    zones = _zones(p.install_id for p in people.values())
    for grant_id, spans in windows.items():
        overlapping = [s for s in spans if s[0] < end and _until(s) > start]
        if not overlapping:
            continue
        who = people[grant_id]
        zone = zones.get(who.install_id)
        found.append(
            {
                "grant_id": grant_id,
                "install_id": who.install_id,
                "subject": who.subject,
                "full_name": who.full_name,
                "email": who.email,
                "windows": [
                    {
                        "from": begin,
                        "until": until,
                        "from_local": local_time(begin, zone),
                        "until_local": "still active" if until is None else local_time(until, zone),
                    }
                    for begin, until in overlapping
                ],
            }
        )
    return found


WINDOW_FIELDS = [
    "full_name",
    "email",
    "install_id",
    "grant_id",
    "subject",
    "from_utc",
    "until_utc",
    "from_local",
    "until_local",
]


def window_rows(found: list[dict]) -> list[dict]:
    """`access_between`'s answer with one row per window (for tables and CSV)."""
    return [
        {
            **person,
            **window,
            "from_utc": utc_text(window["from"]),
            "until_utc": utc_text(window["until"]),
        }
        for person in found
        for window in person["windows"]
    ]


def _until(span: list) -> float:
    """Where a window stops counting: open ones never, others at their end (a second at least)."""
    begin, until = span
    return float("inf") if until is None else max(until, begin + 1)


def current_grants(query: str, limit: int = 50) -> list[dict]:
    """The grants of a person found by email (exactly) or name (a part of it): how they stand."""
    text = query.strip()
    if "@" in text:
        condition = Grant.email == text.lower()
    else:
        condition = fn.LOWER(Grant.full_name).contains(text.lower())
    rows = list(Grant.select().where(condition).order_by(Grant.id.desc()).limit(limit))
    zones = _zones(g.install_id for g in rows)
    return [
        {
            "grant_id": g.id,
            "install_id": g.install_id,
            "full_name": g.full_name,
            "email": g.email,
            "subject": g.subject,
            "state": g.state,
            "starts_local": local_time(g.starts_at, zones.get(g.install_id)),
            "ends_local": "-"
            if g.ends_at is None
            else local_time(g.ends_at, zones.get(g.install_id)),
            "last_error": g.last_error,
        }
        for g in rows
    ]


def activity(query: str, limit: int = 200) -> dict:
    """The Activity view: one person's story (by email or name) and their grants now."""
    text = (query or "").strip()
    if not text:
        return {"query": "", "grants": [], "entries": []}
    by_email = "@" in text
    story = entries(email=text if by_email else None, name=None if by_email else text, limit=limit)
    return {"query": text, "grants": current_grants(text), "entries": story}


def csv_cell(value) -> str:
    """A cell a spreadsheet shows as text: a leading quote before a formula's first character."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def to_csv(rows: list[dict], fields: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(fields)
    for row in rows:
        writer.writerow([csv_cell(_flat(row.get(f))) for f in fields])
    return out.getvalue()


def _flat(value):
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return value
