"""Invites that change after their credential was issued (issue 16, items 6 and 7).

Reproduced on the old code: a corrected email kept the credential on the mistyped address (the
real guest never got one); an invite moved to another day kept access on overnight; moved
into the past it answered 400 and access stayed on until the old end.
"""

import time

import time_machine

FLOW = "flow-visitor"
INVITE = {"invite_id": "i-7", "full_name": "Grace", "flow_id": FLOW}


def _invite(daemon, event, email, arrival):
    return daemon.deliver(daemon.invite(event, email=email, expected_arrival=arrival, **INVITE))


def _person(daemon, email):
    [person] = daemon.persons(email)
    return person


def _last(person) -> str:
    entries = sorted(person["scheduledStatuses"], key=lambda s: (s["scheduledDate"], s["id"]))
    return entries[-1]["status"] if entries else person["status"]


def _issued_now(daemon, email="grace@exmaple.com"):
    """An invite whose early access is running: its credential is active."""
    daemon.install(early_access_minutes=60)
    arrival = int(time.time()) + 1800
    assert _invite(daemon, "invite_created", email, arrival).status_code == 200
    assert _person(daemon, email)["status"] == "active"
    return arrival


def test_a_corrected_email_moves_the_credential_to_the_right_guest(daemon):
    arrival = _issued_now(daemon, "grace@exmaple.com")  # mistyped
    answer = _invite(daemon, "invite_updated", "grace@example.com", arrival)
    assert answer.status_code == 200, answer.text
    daemon.run_due()
    assert _person(daemon, "grace@example.com")["status"] == "active"
    wrong = _person(daemon, "grace@exmaple.com")
    assert wrong["tags"] == [] and _last(wrong) == "suspended"


def test_an_invite_moved_to_another_day_ends_access_until_its_new_start(daemon):
    arrival = _issued_now(daemon)
    tomorrow = arrival + 24 * 3600
    answer = _invite(daemon, "invite_updated", "grace@exmaple.com", tomorrow)
    assert answer.status_code == 200 and answer.json()["message"] == "Proxy access scheduled"
    daemon.run_due()
    person = _person(daemon, "grace@exmaple.com")
    assert person["tags"] == [] and _last(person) == "suspended", "no access overnight"
    with time_machine.travel(tomorrow - 3600 + 1, tick=False):
        daemon.run_due()  # the new early access starts
        person = _person(daemon, "grace@exmaple.com")
        assert person["tags"] == ["visitor-lobby"] and _last(person) == "suspended"
        assert any(s["status"] == "active" for s in person["scheduledStatuses"][-2:])


def test_an_invite_moved_into_the_past_ends_access_now(daemon):
    _issued_now(daemon)
    past = int(time.time()) - 24 * 3600
    answer = _invite(daemon, "invite_updated", "grace@exmaple.com", past)
    assert answer.status_code == 200, answer.text
    assert answer.json()["message"] == "Proxy access ended"
    daemon.run_due()
    person = _person(daemon, "grace@exmaple.com")
    assert person["tags"] == [] and _last(person) == "suspended"


def test_an_invite_moved_into_the_past_with_no_grant_is_still_ignored(daemon):
    daemon.install()
    past = int(time.time()) - 24 * 3600
    answer = _invite(daemon, "invite_updated", "grace@example.com", past)
    assert answer.status_code == 400
    assert daemon.grants() == [], "no tombstone: a later sign-in of this guest still works"
