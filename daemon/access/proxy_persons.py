"""Removing from Proxy the persons this daemon created for visitors, once no visit needs them.

Only persons of ours are touched: the grant must not say the person existed before us, and the
person as Proxy has it must carry our marker (`details.envoyId` / `createdBy`). A person that
existed before us (an employee, anyone an admin made) is never deleted or changed. Where the
tenant cannot delete persons (an assumed endpoint, learnt once per org) the person's name,
email, photo and details are overwritten instead; where it can do neither, the person is
kept and the log names its id for an admin.
"""

import logging

from daemon.access.issuing import carries_our_marker
from daemon.proxy.client import ProxyClient
from db import Grant

log = logging.getLogger("envoy_proxy.retention")

ERASED_NAME = "Erased visitor"
MARKER_KEYS = ("envoyId", "createdBy")


def removable(grant: Grant) -> bool:
    """Whether the grant may have left a person of ours in Proxy to remove."""
    return (
        grant.kind == "visitor"
        and grant.proxy_person_id is not None
        and grant.person_ours is not False
    )


def remove_ours(client: ProxyClient, grant: Grant) -> dict[str, str]:
    """Remove the grant's person (and its twins, when an import may have left some) from
    Proxy: what became of each, by person id ("deleted", "anonymised", "gone", "not ours"
    or "kept"). Proxy errors are raised: the caller tries again later."""
    found = client.find_persons_by_email(grant.email) if grant.email else []
    persons = [
        p
        for p in found
        if p.get("id") == grant.proxy_person_id or (grant.twins_possible and carries_our_marker(p))
    ]
    if not any(p.get("id") == grant.proxy_person_id for p in persons):
        person = client.get_person(grant.proxy_person_id)  # its email may have changed
        if person is not None:
            persons.append(person)
    outcomes = {grant.proxy_person_id: "gone"}
    for person in persons:
        outcomes[person["id"]] = _remove(client, person, grant.email)
    return outcomes


def _remove(client: ProxyClient, person: dict, email: str | None) -> str:
    if not carries_our_marker(person):
        return "not ours"
    outcome = client.delete_person(person["id"], email)
    if outcome == "missing":
        details = person.get("details") or {}
        outcome = client.anonymise_person(
            person["id"],
            email,
            name=ERASED_NAME,
            placeholder_email=f"erased-{person['id']}@example.invalid",
            details={k: details[k] for k in MARKER_KEYS if details.get(k)},
        )
    if outcome == "missing":
        log.warning(
            "Proxy person %s: this tenant can neither delete nor change persons; "
            "remove it in Proxy by hand",
            person["id"],
        )
        return "kept"
    return outcome
