"""What the daemon reads from an Envoy request body, normalised once at the edge.

IDs may arrive as numbers or strings (normalised to str); the time zone may sit under
`timezone` or `time-zone`, of the location or else of `meta.zone`; events carry the
install's config in `config` (older bodies also carry a stale copy as `env`, which we
ignore).
"""

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


class BadRequest(ValueError):
    """The body lacks something we need: answered 400 with this message, nothing stored."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def storable_text(text: str) -> bool:
    """Whether `text` is made of Unicode scalar values only. A lone surrogate (what JSON's
    `"\\ud800"` decodes to) cannot be encoded as UTF-8: SQLite, logs and Proxy raise on it."""
    return _SURROGATE.search(text) is None


def as_id(value: Any) -> str | None:
    """Envoy ids as strings; None, "" and non-scalars become None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | str) and str(value).strip():
        return str(value).strip()
    return None


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class EnvoyRequest:
    meta: dict
    payload: Any
    install_id: str
    config: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    raw: str | None = field(default=None, repr=False)  # the body as received, for the inbox

    @classmethod
    def from_body(cls, body: dict, raw: str | None = None) -> "EnvoyRequest":
        meta = body.get("meta")
        if not isinstance(meta, dict):
            raise BadRequest("the body has no `meta` object")
        install_id = as_id(meta.get("install_id"))
        if install_id is None:
            raise BadRequest("`meta.install_id` is missing")
        return cls(
            meta=meta,
            payload=body.get("payload"),
            install_id=install_id,
            config=_dict(meta.get("config")),
            params=_dict(meta.get("params")),
            raw=raw,
        )

    @cached_property  # read on every step of an event's way in
    def event(self) -> str | None:
        event = self.meta.get("event")
        return event if isinstance(event, str) else None

    @cached_property
    def job_id(self) -> str | None:
        return as_id(_dict(self.meta.get("job")).get("id"))

    @property
    def location(self) -> dict:
        return _dict(self.meta.get("location"))

    @property
    def location_id(self) -> str | None:
        return as_id(self.location.get("id")) or as_id(self.params.get("location_id"))

    @property
    def location_name(self) -> str | None:
        name = _dict(self.location.get("attributes")).get("name")
        return name if isinstance(name, str) else None

    @property
    def timezone(self) -> str | None:
        """The location's IANA zone, else its zone's (`meta.zone`, as Envoy's SDK sends it)."""
        for holder in (self.location, _dict(self.meta.get("zone"))):
            attributes = _dict(holder.get("attributes"))
            zone = attributes.get("timezone") or attributes.get("time-zone")
            if isinstance(zone, str) and zone:
                return zone
        return None

    @property
    def company_id(self) -> str | None:
        return as_id(_dict(self.meta.get("company")).get("id"))

    @property
    def company_name(self) -> str | None:
        name = _dict(_dict(self.meta.get("company")).get("attributes")).get("name")
        return name if isinstance(name, str) else None

    @property
    def plugin_id(self) -> str | None:
        return as_id(self.meta.get("plugin_id"))

    @property
    def user_token(self) -> str | None:
        """The installer's token for Envoy's user API, else the dashboard user's."""
        token = _dict(self.meta.get("auth")).get("access_token")
        if isinstance(token, str) and token:
            return token
        forwarded = self.meta.get("forwarded_bearer_token")
        return forwarded if isinstance(forwarded, str) and forwarded else None


@dataclass(frozen=True)
class Answer:
    """What a domain function answers; the web layer turns it into an HTTP response."""

    status: int
    body: Any

    @classmethod
    def message(cls, status: int, message: str, **extra: Any) -> "Answer":
        return cls(status, {"message": message, **extra})
