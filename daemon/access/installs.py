"""Install records: who the install is (company, location, zone) and its latest config."""

from daemon.rules.request import EnvoyRequest
from db import Install, install_by_id, install_or_none


def install_changes(request: EnvoyRequest, now: int, *, event: bool = False) -> dict:
    """The columns a request's meta sets on its install row (blank values change nothing).

    Events carry the whole saved config and replace the snapshot; setup routes carry only the
    steps so far, which the setup code merges itself.
    """
    changes = {"updated_at": now}
    for field, value in (
        ("plugin_id", request.plugin_id),
        ("company_id", request.company_id),
        ("company_name", request.company_name),
        ("location_id", request.location_id),
        ("location_name", request.location_name),
        ("timezone", request.timezone),
    ):
        if value:
            changes[field] = value
    if event:
        changes["last_event_at"] = now
        if request.config:
            changes["config"] = request.config
    return changes


LAST_EVENT_RESOLUTION_SECONDS = 60


def install_for_event(request: EnvoyRequest, now: int) -> Install:
    """The install row an event is planned with, written only when the event's meta says
    something new, or its "last event" time is a minute old: rewriting the row on every
    event cost a write and a read-back per event for nothing (call inside a transaction)."""
    changes = install_changes(request, now, event=True)
    install = install_or_none(request.install_id)
    if install is not None and not _news(install, changes, now):
        return install
    return save_install(request.install_id, changes, now)


def _news(install: Install, changes: dict, now: int) -> bool:
    stale = install.last_event_at is None or now - install.last_event_at >= (
        LAST_EVENT_RESOLUTION_SECONDS
    )
    timestamps = ("updated_at", "last_event_at")
    return stale or any(
        getattr(install, name) != value for name, value in changes.items() if name not in timestamps
    )


def remember_install(request: EnvoyRequest, now: int, *, event: bool = False) -> Install:
    """Create or refresh the install row from a request's meta; call inside a transaction."""
    return save_install(request.install_id, install_changes(request, now, event=event), now)


def save_install(install_id: str, changes: dict, now: int) -> Install:
    """Upsert the install row with `changes` (one statement) and read it back.

    `changes` names `updated_at` (as `install_changes` does): a new row gets every column
    that has a default from here.
    """
    Install.insert(install_id=install_id, created_at=now, **{"config": {}, **changes}).on_conflict(
        conflict_target=[Install.install_id],
        update={getattr(Install, name): value for name, value in changes.items()},
    ).execute()
    return install_by_id(install_id)
