"""Uninstalling the plugin for one install: its access ends, its Proxy secret goes.

Envoy's `plugin_uninstalled` event (or `envoy-proxy uninstall` when Envoy cannot reach us)
ends every live grant of the install through the normal ending path, so that Proxy is made
to match, cancels the ones never issued, and refuses the install's later events. The stored
Proxy secret is needed by those endings, so it is erased when the last of them is done (at
once when there is none).
"""

from peewee import fn

from daemon.access import audit, grants, jobs
from daemon.rules.request import Answer
from db import LIVE_STATES, Grant, Install, ProxyAccount, install_or_none

EVENT = "plugin_uninstalled"
WHY = "uninstall"


def uninstall(install_id: str, now: int) -> dict | None:
    """End the install's access and mark it uninstalled; call inside a transaction.

    Returns what was done (`ending`: revoke action ids, `cancelled`: grant ids), or None when
    nothing is stored for this install."""
    if install_or_none(install_id) is None:
        return None
    first_time = fn.COALESCE(Install.uninstalled_at, now)  # a second uninstall keeps the first
    Install.update(uninstalled_at=first_time, updated_at=now).where(
        Install.install_id == install_id
    ).execute()
    ending, cancelled = [], []
    live = Grant.select().where((Grant.install_id == install_id) & Grant.state.in_(LIVE_STATES))
    for grant in list(live):
        revoke_id = grants.end_at(grant, now, now)
        audit.closing(grant, WHY)
        jobs.settle(grant.id, now)
        (ending if revoke_id is not None else cancelled).append(revoke_id or grant.id)
    summary = {"ending": ending, "cancelled": cancelled}
    audit.record(
        audit.UNINSTALLED,
        install_id=install_id,
        details={"grants_ending": len(ending), "grants_cancelled": len(cancelled)},
    )
    erase_secret_when_done(install_id)
    return summary


def erase_secret_when_done(install_id: str) -> None:
    """Erase an uninstalled install's Proxy secrets (its own and those kept for orgs it left)
    once no grant of it needs Proxy any more; call inside the transaction that ends its
    grants."""
    install = (
        Install.select(Install.uninstalled_at, Install.proxy_secret)
        .where(Install.install_id == install_id)
        .first()
    )
    if install is None or install.uninstalled_at is None or install.proxy_secret is None:
        return
    live = (Grant.install_id == install_id) & Grant.state.in_(LIVE_STATES)
    if Grant.select(Grant.id).where(live).exists():
        return
    Install.update(proxy_secret=None).where(Install.install_id == install_id).execute()
    ProxyAccount.delete().where(ProxyAccount.install_id == install_id).execute()  # left orgs'
    audit.record(audit.SECRET_ERASED, install_id=install_id, reason=WHY)


def on_event(request, now: int) -> Answer:
    """Envoy's `plugin_uninstalled`: uninstall, and say what it did (the job shows it)."""
    summary = uninstall(request.install_id, now)
    if summary is None:
        return Answer.message(200, "nothing was stored for this install")
    return Answer.message(200, describe(summary))


def describe(summary: dict) -> str:
    return (
        f"uninstalled: {len(summary['ending'])} access(es) ending in Proxy, "
        f"{len(summary['cancelled'])} not yet issued cancelled"
    )
