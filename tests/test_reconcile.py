"""Reconcile(person): Proxy's view of (org, email) is made equal to what its grants want, with
the fewest calls, and a second run finds nothing to do (issue 16, "Reconcile(person)")."""

import time

import time_machine

import db
from daemon.access import reconcile
from daemon.access.runner import execute

FLOW = "flow-visitor"
ADA = "ada@example.com"
ERIN = "erin@example.com"  # an employee Proxy had before us
T0 = 1_900_000_000
WRITES = ("POST", "DELETE")


def _visit(daemon, event, at, email=ADA, entry_id="e-1", signed_in_at=T0):
    out = "out" in event
    with time_machine.travel(at, tick=False):
        body = daemon.entry(event, entry_id=entry_id, email=email, full_name="Ada", flow_id=FLOW,
                            signed_in_at=signed_in_at if out else at,
                            signed_out_at=at if out else None)  # fmt: skip
        return daemon.deliver(body)


def _reconcile(daemon, email, at) -> list[dict]:
    """Reconcile the person at `at`; the write calls it made to Proxy."""
    before = len(daemon.proxy.state()["calls"])
    with time_machine.travel(at, tick=False), db.database.connection_context():
        outcome = reconcile.reconcile(daemon.ctx, "org-1", email, at)
        with db.database.atomic():
            outcome.record()
    calls = daemon.proxy.state()["calls"][before:]
    return [c for c in calls if c["method"] in WRITES]


def _drift(daemon, person: dict, status: str, tags: list[str], at: float) -> None:
    """Proxy changed behind our back (an admin, a lost call): the person as given, now. Its
    scheduled statuses stay: Proxy cannot delete them."""
    record = {k: person[k] for k in ("id", "orgId", "siteId", "name", "email", "details")}
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at - 1))
    schedule = [*person.get("scheduledStatuses", []), {"status": status, "scheduledDate": when}]
    daemon.proxy.seed({"persons": [{**record, "tags": tags, "scheduledStatuses": schedule}]})


def _person(daemon, email, at) -> dict:
    with time_machine.travel(at, tick=False):
        [person] = [p for p in daemon.persons(email) if not p["id"].startswith("twin")]
        return person


def test_a_person_left_active_after_its_visit_is_suspended_and_untagged_once(daemon):
    daemon.install()
    assert _visit(daemon, "entry_sign_in", T0).status_code == 200
    assert _visit(daemon, "entry_sign_out", T0 + 600).status_code == 200
    _drift(daemon, _person(daemon, ADA, T0 + 700), "active", ["visitor-lobby"], T0 + 700)
    writes = _reconcile(daemon, ADA, T0 + 700)
    assert len(writes) == 2, writes  # one suspension, one removal from the group
    person = _person(daemon, ADA, T0 + 800)
    assert person["status"] == "suspended" and person["tags"] == []
    assert _reconcile(daemon, ADA, T0 + 800) == [], "a second run changes nothing"


def test_a_live_visit_whose_person_was_suspended_is_reactivated_with_a_new_net(daemon):
    daemon.install()
    _visit(daemon, "entry_sign_in", T0)
    [grant] = daemon.grants()
    _drift(daemon, _person(daemon, ADA, T0 + 60), "suspended", [], T0 + 60)
    writes = _reconcile(daemon, ADA, T0 + 60)
    assert [w["path"].rsplit("/", 1)[-1] for w in writes] == ["p_3", "scheduled-statuses"]
    person = _person(daemon, ADA, T0 + 120)
    assert person["status"] == "active" and person["tags"] == ["visitor-lobby"]
    last = max(person["scheduledStatuses"], key=lambda s: (s["scheduledDate"], s["id"]))
    assert last["status"] == "suspended", "the net placed at issue still ends it"
    assert abs(_epoch(last["scheduledDate"]) - grant.ends_at) <= 2
    assert _reconcile(daemon, ADA, T0 + 120) == []


def test_a_stay_cut_short_by_an_earlier_net_is_reactivated_and_still_ends_on_time(daemon):
    """A longer stay outlived the first visit's net and its re-activation was lost: reconcile
    activates the person; the longer stay's own net still ends it (nothing more to place)."""
    daemon.install(access_duration_minutes=60)
    _visit(daemon, "entry_sign_in", T0)
    later = T0 + 3000  # a second visit of the same person
    _visit(daemon, "entry_sign_in", later, entry_id="e-2")
    with db.database.connection_context():
        db.Action.update(done=True).where(db.Action.kind == "issue").execute()  # lost
    after_net = T0 + 3700
    _drift(daemon, _person(daemon, ADA, after_net), "suspended", ["visitor-lobby"], after_net)
    writes = _reconcile(daemon, ADA, after_net)
    assert [w["path"].rsplit("/", 1)[-1] for w in writes] == ["scheduled-statuses"]
    person = _person(daemon, ADA, after_net + 60)
    assert person["status"] == "active"
    last = max(person["scheduledStatuses"], key=lambda s: (s["scheduledDate"], s["id"]))
    assert last["status"] == "suspended"
    assert abs(_epoch(last["scheduledDate"]) - (later + 3600)) <= 2
    assert _reconcile(daemon, ADA, after_net + 60) == []


def test_a_twin_of_ours_is_ended_while_the_visit_goes_on(daemon):
    daemon.install()
    _visit(daemon, "entry_sign_in", T0)
    main = _person(daemon, ADA, T0 + 60)
    twin = {**main, "id": "twin-1"}
    _drift(daemon, twin, "active", ["visitor-lobby"], T0 + 60)
    _reconcile(daemon, ADA, T0 + 60)
    with time_machine.travel(T0 + 120, tick=False):
        by_id = {p["id"]: p for p in daemon.persons(ADA)}
    assert by_id["twin-1"]["status"] == "suspended" and by_id["twin-1"]["tags"] == []
    assert by_id[main["id"]]["status"] == "active"
    assert by_id[main["id"]]["tags"] == ["visitor-lobby"]
    assert _reconcile(daemon, ADA, T0 + 120) == []


def test_an_employees_status_is_never_set_by_a_visit_only_its_groups(daemon):
    daemon.install()
    assert _visit(daemon, "entry_sign_in", T0, email=ERIN).status_code == 200
    erin = _person(daemon, ERIN, T0 + 60)
    _drift(daemon, erin, "suspended", ["staff"], T0 + 60)  # an admin suspends her meanwhile
    writes = _reconcile(daemon, ERIN, T0 + 60)
    assert [w["method"] for w in writes] == ["POST"], "the visit's group back, no status"
    assert _visit(daemon, "entry_sign_out", T0 + 600, email=ERIN).status_code == 200
    _drift(daemon, erin, "active", ["staff", "visitor-lobby"], T0 + 700)
    writes = _reconcile(daemon, ERIN, T0 + 700)
    assert [w["method"] for w in writes] == ["DELETE"], "only the group the visit added"
    person = _person(daemon, ERIN, T0 + 800)
    assert person["tags"] == ["staff"] and person["status"] == "active"


def test_the_repair_pass_visits_the_persons_compared_longest_ago_a_batch_at_a_time(daemon):
    daemon.install()
    emails = [f"v{i}@example.com" for i in range(3)]
    for i, email in enumerate(emails):
        _visit(daemon, "entry_sign_in", T0 + i, email=email, entry_id=f"e-{i}")
    with time_machine.travel(T0 + 60, tick=False), db.database.connection_context():
        assert reconcile.repair_pass(T0 + 60, limit=2) == 2
        assert reconcile.repair_pass(T0 + 60, limit=2) == 0, "already waiting: not queued twice"
    daemon.run_due(T0 + 60)
    with time_machine.travel(T0 + 120, tick=False), db.database.connection_context():
        assert reconcile.repair_pass(T0 + 120, limit=1) == 1
        [waiting] = db.Action.select().where(
            (db.Action.kind == "reconcile") & (db.Action.done == False)  # noqa: E712
        )
    assert waiting.payload["email"] == emails[2], "the one never compared goes first"


def test_an_ended_person_is_repaired_by_the_periodic_pass(daemon):
    daemon.install()
    _visit(daemon, "entry_sign_in", T0)
    _visit(daemon, "entry_sign_out", T0 + 600)
    _drift(daemon, _person(daemon, ADA, T0 + 700), "active", ["visitor-lobby"], T0 + 700)
    daemon.ctx.runner._repaired_at = None  # the pass is due (it runs every few minutes)
    with time_machine.travel(T0 + 700, tick=False):
        daemon.run_due(T0 + 700)
    person = _person(daemon, ADA, T0 + 800)
    assert person["status"] == "suspended" and person["tags"] == []


def test_an_ambiguous_failure_queues_a_reconcile_of_the_person(daemon):
    daemon.install()
    daemon.proxy.add_fault(status=503, count=50)
    with time_machine.travel(T0, tick=False):
        daemon.send(daemon.entry(entry_id="e-1", email=ADA, full_name="Ada", flow_id=FLOW,
                                 signed_in_at=T0))  # fmt: skip
        daemon.run_due(T0)
    daemon.proxy.clear_faults()
    [due] = [a for a in daemon.actions() if a.kind == "reconcile"]
    assert due.due_at == T0 + reconcile.AFTER_AMBIGUOUS_SECONDS
    assert due.payload == {"scope": "org-1", "email": ADA}


def test_an_issue_given_up_half_way_is_taken_back_before_envoy_hears_failed(daemon):
    """Reproduced on the old code: the import succeeded, the safety net was refused (400), the
    action died and Envoy heard "failed" while the person stayed active, tagged, with no end."""
    daemon.install()
    daemon.proxy.add_fault(status=400, count=1, path_prefix="/mobile-access/persons/")
    answer = _visit(daemon, "entry_sign_in", T0)
    assert answer.status_code == 412, answer.text
    person = _person(daemon, ADA, T0 + 60)
    assert person["status"] == "suspended" and person["tags"] == []
    [grant] = daemon.grants()
    assert grant.state == "ended"


def test_a_reconcile_runs_as_an_action_of_its_own(daemon):
    daemon.install()
    _visit(daemon, "entry_sign_in", T0)
    with time_machine.travel(T0 + 60, tick=False), db.database.connection_context():
        reconcile.repair_pass(T0 + 60)
        [action] = db.Action.select().where(db.Action.kind == "reconcile")
        assert execute(daemon.ctx, action, T0 + 60) == []  # finished, no job waits on it
        assert db.Grant.get().reconciled_at == T0 + 60


def _epoch(iso: str) -> float:
    return time.mktime(time.strptime(iso, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone


def test_a_revoke_retried_late_keeps_the_end_the_grant_was_given(daemon):
    """Found by the access property: a revoke retried after an unreadable answer recorded the
    retry's instant as the grant's end, so its window (what reconcile and Envoy read) grew
    with the outage."""
    daemon.install()
    _visit(daemon, "entry_sign_in", T0)
    daemon.proxy.add_fault(status=503, count=20)
    with time_machine.travel(T0 + 600, tick=False):
        body = daemon.entry("entry_sign_out", entry_id="e-1", email=ADA, full_name="Ada",
                            flow_id=FLOW, signed_in_at=T0, signed_out_at=T0 + 600)  # fmt: skip
        daemon.send(body)
        daemon.run_due(T0 + 600)
    daemon.proxy.clear_faults()
    with time_machine.travel(T0 + 730, tick=False):
        daemon.run_due(T0 + 730)
    [grant] = daemon.grants()
    assert grant.state == "ended" and grant.ends_at == T0 + 600


def _protect(daemon, event, at):
    out = at if event.endswith("out") else None
    with time_machine.travel(at, tick=False):
        body = daemon.entry(event, entry_id="emp-1", email=ERIN, full_name="Erin Employee",
                            flow_id="flow-employee", employee_id="e-1", employee_screening=True,
                            signed_in_at=T0, signed_out_at=out)  # fmt: skip
        return daemon.deliver(body)


def test_an_employee_an_admin_suspended_stays_suspended_and_protect_still_ends(daemon):
    daemon.install(protect_enabled=True, protect_limit_access=True)
    assert _protect(daemon, "employee_entry_sign_in", T0).status_code == 200
    erin = _person(daemon, ERIN, T0 + 60)
    _drift(daemon, erin, "suspended", ["staff"], T0 + 60)  # an admin locks her out meanwhile
    assert _reconcile(daemon, ERIN, T0 + 60) == [], "never re-activated by the reconciler"
    assert _protect(daemon, "employee_entry_sign_out", T0 + 600).status_code == 200
    _drift(daemon, _person(daemon, ERIN, T0 + 700), "active", ["staff"], T0 + 700)
    writes = _reconcile(daemon, ERIN, T0 + 700)
    assert [w["path"].rsplit("/", 1)[-1] for w in writes] == ["scheduled-statuses"]
    assert _person(daemon, ERIN, T0 + 760)["status"] == "suspended", "Protect ended: suspended"


def test_a_live_visit_without_a_net_in_proxy_gets_one_at_its_end(daemon):
    """The net's call was lost (an interrupted issue): Proxy would keep access on if the
    daemon were down at the end. Reconcile places it, once."""
    daemon.install()
    _visit(daemon, "entry_sign_in", T0)
    with db.database.connection_context():
        db.Grant.update(safety_net_at=None).execute()
        db.PlacedStatus.delete().execute()
        [grant] = db.Grant.select()
    person = _person(daemon, ADA, T0 + 60)
    keys = ("id", "orgId", "siteId", "name", "email", "details", "tags")
    daemon.proxy.seed({"persons": [{k: person[k] for k in keys}]})  # the net never reached it
    writes = _reconcile(daemon, ADA, T0 + 60)
    assert [w["path"].rsplit("/", 1)[-1] for w in writes] == ["scheduled-statuses"]
    assert _reconcile(daemon, ADA, T0 + 120) == [], "placed once"
    [net] = [s for s in _person(daemon, ADA, T0 + 120)["scheduledStatuses"]]
    assert net["status"] == "suspended" and abs(_epoch(net["scheduledDate"]) - grant.ends_at) <= 2
