"""A visit never takes over a Proxy person that existed before us (issue 16, item 2).

Reproduced on the old code: a walk-in typing an active employee's email reused the employee's
person, and at the visitor's sign-out the employee was suspended (locked out of their own
doors); a suspended former employee signing in as a visitor came back active with all their
old groups.
"""

import time

FLOW = "flow-visitor"


def _visit(daemon, event="entry_sign_in", entry_id="e-1", email="erin@example.com", **kwargs):
    kwargs.setdefault("full_name", "Walk In")
    kwargs.setdefault("flow_id", FLOW)
    kwargs.setdefault("signed_in_at", time.time())
    return daemon.deliver(daemon.entry(event, entry_id=entry_id, email=email, **kwargs))


def _person(daemon, email):
    [person] = daemon.persons(email)
    return person


def _scheduled(person) -> list[str]:
    return [s["status"] for s in person["scheduledStatuses"]]


def test_a_visit_with_an_employees_email_adds_groups_only_and_never_suspends_them(daemon):
    daemon.install()
    before = _person(daemon, "erin@example.com")
    assert before["status"] == "active" and "visitor-lobby" not in before["tags"]
    signed_in = _visit(daemon)
    assert signed_in.status_code == 200, signed_in.text
    during = _person(daemon, "erin@example.com")
    assert sorted(during["tags"]) == ["staff", "visitor-lobby"]
    assert _scheduled(during) == [], "no status set and no safety net on someone else's person"
    signed_out = _visit(daemon, "entry_sign_out", signed_out_at=time.time())
    assert signed_out.status_code == 200, signed_out.text
    after = _person(daemon, "erin@example.com")
    assert after["tags"] == ["staff"], "exactly the groups the visit added are taken back"
    assert after["status"] == "active" and _scheduled(after) == [], "the employee keeps access"
    assert len(daemon.persons("erin@example.com")) == 1, "and nobody was created"


def test_a_suspended_person_that_existed_before_us_is_not_reactivated_by_a_visit(daemon):
    daemon.install()
    daemon.proxy.seed(
        {
            "persons": [
                {
                    "id": "p_former",
                    "orgId": "org-1",
                    "siteId": "site-1",
                    "name": "Former Employee",
                    "email": "former@example.com",
                    "tags": ["staff", "server-room"],
                    "details": {},
                    "scheduledStatuses": [
                        {"status": "suspended", "scheduledDate": "2020-01-01T00:00:00Z"}
                    ],
                }
            ]
        }
    )
    assert _person(daemon, "former@example.com")["status"] == "suspended"
    answer = _visit(daemon, email="former@example.com")
    assert answer.status_code == 412
    assert "existed before Envoy" in answer.json()["message"]
    person = _person(daemon, "former@example.com")
    assert person["status"] == "suspended"
    assert person["tags"] == ["staff", "server-room"], "not even the visit's groups"


def test_a_person_we_created_is_still_reactivated_for_a_returning_visitor(daemon):
    daemon.install()
    assert _visit(daemon, email="ada@example.com").status_code == 200
    _visit(daemon, "entry_sign_out", email="ada@example.com", signed_out_at=time.time())
    returning = _visit(daemon, entry_id="e-2", email="ada@example.com")
    assert returning.status_code == 200, returning.text
    person = _person(daemon, "ada@example.com")
    assert person["tags"] == ["visitor-lobby"]
    timeline = [s["status"] for s in sorted(person["scheduledStatuses"],
                                            key=lambda s: s["scheduledDate"])]  # fmt: skip
    assert timeline[:3] == ["suspended", "active", "suspended"], "ended, activated again, net"
