"""Envoy's entry and invite payloads, read into the few facts access depends on."""

import re
from dataclasses import dataclass

from daemon.rules.request import BadRequest, as_id, storable_text
from daemon.rules.settings import as_bool
from daemon.rules.times import parse_instant

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_EMAIL = 254  # RFC 5321's limit for a path, the address included
MAX_PHOTO_URL = 255  # Proxy refuses photo URLs of 256 characters or more
# Envoy's `approval-status.status` words (not all confirmed: ENVOY_PROTOCOL.md §3), normalised.
APPROVED = frozenset({"approved", "auto_approved", "accepted"})
DENIED = frozenset({"denied", "rejected", "blocked"})


def usable_email(value) -> str | None:
    """The address, lower-cased, if it looks deliverable. Longer than RFC 5321 allows is
    not (the cap also keeps `_EMAIL`'s backtracking short: it is quadratic in the length),
    nor one that cannot be stored (Envoy's user API is read with Python's json too)."""
    text = value.strip() if isinstance(value, str) else ""
    if len(text) <= MAX_EMAIL and _EMAIL.match(text) and storable_text(text):
        return text.lower()
    return None


def approval_of(value) -> str | None:
    """An entry's `approval-status` (`{status, auto-approved, report, …}`) read as
    "approved", "review" or "denied"; None when the entry carries none (no approval asked).

    Fails closed: a status we do not recognise, or a value we cannot read, is "review"."""
    if value is None:
        return None
    status = value.get("status") if isinstance(value, dict) else value
    word = status.strip().lower() if isinstance(status, str) else ""
    word = word.replace("-", "_").replace(" ", "_")
    auto = isinstance(value, dict) and value.get("auto-approved") is True
    if word in APPROVED or (auto and not word):
        return "approved"
    return "denied" if word in DENIED else "review"


def _relationship_id(relationships: dict, name: str) -> str | None:
    related = relationships.get(name)
    data = related.get("data") if isinstance(related, dict) else None
    return as_id(data.get("id")) if isinstance(data, dict) else None


def _text(attributes: dict, key: str) -> str | None:
    value = attributes.get(key)
    return value.strip() if isinstance(value, str) and value.strip() else None


@dataclass(frozen=True)
class Visit:
    kind: str  # "entries" | "invites"
    id: str
    full_name: str
    email: str | None
    phone: str | None
    photo_url: str | None
    flow_id: str | None
    flow_name: str | None
    signed_in_at: int | None = None
    signed_out_at: int | None = None
    expected_arrival: int | None = None
    invite_id: str | None = None
    entry_id: str | None = None
    employee_id: str | None = None
    employee_screening: bool = False
    approval: str | None = None  # approval_of(`approval-status`)

    @property
    def subject(self) -> str:
        return f"{self.kind}:{self.id}"

    @classmethod
    def from_payload(cls, payload) -> "Visit":
        if not isinstance(payload, dict):
            raise BadRequest("the body has no `payload` object")
        kind = payload.get("type")
        if kind not in ("entries", "invites"):
            raise BadRequest("`payload.type` must be `entries` or `invites`")
        visit_id = as_id(payload.get("id"))
        if visit_id is None:
            raise BadRequest("`payload.id` is missing")
        attributes = payload.get("attributes")
        attributes = attributes if isinstance(attributes, dict) else {}
        relationships = payload.get("relationships")
        relationships = relationships if isinstance(relationships, dict) else {}
        photo = _photo(attributes)
        return cls(
            kind=kind,
            id=visit_id,
            full_name=_text(attributes, "full-name") or "Visitor",
            email=usable_email(attributes.get("email")),
            phone=_text(attributes, "phone-number"),
            photo_url=photo if photo and len(photo) <= MAX_PHOTO_URL else None,
            flow_id=as_id(attributes.get("flow-id")) or _relationship_id(relationships, "flow"),
            flow_name=_text(attributes, "flow-name"),
            signed_in_at=parse_instant(attributes.get("signed-in-at")),
            signed_out_at=parse_instant(attributes.get("signed-out-at")),
            expected_arrival=parse_instant(attributes.get("expected-arrival-time")),
            invite_id=_relationship_id(relationships, "invite"),
            entry_id=_relationship_id(relationships, "entry"),
            employee_id=_relationship_id(relationships, "employee"),
            employee_screening=as_bool(attributes.get("employee-screening-flow")),
            approval=approval_of(attributes.get("approval-status")),
        )

    @property
    def flow_label(self) -> str:
        return f"{self.flow_name!r} ({self.flow_id})" if self.flow_name else repr(self.flow_id)


def _photo(attributes: dict) -> str | None:
    thumbnails = attributes.get("thumbnails")
    if isinstance(thumbnails, dict):
        for size in ("original", "large", "small"):
            if isinstance(thumbnails.get(size), str) and thumbnails[size]:
                return thumbnails[size]
    return _text(attributes, "photo-url")
