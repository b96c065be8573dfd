"""Persons belong to the Proxy org, not to an Envoy install (issue 16, item 3).

Reproduced on the old code: two Envoy locations on one Proxy org, the same visitor at both;
signing out at one suspended the person the other visit still needed.
"""

import time
from datetime import datetime

FLOW = "flow-visitor"
EMAIL = "ada@example.com"


def _at(daemon, install_id, event, entry_id, **kwargs):
    body = daemon.entry(event, entry_id=entry_id, email=EMAIL, full_name="Ada", flow_id=FLOW,
                        signed_in_at=time.time(), install_id=install_id, **kwargs)  # fmt: skip
    return daemon.deliver(body)


def test_a_sign_out_at_one_location_keeps_the_visit_at_another_on_the_same_org(daemon):
    daemon.install()  # install-1, org-1
    daemon.install_id = "install-2"
    daemon.install()  # a second location on the same Proxy org
    assert _at(daemon, "install-1", "entry_sign_in", "a-1").status_code == 200
    assert _at(daemon, "install-2", "entry_sign_in", "b-1").status_code == 200
    assert len(daemon.persons(EMAIL)) == 1, "one person for the org, not one per install"
    signed_out = _at(daemon, "install-1", "entry_sign_out", "a-1", signed_out_at=time.time())
    assert signed_out.status_code == 200
    [person] = daemon.persons(EMAIL)
    assert person["tags"] == ["visitor-lobby"], "the other location's visit still needs access"
    soon = [
        s
        for s in person["scheduledStatuses"]
        if s["status"] == "suspended"
        and datetime.fromisoformat(s["scheduledDate"].replace("Z", "+00:00")).timestamp()
        < time.time() + 3600
    ]
    assert soon == [], "no suspension now: only the visits' own nets, hours ahead"
    _at(daemon, "install-2", "entry_sign_out", "b-1", signed_out_at=time.time())
    [person] = daemon.persons(EMAIL)
    assert person["tags"] == []
