"""Property: whatever happens, Proxy's status timeline of every person follows its grants
(issue 16's proof).

Hypothesis draws a world (Proxy's clock 2 h either side of ours, one or two installs sharing
one or two Proxy orgs) and a story: walk-ins signing in and out, invites created, moved,
re-addressed and removed, a Protect employee coming and going, time passing, and Proxy failing
(answers 5xx, 429 with a day's Retry-After, a 2xx that cannot be read, an import carried out
after the daemon gave up on it). Visits use two new emails, an active employee's and a
suspended employee's. Then everyone leaves and a day passes. Checked (`tolerances` below):
- after every step, each person's status in Proxy is what its live grants say: for a person
  we created, active exactly while one of its grants is live; a suspended employee only while
  her Protect grant is; an employee visiting is never scheduled a status at all;
- no twin (another person of ours with the email) is active;
- over the whole story, replayed from Proxy's schedule as the sandbox applies it, the status
  never disagrees with the grants' windows outside the tolerances;
- at the end no person holds a visitor group or a future `active`, and each person of ours
  ends on a `suspended`.
"""

import calendar
import time

import pytest
import time_machine
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import db
from daemon.access.runner import next_due
from daemon.proxy.access import ProxyAccess
from sandbox.proxy import SEED_INSTALL_CONFIG

FLOW = "flow-visitor"
NEW = ("ada@example.com", "bob@example.com")  # persons we create
ERIN = "erin@example.com"  # an active employee Proxy already has
SUE = "sue@example.com"  # a suspended employee: Protect activates her, visits never do
EMAILS = (*NEW, ERIN, SUE)
INSTALLS = ("install-1", "install-2")
START = 1_900_000_000
SETTLED = 260  # a failure is retried within 2 minutes (Retry-After is capped)
LATE = 140  # how long after a window's edge Proxy may still disagree (a retry's wait)
LEAD = 5  # a scheduled status lands a second or two after its instant
PROTECT = {"protect_enabled": True, "protect_limit_access": True,
           "protect_access_duration_minutes": 60}  # fmt: skip
ORG_2 = {
    "proxy_app_key": "other-key", "proxy_org_id": "org-2", "proxy_site_id": "site-9",
    "proxy_site_name": "Other Site", "visitor_mapping": {FLOW: ["grp-visitors-2"]},
}  # fmt: skip
SEED = {
    "groups": [{"id": "grp-visitors-2", "orgId": "org-2", "siteId": "site-9",
                "name": "Visitors", "tag": "visitor-other", "isGlobal": False}],
    "persons": [{"id": "p_sue", "orgId": "org-1", "siteId": "site-1", "name": "Sue Suspended",
                 "email": SUE, "tags": ["staff"], "details": {},
                 "scheduledStatuses": [{"status": "suspended",
                                        "scheduledDate": "2020-01-01T00:00:00Z"}]}],
}  # fmt: skip
VISITOR_TAGS = ("visitor-lobby", "visitor-other")

worlds = st.fixed_dictionaries(
    {
        "offset": st.one_of(
            st.sampled_from([0, 3600, -3600, 7200, -7200]), st.integers(-7200, 7200)
        ),
        "shared_org": st.booleans(),
        "visits": st.lists(
            st.tuples(st.sampled_from(EMAILS), st.sampled_from(INSTALLS)), min_size=1, max_size=3
        ),
    }
)
FAULTS = {
    "5xx": {"status": 503},
    "429": {"status": 429, "retry_after": 86400},
    "garble": {"garble": True},
    "late": {"late_ms": 50, "path_prefix": "/manage/persons/import"},
}
steps = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["in", "out", "invite", "move", "email", "remove"]),
                  st.integers(0, 2), st.integers(-180, 180)),
        st.tuples(st.sampled_from(["protect_in", "protect_out"]), st.just(0), st.just(0)),
        st.tuples(st.just("wait"), st.just(0), st.integers(1, 300)),  # minutes
        st.tuples(st.just("fault"), st.sampled_from(sorted(FAULTS)), st.integers(1, 3)),
    ),
    max_size=10,
)  # fmt: skip


class Story:
    """One example's world and its clock (daemon time; Proxy's is `offset` ahead)."""

    def __init__(self, daemon, world: dict):
        self.daemon, self.offset = daemon, world["offset"]
        self.visits = [list(v) for v in world["visits"]]  # email, install (the email may change)
        self.configs = {
            "install-1": {**SEED_INSTALL_CONFIG, **PROTECT},
            "install-2": {**SEED_INSTALL_CONFIG, **PROTECT}
            if world["shared_org"]
            else {**SEED_INSTALL_CONFIG, **ORG_2},
        }
        self.now = START
        self.seen: dict[str, int] = {}  # person id -> the first checkpoint it was seen at
        self._fresh()

    def _fresh(self) -> None:
        """A new world: the sandbox reseeded, the database emptied, nothing learnt of Proxy."""
        daemon = self.daemon
        daemon.ctx.proxy.close()
        ctx = daemon.ctx
        ctx.proxy = ProxyAccess(ctx.config.proxy_api_url, ctx.secretbox).limited(1.0)
        daemon.reset()  # the database emptied, the sandbox reseeded
        daemon.proxy.seed(SEED)
        daemon.proxy.set_clock(offset_seconds=self.offset)
        for install_id, config in self.configs.items():
            daemon.install_id = install_id
            secret = "app-secret" if config["proxy_org_id"] == "org-1" else "other-secret"
            daemon.install(secret=secret, **config)

    def send(self, body_of) -> None:
        self.now += 5
        with time_machine.travel(self.now, tick=False):
            self.daemon.send(body_of(self.now))

    def entry(self, visit: int, event: str, signed_in_at: int | None = None):
        email, install_id = self.visits[visit]

        def body(now):
            return self.daemon.entry(
                event, entry_id=f"v-{visit}", email=email, full_name="Visitor", flow_id=FLOW,
                signed_in_at=signed_in_at or now, install_id=install_id,
                config=self.configs[install_id],
                signed_out_at=now if event == "entry_sign_out" else None,
            )  # fmt: skip

        self.send(body)

    def invite(self, visit: int, event: str, arrival: int, changed=()):
        email, install_id = self.visits[visit]

        def body(now):
            return self.daemon.invite(
                event, invite_id=f"i-{visit}", email=email, full_name="Guest", flow_id=FLOW,
                expected_arrival=arrival, install_id=install_id,
                config=self.configs[install_id], changed_fields=list(changed),
            )  # fmt: skip

        self.send(body)

    def protect(self, event: str) -> None:
        def body(now):
            return self.daemon.entry(
                event, entry_id="emp-1", email=SUE, full_name="Sue Suspended",
                flow_id="flow-employee", employee_id="e-1", employee_screening=True,
                signed_in_at=now, signed_out_at=now if event.endswith("out") else None,
                install_id="install-1", config=self.configs["install-1"],
            )  # fmt: skip

        self.send(body)

    def settle(self) -> None:
        """Run what is due now (Proxy's faults bite), then, without faults, what falls due
        in the next minutes (the retries among it) at its due instant."""
        with time_machine.travel(self.now, tick=False):
            self.daemon.run_due(self.now)
            self.daemon.proxy.land_late_calls()
            self.daemon.proxy.clear_faults()
        self.advance(self.now + SETTLED)
        self.check()

    def wait(self, seconds: int) -> None:
        self.advance(self.now + seconds)
        self.settle()

    def advance(self, until: int) -> None:
        """Time passes: the alarm runs each piece of due work at its due instant."""
        for _ in range(500):
            with db.database.connection_context():
                due = next_due(self.now)
            if due is None or due > until:
                break
            self.now = max(self.now, due)
            with time_machine.travel(self.now, tick=False):
                self.daemon.run_due(self.now)
            self.now += 1
        self.now = max(self.now, until)
        with time_machine.travel(self.now, tick=False):
            self.daemon.run_due(self.now)

    # -- what must hold ------------------------------------------------------------------

    def persons(self) -> list[dict]:
        with time_machine.travel(self.now, tick=False):
            return [p for email in EMAILS for p in self.daemon.persons(email)]

    def grants(self) -> list[db.Grant]:
        """The grants, each with the instant its access began (`began`): its start, or for a
        grant whose issue was refused and that was given again later (a corrected email),
        when that later issue ran; and the instants its work against Proxy failed (`failed`,
        from the audit trail)."""
        with db.database.connection_context():
            grants = list(db.Grant.select())
            issues = list(db.Action.select().where(db.Action.kind == "issue"))
            runs = list(db.AuditEntry.select().where(db.AuditEntry.kind == "proxy"))
        for grant in grants:
            mine = [a for a in issues if a.grant_id == grant.id]
            grant.began = grant.starts_at
            if any(a.outcome == "dead" for a in mine):
                done = [a.done_at for a in mine if a.outcome == "done"]
                grant.began = max(grant.starts_at, min(done, default=grant.starts_at))
            grant.failed = [r.at for r in runs if r.grant_id == grant.id
                            and not (r.details or {}).get("ok", True)]  # fmt: skip
        return grants

    def check(self) -> None:
        """Now: every person's status is what its grants say, outside the tolerances."""
        grants = self.grants()
        for person in self.persons():
            self.seen.setdefault(person["id"], self.now)
            wanted = expected(person, grants, self.now)
            if wanted is not None and not excused(person, self.proxy_now, person["status"]):
                assert person["status"] == wanted, (person["id"], person["email"], self.now)

    @property
    def proxy_now(self) -> int:
        return self.now + self.offset

    def check_timeline(self) -> None:
        """The whole story, replayed from each person's schedule: its status at every minute
        since it was first seen agrees with its grants' windows (outside the tolerances)."""
        grants = self.grants()
        for person in self.persons():
            for t in range(self.seen.get(person["id"], self.now), self.now, 60):
                wanted = expected(person, grants, t, final=True)
                got = status_at(person, t + self.offset)
                if wanted is not None and not excused(person, t + self.offset, got):
                    assert got == wanted, (person["id"], person["email"], t - START)


def _epoch(iso: str) -> int:
    return calendar.timegm(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ"))


def status_at(person: dict, proxy_time: float) -> str:
    """The status the sandbox applies at `proxy_time`: the latest entry due (active if none)."""
    entries = [(_epoch(s["scheduledDate"]), i, s["status"])
               for i, s in enumerate(person["scheduledStatuses"])]  # fmt: skip
    due = [entry for entry in entries if entry[0] <= proxy_time]
    return max(due)[2] if due else ("suspended" if person["id"] == "p_sue" else "active")


def excused(person: dict, proxy_time: float, got: str) -> bool:
    """Whether a difference at `proxy_time` is within the tolerances of the schedule: a few
    seconds from any scheduled entry (a status lands its lead after it was asked for), or
    suspended up to a retry's wait after a net of ours fired while a longer stay needed the
    person (fail closed: the re-activation is retried if Proxy fails just then)."""
    for entry in person["scheduledStatuses"]:
        since = proxy_time - _epoch(entry["scheduledDate"])
        if -LEAD <= since <= LEAD:
            return True
        if got == entry["status"] == "suspended" and 0 <= since <= LATE:
            return True
    return False


def _windows(person: dict, grants: list[db.Grant], final: bool) -> list[db.Grant] | None:
    """The grants that set this person's status (None: nothing may set it)."""
    ours = bool((person.get("details") or {}).get("envoyId"))
    same = [g for g in grants if g.proxy_org_id == person["orgId"] and g.email == person["email"]]
    if ours:
        named = {g.proxy_person_id for g in same if g.state == "active"}
        if named and person["id"] not in named and not final:
            return []  # a twin: never active
        return [g for g in same if g.kind == "visitor"]
    if person["id"] == "p_sue":
        return [g for g in same if g.kind == "employee"]
    return None


def expected(person: dict, grants: list[db.Grant], t: int, final: bool = False) -> str | None:
    """The status the grants want at `t` (daemon time), None within a tolerance or when
    nothing may set it (an employee who only ever visited).

    A failed attempt of a grant's work (Proxy refused it, or its answer was lost) is an edge
    too: the change it carried lands at its retry, up to a retry's wait later. One fault may
    refuse up to 3 calls in a row, so the change may land that many waits after the window's
    edge (or after a net of ours fired), each wait following a refusal."""
    setters = _windows(person, grants, final)
    if setters is None:
        return None
    issued = [g for g in setters if g.state in ("active", "ended")]
    edges = [e for g in issued for e in (g.began, g.ends_at) if e is not None]
    edges += [at for g in issued for at in g.failed]
    if any(-LEAD <= t - edge <= LATE for edge in edges):
        return None
    live = any(g.began <= t and (g.ends_at is None or t < g.ends_at) for g in issued)
    return "active" if live else "suspended"


def _play(story: Story, op: str, visit: int, arg) -> None:
    visit %= len(story.visits)
    arrival = story.now + 5 + max(0, arg) * 60
    if op == "wait":
        story.wait(arg * 60)
        return
    if op in ("in", "out"):
        story.entry(visit, f"entry_sign_{op}", signed_in_at=START if op == "out" else None)
    elif op == "invite":
        story.invite(visit, "invite_created", arrival)
    elif op == "move":
        story.invite(visit, "invite_updated", story.now + 5 + arg * 60, ["expected-arrival-time"])
    elif op == "email":
        email = story.visits[visit][0]
        story.visits[visit][0] = NEW[(NEW.index(email) + 1) % 2] if email in NEW else NEW[0]
        story.invite(visit, "invite_updated", arrival, ["email"])
    elif op == "remove":
        story.invite(visit, "invite_removed", arrival)
    else:
        story.protect(f"employee_entry_sign_{op.split('_')[1]}")
    story.settle()


def _story(daemon, world, ops) -> Story:
    story = Story(daemon, world)
    for op, visit, arg in ops:
        if op == "fault":  # the fault's name rides in the visit's slot
            story.daemon.proxy.add_fault(count=arg, **FAULTS[visit])
            continue
        _play(story, op, visit, arg)
    # Everyone leaves, every invite is withdrawn, and a day passes.
    for visit in range(len(story.visits)):
        story.entry(visit, "entry_sign_out", signed_in_at=START)
        story.invite(visit, "invite_removed", story.now)
    story.protect("employee_entry_sign_out")
    story.settle()
    story.wait(24 * 3600)
    return story


def _after_everyone_left(story: Story) -> None:
    story.check_timeline()
    for person in story.persons():
        assert not set(VISITOR_TAGS) & set(person["tags"]), person
        actives = [s for s in person["scheduledStatuses"] if s["status"] == "active"]
        future = [s for s in actives if _epoch(s["scheduledDate"]) > story.proxy_now]
        assert future == [], person
        if person["id"] == "p_1":  # erin, as Proxy had her
            assert person["scheduledStatuses"] == [], "a visit never sets an employee's status"
            assert person["status"] == "active"
        elif person["scheduledStatuses"] or person["id"] == "p_sue":
            assert status_at(person, story.now + story.offset) == "suspended", person
            assert person["status"] == "suspended", person


def _run(daemon, world, ops) -> None:
    story = _story(daemon, world, ops)
    _after_everyone_left(story)
    event(f"{len(story.persons())} persons")


SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}


def _world(visits, offset=0, shared_org=False) -> dict:
    return {"offset": offset, "shared_org": shared_org, "visits": visits}


@settings(max_examples=25, **SETTINGS)
@given(world=worlds, ops=steps)
# Found by this property: a third sign-in moved the re-activation queued after the first net
# to "now", so the first net cut the stay short for the rest of the hour.
@example(
    world=_world([(SUE, "install-2")], offset=7200),
    ops=[("protect_in", 0, 0)] * 3 + [("wait", 0, 102)],
)
# Found by this property: a visit on an employee's person kept her active after her Protect
# grant ended (the revoke took the visit for a grant that still needed her status).
@example(
    world=_world([(ERIN, "install-1"), (NEW[0], "install-2"), (SUE, "install-1")], offset=559),
    ops=[("protect_in", 0, 0), ("move", 2, -99), ("protect_out", 0, 0)],
)
# Found by this property: a net placed for an invite stayed in Proxy after the invite moved
# its net and was then re-addressed; a later visit of the same person was cut short by it.
@example(
    world=_world([(NEW[0], "install-2"), (ERIN, "install-1"), (ERIN, "install-1")], 3600, True),
    ops=[("protect_in", 0, 0), ("invite", 0, 0), ("protect_in", 0, 0), ("in", 2, 0),
         ("wait", 0, 35), ("out", 0, 59), ("email", 1, 136), ("invite", 0, -41),
         ("remove", 2, 123), ("fault", "late", 1), ("email", 0, -5), ("fault", "5xx", 3),
         ("protect_in", 0, 0), ("fault", "5xx", 3), ("fault", "garble", 2), ("out", 0, 59),
         ("fault", "429", 2), ("move", 2, 49), ("protect_out", 0, 0), ("wait", 0, 137),
         ("in", 2, 40), ("fault", "garble", 2), ("wait", 0, 82)],
)  # fmt: skip
# Found by this property: Proxy refused the re-activation after a net twice (429 with a
# day's Retry-After, each retried 120 s later): the employee came back 242 s after the net,
# beyond one retry's wait. The oracle now allows a retry's wait after each failed attempt.
@example(
    world=_world([(SUE, "install-1")]),
    ops=[("protect_in", 0, 0), ("protect_in", 0, 0), ("fault", "429", 3), ("wait", 0, 54)],
)
# The same at a window's start: an invite's issue for a person we created refused 3 times.
@example(
    world=_world([(NEW[0], "install-1"), (NEW[0], "install-1")]),
    ops=[("in", 0, 0), ("out", 0, 0), ("invite", 1, 120), ("fault", "429", 3), ("wait", 0, 120)],
)  # fmt: skip
def test_proxy_follows_the_grants_whatever_happens(daemon, world, ops):
    _run(daemon, world, ops)


@pytest.mark.slow
@settings(max_examples=300, **SETTINGS)
@given(world=worlds, ops=steps)
def test_proxy_follows_the_grants_whatever_happens_at_length(daemon, world, ops):
    _run(daemon, world, ops)
