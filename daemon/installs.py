"""Install records: who the install is (company, location, zone) and its latest config."""

from daemon.envoy_request import EnvoyRequest
from db import Install


def remember_install(request: EnvoyRequest, now: int, *, event: bool = False) -> Install:
    """Create or refresh the install row from a request's meta; call inside a transaction.

    Events carry the whole saved config and replace the snapshot; setup routes carry only the
    steps so far, which the setup code merges itself.
    """
    install, _ = Install.get_or_create(
        install_id=request.install_id, defaults={"created_at": now, "updated_at": now}
    )
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
    Install.update(**changes).where(Install.install_id == install.install_id).execute()
    return Install.get_by_id(install.install_id)
