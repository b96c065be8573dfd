"""An in-memory Proxy API sandbox: a real, thread-safe HTTP server for tests, demos and benchmarks.

It implements every endpoint of PROXY_API.md with its own validation and error shapes (so it
catches a client that drifts from the contract), and adds control routes under ``/_sandbox/``
to seed data, read the whole state, move the clock and inject faults. Never used in production.
"""

import argparse
import base64
import binascii
import collections
import copy
import email.utils
import itertools
import json
import logging
import random
import re
import signal
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Container
from dataclasses import asdict, dataclass, field
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

log = logging.getLogger("sandbox.proxy")

CONTROL_PREFIX = "/_sandbox/"
MAX_LIMIT = 100
DEFAULT_LIMIT = 20
MAX_PHOTO_CHARS = 255
STATUSES = ("active", "suspended")
FUTURE_DATE_RULE = "The scheduledDate field has to be a future date"
CALL_LOG_SIZE = 100_000  # bounds memory in long demos and benchmarks

DEFAULT_SEED: dict[str, Any] = {
    "apps": [
        {"key": "app-key", "secret": "app-secret", "orgs": ["org-1"]},
        {"key": "other-key", "secret": "other-secret", "orgs": ["org-2"]},
    ],
    "orgs": [{"id": "org-1", "name": "Acme HQ"}, {"id": "org-2", "name": "Other Corp"}],
    "sites": [
        {"id": "site-1", "orgId": "org-1", "name": "Lobby Tower"},
        {"id": "site-2", "orgId": "org-1", "name": "Warehouse"},
        {"id": "site-9", "orgId": "org-2", "name": "Other Site"},
    ],
    "groups": [
        {"id": "grp-visitors", "orgId": "org-1", "siteId": "site-1", "name": "Visitors",
         "tag": "visitor-lobby", "isGlobal": False},
        {"id": "grp-contractors", "orgId": "org-1", "siteId": "site-1", "name": "Contractors",
         "tag": "contractor", "isGlobal": False},
        {"id": "grp-vip", "orgId": "org-1", "siteId": "site-1", "name": "VIP",
         "tag": "vip", "isGlobal": False},
        {"id": "grp-all", "orgId": "org-1", "siteId": None, "name": "Everyone",
         "tag": "everyone", "isGlobal": True},
        {"id": "grp-warehouse-visitors", "orgId": "org-1", "siteId": "site-2",
         "name": "Warehouse Visitors", "tag": "visitor-warehouse", "isGlobal": False},
    ],
    "persons": [
        {"id": "p_1", "orgId": "org-1", "siteId": "site-1", "name": "Erin Employee",
         "email": "erin@example.com", "tags": ["staff"], "details": {}},
        {"id": "p_2", "orgId": "org-1", "siteId": "site-1", "name": "Sam Staff",
         "email": "sam@example.com", "tags": ["staff"], "details": {}},
    ],
}  # fmt: skip


# The install config the setup steps produce against DEFAULT_SEED (tests, demo, benchmarks).
SEED_INSTALL_CONFIG: dict[str, Any] = {
    "proxy_app_key": "app-key",
    "proxy_org_id": "org-1",
    "proxy_site_id": "site-1",
    "proxy_site_name": "Lobby Tower",
    "visitor_mapping": {
        "flow-visitor": ["grp-visitors"],
        "flow-contractor": ["grp-contractors", "grp-vip"],
    },
    "access_duration_minutes": 240,
    "early_access_minutes": 30,
}


def many_sites(n: int, org_id: str = "org-1") -> dict[str, Any]:
    """A seed fragment with ``n`` extra sites "Site 001"… in ``org_id``, for pagination tests."""
    sites = [
        {"id": f"site-{i:03d}", "orgId": org_id, "name": f"Site {i:03d}"} for i in range(1, n + 1)
    ]
    return {"sites": sites}


# --- errors and replies ----------------------------------------------------------------------


class ApiError(Exception):
    """A 4xx answer in the shape of PROXY_API.md."""

    def __init__(self, status: int, code: str, description: str, headers: dict | None = None):
        super().__init__(description)
        self.status, self.code, self.description = status, code, description
        self.headers = headers or {}

    def payload(self) -> dict:
        return {"data": {"error": {"code": self.code, "description": self.description}}}


class Unauthorized(ApiError):
    def __init__(self, description: str):
        super().__init__(401, "invalid_client", description)

    def payload(self) -> dict:
        return {"error": "invalid_client", "error_description": self.description}


def _not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} {ident} not found")


def _invalid(description: str) -> ApiError:
    return ApiError(400, "validation_error", description)


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict | None = None) -> "Reply":
        return cls(status, json.dumps(payload).encode(), headers=headers or {})

    @classmethod
    def error(cls, exc: ApiError) -> "Reply":
        return cls.json(exc.status, exc.payload(), exc.headers)


DROP = Reply(0)  # close the connection without answering


# --- request parsing -------------------------------------------------------------------------


def _parse_query(pairs: list[tuple[str, str]]) -> dict[str, str]:
    query: dict[str, str] = {}
    for name, value in pairs:
        if name in query:
            raise ApiError(400, "invalid_parameter", f"{name} is given more than once")
        query[name] = value
    return query


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from exc


def _json_body(raw: bytes, content_type: str) -> Any:
    """The JSON body of an API call, or None when it has none."""
    if not raw:
        return None
    if not content_type.startswith("application/json"):
        raise ApiError(415, "unsupported_media_type", "the body must be application/json")
    return _parse_json(raw)


def _int_param(query: dict, name: str, default: int, maximum: int | None = None) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1 or (maximum is not None and int(raw) > maximum):
        upper = f" and at most {maximum}" if maximum else ""
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer from 1{upper}")
    return int(raw)


def _paginate(items: list, query: dict) -> dict:
    page = _int_param(query, "page", default=1)
    limit = _int_param(query, "limit", default=DEFAULT_LIMIT, maximum=MAX_LIMIT)
    start = (page - 1) * limit
    return {"items": items[start : start + limit]}


def _filter(query: dict, allowed: str) -> str | None:
    """The one ``allowed`` key of the JSON ``filter`` parameter, or None when not filtered."""
    raw = query.get("filter")
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict) or set(value) - {allowed}:
        raise ApiError(
            400, "invalid_filter", f'filter must be a JSON object like {{"{allowed}": "…"}}'
        )
    if allowed in value and not isinstance(value[allowed], str):
        raise ApiError(400, "invalid_filter", f"filter.{allowed} must be a string")
    return value.get(allowed)


_UTC_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z")


def _parse_utc(text: Any) -> float:
    """Epoch seconds of an ISO-8601 UTC date written with a final Z."""
    if isinstance(text, str) and _UTC_DATE.fullmatch(text):
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            pass
    raise _invalid(
        "scheduledDate must be an ISO-8601 UTC date ending in Z, e.g. 2030-01-31T09:00:00Z"
    )


def _require_keys(record: dict, required: set, optional: set, where: str) -> None:
    if not isinstance(record, dict):
        raise _invalid(f"{where} must be a JSON object")
    if missing := sorted(required - set(record)):
        raise _invalid(f"{where}.{missing[0]} is required")
    if unknown := sorted(set(record) - required - optional):
        raise _invalid(f"{where}.{unknown[0]} is not a known field")


def _require_str(value: Any, where: str, max_chars: int | None = None) -> None:
    if not isinstance(value, str) or not value.strip():
        raise _invalid(f"{where} must be a non-empty string")
    if max_chars is not None and len(value) > max_chars:
        raise _invalid(f"{where} must be under {max_chars + 1} characters")


# --- the data --------------------------------------------------------------------------------


@dataclass
class Scheduled:
    id: str
    status: str
    scheduled_date: str
    at: float

    def view(self) -> dict:
        return {"id": self.id, "status": self.status, "scheduledDate": self.scheduled_date}


@dataclass
class Person:
    id: str
    org_id: str
    site_id: str
    name: str
    email: str
    tags: list[str]
    details: dict
    photo: str | None = None
    scheduled: list[Scheduled] = field(default_factory=list)
    invites_sent: int = 0
    resends: int = 0
    created_at: float | None = None  # the sandbox clock when it was made (None: seeded)

    def status_at(self, now: float) -> str:
        """The latest scheduled status whose date has passed (later entries win ties)."""
        due = [(s.at, i, s.status) for i, s in enumerate(self.scheduled) if s.at <= now]
        return max(due)[2] if due else "active"

    def view(self, now: float) -> dict:
        """The person as the API answers it."""
        answer = {"id": self.id, "name": self.name, "email": self.email}
        if self.photo is not None:
            answer["photo"] = self.photo
        answer.update(tags=list(self.tags), status=self.status_at(now), details=dict(self.details))
        return answer

    def full_view(self, now: float) -> dict:
        """The person as /_sandbox/state shows it, with its scope and counters."""
        return {
            **self.view(now),
            "orgId": self.org_id,
            "siteId": self.site_id,
            "scheduledStatuses": [s.view() for s in self.scheduled],
            "invitesSent": self.invites_sent,
            "resends": self.resends,
            "createdAt": self.created_at,
        }


def _email_key(email: str) -> str:
    return email.lower()


class World:
    """Apps, orgs, sites, groups and persons, and the sandbox clock. Callers hold the lock.

    Persons are indexed by email so that a lookup costs the same with 10 or 100,000 of them;
    every person enters through ``add_person``, which keeps the index in step.
    """

    def __init__(self) -> None:
        self.clock_offset = 0.0
        self.apps: dict[str, dict] = {}
        self.orgs: dict[str, dict] = {}
        self.sites: dict[str, dict] = {}
        self.groups: dict[str, dict] = {}
        self.persons: dict[str, Person] = {}
        self._ids_by_email: dict[str, list[str]] = {}  # in the order of ``persons``
        self._scheduled_ids: set[str] = set()  # every scheduled status id ever given out
        self._serial = itertools.count(1)

    def now(self) -> float:
        return time.time() + self.clock_offset

    def new_id(self, prefix: str, taken: Container[str]) -> str:
        return next(i for n in self._serial if (i := f"{prefix}{n}") not in taken)

    def site_groups(self, site: dict) -> list[dict]:
        """The site's own groups and its org's global groups."""
        return [
            g
            for g in self.groups.values()
            if g["orgId"] == site["orgId"] and (g["isGlobal"] or g["siteId"] == site["id"])
        ]

    def group(self, site: dict, group_id: str) -> dict:
        group = next((g for g in self.site_groups(site) if g["id"] == group_id), None)
        if group is None:
            raise _not_found("group", group_id)
        return group

    def person(self, site: dict, person_id: str) -> Person:
        person = self.persons.get(person_id)
        if person is None or (person.org_id, person.site_id) != (site["orgId"], site["id"]):
            raise _not_found("person", person_id)
        return person

    def add_person(self, person: Person) -> None:
        """Store a new person, or replace the one with its id (a seed), and index its email."""
        old = self.persons.get(person.id)
        self.persons[person.id] = person
        key = _email_key(person.email)
        if old is None:
            self._ids_by_email.setdefault(key, []).append(person.id)
        elif _email_key(old.email) != key:
            self._ids_by_email[_email_key(old.email)].remove(person.id)
            # The replacement keeps the old person's place in ``persons``, and so in listings.
            self._ids_by_email[key] = [
                i for i, p in self.persons.items() if _email_key(p.email) == key
            ]

    def remove_person(self, person: Person) -> None:
        del self.persons[person.id]
        self._ids_by_email[_email_key(person.email)].remove(person.id)

    def persons_with_email(self, email: str) -> list[Person]:
        """The persons whose email matches case-insensitively, in the order of ``persons``."""
        return [self.persons[i] for i in self._ids_by_email.get(_email_key(email), ())]

    def schedule(
        self, person: Person, status: str, date: str, ident: str | None = None
    ) -> Scheduled:
        if ident is None:
            ident = self.new_id("ss_", self._scheduled_ids)
        entry = Scheduled(ident, status, date, _parse_utc(date))
        person.scheduled.append(entry)
        self._scheduled_ids.add(ident)
        return entry

    # seeding

    def seed(self, data: dict) -> None:
        """Merge ``data`` (the /_sandbox/seed body) into the world; same ids are replaced."""
        _require_keys(data, set(), {"apps", "orgs", "sites", "groups", "persons"}, "seed")
        data = copy.deepcopy(data)
        for app in data.get("apps", []):
            _require_keys(app, {"key", "secret", "orgs"}, set(), "seed.apps[]")
            self.apps[app["key"]] = app
        for org in data.get("orgs", []):
            _require_keys(org, {"id", "name"}, set(), "seed.orgs[]")
            self.orgs[org["id"]] = org
        for site in data.get("sites", []):
            _require_keys(site, {"id", "orgId", "name"}, set(), "seed.sites[]")
            self.sites[site["id"]] = site
        for group in data.get("groups", []):
            self._seed_group(group)
        for person in data.get("persons", []):
            self._seed_person(person)

    def _seed_group(self, group: dict) -> None:
        _require_keys(
            group, {"id", "orgId", "name", "tag"}, {"siteId", "isGlobal"}, "seed.groups[]"
        )
        is_global = bool(group.get("isGlobal", group.get("siteId") is None))
        group.update(isGlobal=is_global, siteId=None if is_global else group.get("siteId"))
        self.groups[group["id"]] = group

    def _seed_person(self, record: dict) -> None:
        optional = {"id", "tags", "details", "photo", "scheduledStatuses", "invitesSent", "resends"}
        _require_keys(record, {"orgId", "siteId", "name", "email"}, optional, "seed.persons[]")
        person = Person(
            id=record.get("id") or self.new_id("p_", self.persons),
            org_id=record["orgId"],
            site_id=record["siteId"],
            name=record["name"],
            email=record["email"],
            tags=list(record.get("tags", [])),
            details=dict(record.get("details", {})),
            photo=record.get("photo"),
            invites_sent=record.get("invitesSent", 0),
            resends=record.get("resends", 0),
        )
        self.add_person(person)
        for entry in record.get("scheduledStatuses", []):
            _require_keys(entry, {"status", "scheduledDate"}, {"id"}, "seed.scheduledStatuses[]")
            self.schedule(person, entry["status"], entry["scheduledDate"], entry.get("id"))

    def view(self) -> dict:
        now = self.now()
        return {
            "now": now,
            "clock_offset": self.clock_offset,
            "apps": [{"key": a["key"], "orgs": list(a["orgs"])} for a in self.apps.values()],
            "orgs": copy.deepcopy(list(self.orgs.values())),
            "sites": copy.deepcopy(list(self.sites.values())),
            "groups": copy.deepcopy(list(self.groups.values())),
            "persons": [p.full_view(now) for p in self.persons.values()],
        }


# --- the API routes --------------------------------------------------------------------------


@dataclass
class Call:
    """One authenticated API call, its scope already checked."""

    app: dict
    query: dict[str, str]
    body: Any
    params: dict[str, str]
    org: dict | None = None
    site: dict | None = None


def _group_view(group: dict) -> dict:
    return {k: group[k] for k in ("id", "name", "tag", "isGlobal")}


def _name_matches(record: dict, needle: str | None) -> bool:
    return needle is None or needle.lower() in record["name"].lower()


def list_orgs(world: World, call: Call) -> dict:
    visible = [world.orgs[o] for o in call.app["orgs"] if o in world.orgs]
    return {"items": [{"organization": {"id": o["id"], "name": o["name"]}} for o in visible]}


def list_sites(world: World, call: Call) -> dict:
    if call.query.get("sortBy", "name") != "name":
        raise ApiError(400, "invalid_parameter", "sortBy must be name")
    order = call.query.get("sortOrder", "asc")
    if order not in ("asc", "desc"):
        raise ApiError(400, "invalid_parameter", "sortOrder must be asc or desc")
    needle = _filter(call.query, "name")
    sites = [s for s in world.sites.values() if s["orgId"] == call.org["id"]]
    sites = [{"id": s["id"], "name": s["name"]} for s in sites if _name_matches(s, needle)]
    if "sortBy" in call.query or "sortOrder" in call.query:
        sites.sort(key=lambda s: s["name"].lower(), reverse=order == "desc")
    return _paginate(sites, call.query)


def _check_type(call: Call) -> None:
    if call.query["type"] != "persons":
        raise ApiError(400, "invalid_parameter", "type must be persons")


def list_groups(world: World, call: Call) -> dict:
    _check_type(call)
    needle = _filter(call.query, "name")
    groups = [_group_view(g) for g in world.site_groups(call.site) if _name_matches(g, needle)]
    return _paginate(groups, call.query)


def get_group(world: World, call: Call) -> dict:
    _check_type(call)
    return _group_view(world.group(call.site, call.params["group_id"]))


def list_persons(world: World, call: Call) -> dict:
    email = _filter(call.query, "email")
    site, now = call.site, world.now()
    candidates = world.persons.values() if email is None else world.persons_with_email(email)
    scope = (site["orgId"], site["id"])
    persons = [p for p in candidates if (p.org_id, p.site_id) == scope]
    page = _paginate(persons, call.query)
    return {"items": [p.view(now) for p in page["items"]]}  # only the page's persons


def get_person(world: World, call: Call) -> dict:
    return world.person(call.site, call.params["person_id"]).view(world.now())


def _check_import_item(item: Any, where: str, site_tags: set[str]) -> None:
    _require_keys(item, {"name", "email"}, {"photo", "tags", "details"}, where)
    _require_str(item["name"], f"{where}.name")
    _require_str(item["email"], f"{where}.email")
    if "@" not in item["email"]:
        raise _invalid(f"{where}.email must be an email address")
    if "photo" in item:
        _require_str(item["photo"], f"{where}.photo", max_chars=MAX_PHOTO_CHARS)
    _check_tags(item.get("tags", []), f"{where}.tags", site_tags)
    details = item.get("details", {})
    if not isinstance(details, dict) or not all(isinstance(v, str) for v in details.values()):
        raise _invalid(f"{where}.details must be an object of strings")


def _check_tags(tags: Any, where: str, site_tags: set[str]) -> None:
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise _invalid(f"{where} must be a list of strings")
    if unknown := sorted(set(tags) - site_tags):
        raise _invalid(f"{where}: {unknown[0]!r} is not the tag of a non-global group of this site")


def import_persons(world: World, call: Call) -> dict:
    body, site = call.body, call.site
    _require_keys(body, {"items"}, {"sendInvite", "tags"}, "body")
    site_tags = {g["tag"] for g in world.site_groups(site) if not g["isGlobal"]}
    if not isinstance(body.get("sendInvite", False), bool):
        raise _invalid("body.sendInvite must be true or false")
    _check_tags(body.get("tags", []), "body.tags", site_tags)
    if not isinstance(body["items"], list) or not body["items"]:
        raise _invalid("body.items must be a non-empty list")
    for i, item in enumerate(body["items"]):
        _check_import_item(item, f"body.items[{i}]", site_tags)
    created = [_create_person(world, site, item, body) for item in body["items"]]
    return {"items": [p.view(world.now()) for p in created]}


def _create_person(world: World, site: dict, item: dict, body: dict) -> Person:
    tags = list(dict.fromkeys(item.get("tags", []) + body.get("tags", [])))
    person = Person(
        id=world.new_id("p_", world.persons),
        org_id=site["orgId"],
        site_id=site["id"],
        name=item["name"],
        email=item["email"],
        tags=tags,
        details=dict(item.get("details", {})),
        photo=item.get("photo"),
        invites_sent=1 if body.get("sendInvite") else 0,
        created_at=world.now(),
    )
    world.add_person(person)
    return person


def _membership(world: World, call: Call) -> tuple[dict, Person]:
    group = world.group(call.site, call.params["group_id"])
    person = world.person(call.site, call.params["person_id"])
    if group["isGlobal"]:
        raise ApiError(400, "global_group", f"group {group['id']} is global and cannot be assigned")
    return group, person


def add_to_group(world: World, call: Call) -> dict:
    group, person = _membership(world, call)
    if group["tag"] not in person.tags:
        person.tags.append(group["tag"])
    return {}


def remove_from_group(world: World, call: Call) -> dict:
    group, person = _membership(world, call)
    person.tags = [t for t in person.tags if t != group["tag"]]
    return {}


def delete_person(world: World, call: Call) -> dict:
    person = world.person(call.site, call.params["person_id"])
    world.remove_person(person)
    return {}


def change_person(world: World, call: Call) -> dict:
    """PATCH: the fields given replace the person's (`photo: null` removes the photo)."""
    person, body = world.person(call.site, call.params["person_id"]), call.body
    _require_keys(body, set(), {"name", "email", "photo", "details"}, "body")
    for key in ("name", "email"):
        if key in body:
            _require_str(body[key], f"body.{key}")
    if "photo" in body and body["photo"] is not None:
        _require_str(body["photo"], "body.photo", max_chars=MAX_PHOTO_CHARS)
    details = body.get("details", person.details)
    if not isinstance(details, dict) or not all(isinstance(v, str) for v in details.values()):
        raise _invalid("body.details must be an object of strings")
    changed = Person(**{**person.__dict__, **body, "details": dict(details)})
    world.add_person(changed)  # re-indexes a changed email
    return changed.view(world.now())


def resend_invite(world: World, call: Call) -> dict:
    world.person(call.site, call.params["person_id"]).resends += 1
    return {}


def schedule_status(world: World, call: Call) -> dict:
    person = world.person(call.site, call.params["person_id"])
    body = call.body
    _require_keys(body, {"status", "scheduledDate"}, set(), "body")
    if body["status"] not in STATUSES:
        raise _invalid("status must be active or suspended")
    if _parse_utc(body["scheduledDate"]) <= world.now():
        raise _invalid(FUTURE_DATE_RULE)
    return world.schedule(person, body["status"], body["scheduledDate"]).view()


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str
    handler: Callable[[World, Call], dict]
    scope: str = "site"  # "none", "org" (orgId) or "site" (orgId and siteId)
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    body: bool = False

    def match(self, path: str) -> dict[str, str] | None:
        found = re.fullmatch(self.pattern, path)
        return None if found is None else {k: unquote(v) for k, v in found.groupdict().items()}


_ID = "[^/]+"
_PAGED = ("filter", "page", "limit")
_SORTED = (*_PAGED, "sortBy", "sortOrder")
_GROUP = rf"/manage/groups/(?P<group_id>{_ID})"
_PERSON = rf"/manage/persons/(?P<person_id>{_ID})"
_MEMBERSHIP = rf"{_GROUP}/persons/(?P<person_id>{_ID})"
_SCHEDULE = rf"/mobile-access/persons/(?P<person_id>{_ID})/scheduled-statuses"

ROUTES = (
    Route("GET", "/v1/orgs", list_orgs, scope="none"),
    Route("GET", "/manage/sites", list_sites, scope="org", optional=_SORTED),
    Route("GET", "/manage/groups", list_groups, required=("type",), optional=_PAGED),
    Route("GET", _GROUP, get_group, required=("type",)),
    Route("GET", "/manage/persons", list_persons, optional=_PAGED),
    Route("POST", "/manage/persons/import", import_persons, body=True),
    Route("GET", _PERSON, get_person),
    Route("DELETE", _PERSON, delete_person),
    Route("PATCH", _PERSON, change_person, body=True),
    Route("POST", _MEMBERSHIP, add_to_group),
    Route("DELETE", _MEMBERSHIP, remove_from_group),
    Route("POST", rf"{_PERSON}/resend", resend_invite),
    Route("POST", _SCHEDULE, schedule_status, body=True),
)


def _route(method: str, path: str) -> tuple[Route, dict[str, str]]:
    matches = [(r, params) for r in ROUTES if (params := r.match(path)) is not None]
    for route, params in matches:
        if route.method == method:
            return route, params
    if matches:
        raise ApiError(405, "method_not_allowed", f"{method} is not allowed on {path}")
    raise _not_found("path", path)


def _authenticate(world: World, header: str | None) -> dict:
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic":
        raise Unauthorized("missing client credentials")
    try:
        key, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise Unauthorized("malformed client credentials") from exc
    app = world.apps.get(key)
    if app is None:
        raise Unauthorized("unknown client")
    if secret != app["secret"]:
        raise Unauthorized("bad client secret")
    return app


def _check_params(route: Route, query: dict) -> None:
    scope = {"none": (), "org": ("orgId",), "site": ("orgId", "siteId")}[route.scope]
    required = scope + route.required
    if missing := [name for name in required if not query.get(name)]:
        raise ApiError(400, "missing_parameter", f"the query parameter {missing[0]} is required")
    if unknown := sorted(set(query) - set(required) - set(route.optional)):
        raise ApiError(400, "invalid_parameter", f"unknown query parameter {unknown[0]}")


def _scope(world: World, app: dict, query: dict) -> tuple[dict | None, dict | None]:
    """The org and site named by the query, checked against what the app may see."""
    org_id, site_id = query.get("orgId"), query.get("siteId")
    if org_id is None:
        return None, None
    if org_id not in app["orgs"] or org_id not in world.orgs:
        raise _not_found("organization", org_id)
    site = world.sites.get(site_id) if site_id else None
    if site_id and (site is None or site["orgId"] != org_id):
        raise _not_found("site", site_id)
    return world.orgs[org_id], site


# --- faults ----------------------------------------------------------------------------------


_ERROR_STATUSES = {s.value for s in HTTPStatus if s >= 400}


@dataclass
class Fault:
    """One injected fault; see ProxySandbox.add_fault."""

    latency_ms: int = 0
    status: int | None = None
    retry_after: int = 1
    share: float = 1.0
    count: int | None = None
    seconds: float | None = None
    drop: bool = False
    hang: bool = False
    late_ms: int = 0
    garble: bool = False
    path_prefix: str = ""
    until: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not (
            self.latency_ms or self.status or self.drop or self.hang or self.late_ms or self.garble
        ):
            raise _invalid("a fault needs latency_ms, status, drop, hang, late_ms or garble")
        if self.status is not None and self.status not in _ERROR_STATUSES:
            raise _invalid("status must be an HTTP error status (400-599)")
        if self.count is not None and not (isinstance(self.count, int) and self.count > 0):
            raise _invalid("count must be a positive integer")
        for name in ("latency_ms", "retry_after", "share", "seconds", "late_ms"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and value >= 0):
                raise _invalid(f"{name} must be a number, zero or more")
        if self.share > 1:
            raise _invalid("share must be between 0 and 1")
        if self.seconds is not None:
            self.until = time.monotonic() + self.seconds

    def live(self, now: float) -> bool:
        return self.count != 0 and (self.until is None or now < self.until)

    def take(self, path: str) -> bool:
        """Whether this call is hit; a matching call uses up one of ``count`` either way."""
        if not path.startswith(self.path_prefix):
            return False
        if self.count is not None:
            self.count -= 1
        return random.random() < self.share

    def view(self) -> dict:
        answer = asdict(self)
        until = answer.pop("until")
        answer["seconds_left"] = None if until is None else max(0.0, until - time.monotonic())
        return answer

    def reply(self) -> Reply:
        phrase = HTTPStatus(self.status).phrase
        if self.status >= 500:
            html = f"<html><body><h1>{self.status} {phrase}</h1></body></html>"
            return Reply(self.status, html.encode(), "text/html")
        if self.status == 401:
            return Reply.error(Unauthorized("injected fault"))
        if self.status == 429:
            headers = {"Retry-After": str(self.retry_after)}
            return Reply.error(ApiError(429, "rate_limited", "too many requests", headers))
        code = re.sub(r"\W+", "_", phrase.lower())
        return Reply.error(ApiError(self.status, code, f"injected fault: {phrase}"))


# --- the server ------------------------------------------------------------------------------


class ProxySandbox:
    """The sandbox: state under one lock, the HTTP server, and an in-process control API."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # wakes hung calls
        self._world = World()
        self._faults: list[Fault] = []
        self._fault_epoch = 0
        self._calls: collections.deque = collections.deque(maxlen=CALL_LOG_SIZE)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._late: list[threading.Timer] = []  # calls still to be carried out (late_ms)

    # lifecycle

    def start(self, host: str = "127.0.0.1", port: int = 0) -> "ProxySandbox":
        self._stopping = False
        self._server = _Server((host, port), _Handler)
        self._server.sandbox = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        """Stop serving; calls that hang on a fault are dropped rather than waited for."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    # control API

    def reset(self) -> None:
        with self._changed:
            self._world = World()
            self._calls.clear()
            self._drop_faults()
            late, self._late = self._late, []
        for timer in late:  # a call held back for the old world never lands in the new one
            timer.cancel()

    def seed(self, data: dict) -> None:
        with self._lock:
            self._world.seed(data)

    def state(self) -> dict:
        with self._lock:
            view = self._world.view()
            view["calls"] = list(self._calls)
            view["faults"] = [f.view() for f in self._faults]
        return view

    def now(self) -> float:
        """The sandbox's clock (epoch seconds): real time plus the offset set by `set_clock`."""
        with self._lock:
            return self._world.now()

    def set_clock(self, offset_seconds: float | None = None, now: float | None = None) -> dict:
        """Set the sandbox clock's offset from real time, or the sandbox's now (epoch seconds)."""
        if (offset_seconds is None) == (now is None):
            raise _invalid("give exactly one of offset_seconds and now")
        with self._lock:
            world = self._world
            world.clock_offset = offset_seconds if now is None else now - time.time()
            return {"now": world.now(), "clock_offset": world.clock_offset}

    def add_fault(self, **kwargs: Any) -> dict:
        """Inject a fault into API calls (never /_sandbox/ ones); several may be active.

        latency_ms: delay each hit call; status: answer it with this error status (429 gets
        Retry-After: retry_after); drop: close the connection unanswered; hang: hold the call
        until the faults are cleared (then answer it) or the sandbox stops (then drop it).
        late_ms: drop the connection at once, as a client that gave up sees it, and carry the
        call out that much later (a request Proxy processes after the client's timeout);
        garble: carry the call out and answer 200 with a body that is not JSON.
        share: the fraction of calls hit; count: only the next N matching calls; seconds: only
        for this long; path_prefix: only calls whose path starts with it.
        """
        try:
            fault = Fault(**kwargs)
        except TypeError as exc:
            raise _invalid(f"unknown fault option: {exc}") from exc
        with self._lock:
            self._faults.append(fault)
        return fault.view()

    def clear_faults(self) -> None:
        with self._changed:
            self._drop_faults()

    def land_late_calls(self, timeout: float = 10.0) -> None:
        """Wait until every call a `late_ms` fault held back has been carried out (a test
        settles what Proxy does after the client gave up before it checks the outcome)."""
        with self._lock:
            late, self._late = self._late, []
        for timer in late:
            timer.join(timeout)

    def persons(self, email: str | None = None) -> list[dict]:
        """Persons of every org and site as in state(), optionally only those with ``email``."""
        with self._lock:
            world = self._world
            chosen = world.persons.values() if email is None else world.persons_with_email(email)
            now = world.now()
            return [p.full_view(now) for p in chosen]

    def _drop_faults(self) -> None:
        self._faults.clear()
        self._fault_epoch += 1
        self._changed.notify_all()

    # serving

    def respond(self, method: str, target: str, headers: Any, raw_body: bytes) -> Reply:
        """The reply to one HTTP request, or DROP."""
        path, _, query_string = target.partition("?")
        try:
            if path.startswith(CONTROL_PREFIX):
                return self._control(method, path, raw_body)
            return self._api(method, path, query_string, headers, raw_body)
        except ApiError as exc:
            return Reply.error(exc)
        except Exception as exc:
            log.exception("sandbox bug on %s %s", method, target)
            return Reply.json(500, {"error": "sandbox_bug", "error_description": repr(exc)})

    def _control(self, method: str, path: str, raw_body: bytes) -> Reply:
        action = CONTROL_ROUTES.get((method, path))
        if action is None:
            raise _not_found("control route", f"{method} {path}")
        body = _parse_json(raw_body) if raw_body else {}  # any content type, for curl
        if not isinstance(body, dict):
            raise _invalid("the body must be a JSON object")
        return Reply.json(200, action(self, body))

    def _api(self, method: str, path: str, query_string: str, headers: Any, raw: bytes) -> Reply:
        with self._lock:
            epoch, moment = self._fault_epoch, time.monotonic()
            self._faults = [f for f in self._faults if f.live(moment)]
            hits = [f for f in self._faults if f.take(path)]
        pairs = parse_qsl(query_string, keep_blank_values=True)  # parsed once: served and logged
        late = max((f.late_ms for f in hits), default=0)
        if late:
            later = threading.Timer(late / 1000, self._serve, (method, path, pairs, headers, raw))
            later.daemon = True
            with self._lock:
                self._late = [t for t in self._late if t.is_alive()] + [later]
            later.start()
            self._record(method, path, dict(pairs), None)
            return DROP
        reply = self._suffer(hits, epoch) or self._serve(method, path, pairs, headers, raw)
        if any(f.garble for f in hits) and reply.status == 200:
            reply = Reply(200, b"<html><body>upstream gateway</body></html>", "text/html")
        self._record(method, path, dict(pairs), None if reply is DROP else reply.status)
        return reply

    def _serve(self, method: str, path: str, pairs: list, headers: Any, raw: bytes) -> Reply:
        try:
            return Reply.json(200, self._serve_api(method, path, pairs, headers, raw))
        except ApiError as exc:
            return Reply.error(exc)

    def _record(self, method: str, path: str, query: dict, status: int | None) -> None:
        with self._lock:
            entry = {"method": method, "path": path, "query": query, "status": status}
            self._calls.append({**entry, "at": self._world.now()})

    def _suffer(self, hits: list[Fault], epoch: int) -> Reply | None:
        """Apply the faults that hit a call: the reply they force, or None to answer normally."""
        delay = sum(f.latency_ms for f in hits) / 1000
        if delay:
            time.sleep(delay)
        if any(f.hang for f in hits):
            with self._changed:
                self._changed.wait_for(lambda: self._fault_epoch != epoch or self._stopping)
                if self._stopping:
                    return DROP
        if any(f.drop for f in hits):
            return DROP
        failing = next((f for f in hits if f.status), None)
        return None if failing is None else failing.reply()

    def _serve_api(self, method: str, path: str, pairs: list, headers: Any, raw: bytes):
        route, params = _route(method, path)
        with self._lock:
            world = self._world
            app = _authenticate(world, headers.get("Authorization"))
            query = _parse_query(pairs)
            _check_params(route, query)
            body = _json_body(raw, headers.get("Content-Type", ""))
            if route.body and body is None:
                raise _invalid("a JSON body is required")
            org, site = _scope(world, app, query)
            return route.handler(world, Call(app, query, body, params, org, site))


def _kwargs(body: dict, allowed: set[str]) -> dict:
    if unknown := sorted(set(body) - allowed):
        raise _invalid(f"unknown option {unknown[0]}")
    return body


def _control_reset(sandbox: ProxySandbox, body: dict) -> dict:
    sandbox.reset()
    return {"ok": True}


def _control_seed(sandbox: ProxySandbox, body: dict) -> dict:
    sandbox.seed(body)
    return {"ok": True}


def _control_state(sandbox: ProxySandbox, body: dict) -> dict:
    return sandbox.state()


def _control_clock(sandbox: ProxySandbox, body: dict) -> dict:
    return {"ok": True, **sandbox.set_clock(**_kwargs(body, {"offset_seconds", "now"}))}


def _control_add_fault(sandbox: ProxySandbox, body: dict) -> dict:
    return {"ok": True, "fault": sandbox.add_fault(**body)}


def _control_clear_faults(sandbox: ProxySandbox, body: dict) -> dict:
    sandbox.clear_faults()
    return {"ok": True}


CONTROL_ROUTES: dict[tuple[str, str], Callable[[ProxySandbox, dict], dict]] = {
    ("POST", "/_sandbox/reset"): _control_reset,
    ("POST", "/_sandbox/seed"): _control_seed,
    ("GET", "/_sandbox/state"): _control_state,
    ("POST", "/_sandbox/clock"): _control_clock,
    ("POST", "/_sandbox/faults"): _control_add_fault,
    ("DELETE", "/_sandbox/faults"): _control_clear_faults,
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a hung or idle keep-alive call must never delay stop()
    sandbox: ProxySandbox

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can take seconds offline.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body leave in separate writes; with Nagle's algorithm the body then waits
    # for the client's delayed ACK, adding ~40 ms to every call on a keep-alive connection.
    disable_nagle_algorithm = True
    server_version = "ProxySandbox/1"
    server: _Server

    def do_GET(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        reply = self.server.sandbox.respond(self.command, self.path, self.headers, raw)
        if reply is DROP:
            self.close_connection = True
            return
        self.send_response(reply.status)
        for name, value in {**reply.headers, "Content-Type": reply.content_type}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    do_POST = do_DELETE = do_PUT = do_PATCH = do_GET

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The `Date` header, from the sandbox's own (possibly offset) clock, as Proxy's."""
        return email.utils.formatdate(
            self.server.sandbox.now() if timestamp is None else timestamp, usegmt=True
        )

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


# --- command line ----------------------------------------------------------------------------


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT, e.g. 127.0.0.1:8081")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    """Serve the sandbox until SIGTERM or SIGINT, then exit 0."""
    parser = argparse.ArgumentParser(prog="sandbox.proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=_listen_address, default=("127.0.0.1", 8081),
                        help="HOST:PORT to serve on; port 0 picks a free one")  # fmt: skip
    parser.add_argument("--seed", type=Path, help="a JSON file in the /_sandbox/seed format")
    parser.add_argument("--demo-seed", action="store_true", help="seed DEFAULT_SEED first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    sandbox = ProxySandbox()
    if args.demo_seed:
        sandbox.seed(DEFAULT_SEED)
    if args.seed:
        sandbox.seed(json.loads(args.seed.read_text()))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    sandbox.start(*args.listen)
    log.info("Proxy sandbox listening on %s", sandbox.url)
    try:
        stop.wait()
    finally:
        sandbox.stop()
    log.info("Proxy sandbox stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
