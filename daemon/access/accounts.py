"""The Proxy accounts of orgs an install has left (step 1 changed its org).

Access given in the old org must still be ended there, with that org's credentials: they are
kept (`ProxyAccount`) while a live grant of that org remains, and dropped after. Grants carry
their org (`Grant.proxy_org_id`), so each is issued and ended where it belongs. The old org's
site and mapping mean nothing in the new one: step 1 clears them (`ORG_SCOPED_KEYS`) and the
admin is told to run those steps again.
"""

from daemon.rules.settings import Settings
from db import LIVE_STATES, Grant, Install, ProxyAccount

# Config keys that name things of one org: null in step 1's answer when the org changes, so
# that Envoy drops them too.
ORG_SCOPED_KEYS = ("proxy_site_id", "proxy_site_name", "visitor_mapping")
# How the install's `last_error` begins while the admin still has steps to run again.
ORG_CHANGED = "Proxy organization changed"


def org_left(install: Install | None, org_id: str) -> str | None:
    """The install's current org when it is not `org_id`, else None: the org it leaves if
    step 1 now names `org_id`, or the org it is in now for a grant of an org it has left."""
    if install is None:
        return None
    current = Settings.lenient(install.config or {}).proxy_org_id
    return current if current and current != org_id else None


def keep_credentials(install: Install, now: int) -> None:
    """Keep the install's current credentials for the org it is leaving; call in the
    transaction that saves the new ones."""
    settings = Settings.lenient(install.config or {})
    if not (settings.proxy_org_id and settings.proxy_app_key and install.proxy_secret):
        return
    kept = {
        "app_key": settings.proxy_app_key,
        "secret": install.proxy_secret,
        "site_id": settings.proxy_site_id,
        "retired_at": now,
    }
    ProxyAccount.insert(
        install_id=install.install_id, org_id=settings.proxy_org_id, **kept
    ).on_conflict(
        conflict_target=[ProxyAccount.install_id, ProxyAccount.org_id],
        update={getattr(ProxyAccount, name): value for name, value in kept.items()},
    ).execute()


def release_unused(install_id: str, current_org: str | None) -> int:
    """Drop the kept credentials that no live grant needs (those of `current_org`, the org the
    install is in now, are covered by its own); returns how many."""
    needed = Grant.select(Grant.proxy_org_id).where(
        (Grant.install_id == install_id)
        & Grant.state.in_(LIVE_STATES)
        & Grant.proxy_org_id.is_null(False)
    )
    unused = ProxyAccount.org_id.not_in(needed)
    if current_org:
        unused |= ProxyAccount.org_id == current_org
    return ProxyAccount.delete().where((ProxyAccount.install_id == install_id) & unused).execute()
