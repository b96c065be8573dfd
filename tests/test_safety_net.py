"""Proxy's schedule never turns access back on after every grant of a person ended (issue 16,
item 1).

Reproduced on the old code: when a second visit of one email outlasted the first one's safety
net, the daemon scheduled `active` one second after that net; after the visitor signed out,
Proxy's schedule read suspended @T1, **active @T1+1 s**, suspended @T2: door access long after
the visitor left.
"""

import time

import time_machine

FLOW = "flow-visitor"
EMAIL = "ada@example.com"


def _entry(daemon, event, entry_id, at, **kwargs):
    body = daemon.entry(event, entry_id=entry_id, email=EMAIL, full_name="Ada", flow_id=FLOW,
                        signed_in_at=at, **kwargs)  # fmt: skip
    return daemon.deliver(body)


def _timeline(daemon) -> list[tuple[str, str]]:
    [person] = daemon.persons(EMAIL)
    entries = sorted(person["scheduledStatuses"], key=lambda s: (s["scheduledDate"], s["id"]))
    return [(s["scheduledDate"], s["status"]) for s in entries]


def test_no_active_is_scheduled_after_the_last_visit_ends(daemon):
    daemon.install(access_duration_minutes=240)
    start = time.time()
    with time_machine.travel(start, tick=False):
        assert _entry(daemon, "entry_sign_in", "e-1", start).status_code == 200
    later = start + 3600  # the second visit outlasts the first one's net by an hour
    with time_machine.travel(later, tick=False):
        assert _entry(daemon, "entry_sign_in", "e-2", later).status_code == 200
        assert all(status == "suspended" for _, status in _timeline(daemon)[1:]), (
            "no future `active` in Proxy's schedule: the daemon re-activates itself"
        )
    left = later + 1800
    with time_machine.travel(left, tick=False):
        signed_out = _entry(daemon, "entry_sign_out", "e-2", later, signed_out_at=left)
        assert signed_out.status_code == 200
    first_end = start + 240 * 60
    with time_machine.travel(first_end + 5, tick=False):
        daemon.run_due()  # the first visit ends; the second's re-activation was dropped
    timeline = _timeline(daemon)
    last_suspension = max(at for at, status in timeline if status == "suspended")
    assert not [at for at, status in timeline if status == "active" and at > last_suspension]
    actions = [a for a in daemon.actions() if not a.done]
    assert actions == [], "nothing is left to turn access back on"


def test_a_visit_that_outlasts_an_earlier_net_is_reactivated_just_after_it(daemon):
    daemon.install(access_duration_minutes=240)
    start = time.time()
    with time_machine.travel(start, tick=False):
        _entry(daemon, "entry_sign_in", "e-1", start)
    later = start + 3600
    with time_machine.travel(later, tick=False):
        _entry(daemon, "entry_sign_in", "e-2", later)
    first_end = start + 240 * 60
    with time_machine.travel(first_end + 2, tick=False):
        daemon.run_due()  # the first visit's end, then the second visit's re-activation
        [person] = daemon.persons(EMAIL)
        assert person["tags"] == ["visitor-lobby"]
    timeline = _timeline(daemon)
    assert timeline[-1][1] == "suspended", "the second visit's own net ends it"
    assert "active" in [status for _, status in timeline], "re-activated after the old net"
