"""Changing the Proxy org in step 1 (issue 16, item 5).

Reproduced on the old code: a visitor issued in the old org was "revoked" against the new
org, the 404 was read as "person gone", the grant marked ended and Envoy told so, while the
person stayed active in the old org until its safety net; the old site and mapping were
kept, so new sign-ins failed against the new org instead of asking for the Site step.
"""

import time
from datetime import datetime

import db
from sandbox.envoy import route_body

FLOW = "flow-visitor"
EMAIL = "ada@example.com"
NEW_ORG = {
    "proxy_app_key": "other-key",
    "proxy_app_secret": "other-secret",
    "proxy_org_id": "org-2",
}


def _visit(daemon, event, entry_id="e-1", **kwargs):
    body = daemon.entry(event, entry_id=entry_id, email=EMAIL, full_name="Ada", flow_id=FLOW,
                        signed_in_at=time.time() - 60, **kwargs)  # fmt: skip
    return daemon.deliver(body)


def _step(daemon, step, payload):
    path = f"/envoy/setup/{step}"
    body = route_body(path, payload=payload, config=daemon.config, install_id=daemon.install_id)
    return daemon.send(body, path=path)


def _switch_org(daemon) -> dict:
    answer = _step(daemon, "proxy-access", NEW_ORG)
    assert answer.status_code == 200, answer.text
    values = answer.json()
    # Envoy merges the answer into the install config; a null removes the key.
    daemon.config = {k: v for k, v in {**daemon.config, **values}.items() if v is not None}
    return values


def _suspended_now(person) -> bool:
    due = [
        (datetime.fromisoformat(s["scheduledDate"].replace("Z", "+00:00")).timestamp(), s)
        for s in person["scheduledStatuses"]
    ]
    past = [s["status"] for at, s in sorted(due, key=lambda x: x[0]) if at <= time.time() + 5]
    return bool(past) and past[-1] == "suspended"


def _install(daemon) -> db.Install:
    with db.database.connection_context():
        return db.Install.get_by_id(daemon.install_id)


def _kept_accounts(daemon) -> list[str]:
    with db.database.connection_context():
        return [a.org_id for a in db.ProxyAccount.select()]


def test_the_old_orgs_site_and_mapping_are_cleared_and_the_admin_is_told(daemon):
    daemon.install()
    values = _switch_org(daemon)
    assert values["proxy_org_id"] == "org-2"
    assert {k: values[k] for k in ("proxy_site_id", "proxy_site_name", "visitor_mapping")} == {
        "proxy_site_id": None,
        "proxy_site_name": None,
        "visitor_mapping": None,
    }
    install = _install(daemon)
    assert "proxy_site_id" not in install.config and "visitor_mapping" not in install.config
    assert "run the Site and Visitor mapping steps" in install.last_error
    refused = _visit(daemon, "entry_sign_in", entry_id="e-new")
    assert refused.status_code == 412
    assert "run the Site step" in refused.json()["message"]


def test_access_given_in_the_old_org_is_ended_there_with_its_credentials(daemon):
    daemon.install()
    assert _visit(daemon, "entry_sign_in").status_code == 200
    [person] = daemon.persons(EMAIL)
    assert person["orgId"] == "org-1" and person["status"] == "active"
    _switch_org(daemon)
    assert _kept_accounts(daemon) == ["org-1"], "kept while the org-1 visit is live"
    ended = _visit(daemon, "entry_sign_out", signed_out_at=time.time())
    assert ended.status_code == 200, ended.json()
    assert ended.json()["message"] == "Proxy access ended"
    [person] = daemon.persons(EMAIL)
    assert _suspended_now(person), person["scheduledStatuses"]
    assert person["tags"] == [], "the visitor group is taken away in the old org"
    assert _kept_accounts(daemon) == [], "dropped once no grant of org-1 is live"
    with db.database.connection_context():
        [grant] = db.Grant.select()
    assert grant.state == "ended" and grant.proxy_org_id == "org-1"


def test_switching_back_needs_no_kept_credentials(daemon):
    daemon.install()
    assert _visit(daemon, "entry_sign_in").status_code == 200
    _switch_org(daemon)
    back = _step(daemon, "proxy-access", {"proxy_app_key": "app-key",
                                         "proxy_app_secret": "app-secret",
                                         "proxy_org_id": "org-1"})  # fmt: skip
    assert back.status_code == 200, back.text
    assert _kept_accounts(daemon) == ["org-2"] or _kept_accounts(daemon) == []
    assert "org-1" not in _kept_accounts(daemon), "org-1 is the install's own again"


def test_a_step_one_that_keeps_the_org_clears_nothing(daemon):
    daemon.install()
    answer = _step(daemon, "proxy-access", {"proxy_app_key": "app-key",
                                           "proxy_app_secret": "app-secret",
                                           "proxy_org_id": "org-1"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert set(answer.json()) == {"proxy_org_id", "proxy_app_key"}
    assert _install(daemon).config["proxy_site_id"] == "site-1"
    assert _kept_accounts(daemon) == []
