"""Property: whatever the order of visits, sign-outs, time passing and Proxy failures, Proxy
ends up as the visits say (issue 16's proof, for the parts built so far).

For random interleavings of sign-ins and sign-outs of up to three visits by two emails (one
of them an employee who existed in Proxy before us) on two installs sharing one Proxy org,
with time passing and Proxy failing now and then:
- while a visit is live and settled, its person has the visit's group;
- once every visit has ended, no person of ours keeps a group of ours or a future `active`,
  and the last entry of its schedule is `suspended`;
- the employee's status is never scheduled by a visit, and only the visits' groups come and go.
"""

import time

import time_machine
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import db

FLOW = "flow-visitor"
EMAILS = ("ada@example.com", "erin@example.com")  # erin is an employee Proxy already has
INSTALLS = ("install-1", "install-2")
START = 1_900_000_000
Operation = tuple[str, int]

operations = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["in", "out"]), st.integers(0, 2)),
        st.tuples(st.just("wait"), st.integers(1, 300)),  # minutes
        st.tuples(st.just("fail"), st.integers(1, 3)),  # Proxy answers 503 to the next calls
    ),
    max_size=10,
)
visits = st.lists(
    st.tuples(st.sampled_from(EMAILS), st.sampled_from(INSTALLS)), min_size=1, max_size=3
)


def _fresh(daemon) -> None:
    """A new world for each example, with both installs."""
    daemon.reset()
    for install_id in INSTALLS:
        daemon.install_id = install_id
        daemon.install()


def _send(daemon, visit: int, email: str, install_id: str, event: str, now: float) -> None:
    body = daemon.entry(event, entry_id=f"v-{visit}", email=email, full_name="Visitor",
                        flow_id=FLOW, signed_in_at=now, install_id=install_id,
                        signed_out_at=now if event == "entry_sign_out" else None)  # fmt: skip
    daemon.send(body)


def _settle(daemon, now: float) -> None:
    """Run what is due, and again once retries are due (failures back off up to 2 min)."""
    daemon.proxy.clear_faults()
    for later in (now, now + 130, now + 260):
        with time_machine.travel(later, tick=False):
            daemon.run_due()


def _person(daemon, email) -> dict:
    [person] = daemon.persons(email)
    return person


def _future_actives(person, now) -> list:
    return [
        s for s in person["scheduledStatuses"]
        if s["status"] == "active" and _epoch(s["scheduledDate"]) > now
    ]  # fmt: skip


def _epoch(iso: str) -> float:
    return time.mktime(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(visits=visits, ops=operations)
def test_proxy_follows_the_visits_whatever_happens(daemon, visits, ops):
    _fresh(daemon)
    now = float(START)
    live: set[int] = set()
    for op, arg in ops:
        if op == "wait":
            now += arg * 60
            _settle(daemon, now)
            live = {v for v in live if now < _visit_end(daemon, v)}
            continue
        if op == "fail":
            daemon.proxy.add_fault(status=503, count=arg)
            continue
        arg %= len(visits)
        email, install_id = visits[arg]
        now += 5
        with time_machine.travel(now, tick=False):
            _send(daemon, arg, email, install_id, f"entry_sign_{op}", now)
        _settle(daemon, now)
        now += 260
        live = (live | {arg}) if op == "in" and _visit_live(daemon, arg) else live - {arg}
        event(f"{len(live)} live visits")
        for visit in live:
            assert "visitor-lobby" in _person(daemon, visits[visit][0])["tags"], visit
    # Everyone leaves; every window passes.
    for visit, (email, install_id) in enumerate(visits):
        now += 5
        with time_machine.travel(now, tick=False):
            _send(daemon, visit, email, install_id, "entry_sign_out", now)
    now += 24 * 3600
    _settle(daemon, now)
    for email in set(email for email, _ in visits):
        for person in daemon.persons(email):  # none if no visit ever got access
            assert "visitor-lobby" not in person["tags"], email
            assert _future_actives(person, now) == [], email
            if email == "erin@example.com":
                assert person["scheduledStatuses"] == [], "a visit never sets her status"
                assert person["tags"] == ["staff"]
            elif person["scheduledStatuses"]:
                last = max(person["scheduledStatuses"], key=lambda s: (s["scheduledDate"], s["id"]))
                assert last["status"] == "suspended"


def _grant(daemon, visit: int):
    with db.database.connection_context():
        return db.Grant.get_or_none(db.Grant.subject == f"entries:v-{visit}")


def _visit_live(daemon, visit: int) -> bool:
    grant = _grant(daemon, visit)
    return grant is not None and grant.state == "active"


def _visit_end(daemon, visit: int) -> float:
    grant = _grant(daemon, visit)
    return float("inf") if grant is None or grant.ends_at is None else grant.ends_at
