"""Intake with an inline budget of 0 (daemon/events.py, inbox.py, planning.py): the answer is
202 as soon as the delivery is on disk; the scheduler's run plans it and Envoy's job is
updated with the outcome."""

import time

import pytest

import daemon.planning as planning
import db
from daemon import status_report
from tests.fixtures.daemon import served_daemon

FLOW = "flow-visitor"


@pytest.fixture
def intake(tmp_path, proxy_sandbox, envoy_sim):
    with served_daemon(
        tmp_path, proxy_sandbox, envoy_sim, ENVOY_PROXY_INLINE_BUDGET="0"
    ) as harness:
        harness.install()
        yield harness


def _sign_in(daemon, entry_id="e-1", email="ada@example.com", job_id=None, **kwargs):
    kwargs.setdefault("flow_id", FLOW)
    kwargs.setdefault("signed_in_at", time.time())
    body = daemon.entry(
        entry_id=entry_id, full_name="Ada Lovelace", email=email, job_id=job_id, **kwargs
    )
    return body, daemon.send(body)


def _sign_out(daemon, signed_in_at: float, signed_out_at: float) -> dict:
    """The sign-out body of `_sign_in`'s default visitor."""
    return daemon.entry(
        "entry_sign_out", entry_id="e-1", full_name="Ada Lovelace", email="ada@example.com",
        flow_id=FLOW, signed_in_at=signed_in_at, signed_out_at=signed_out_at,
    )  # fmt: skip


def _events() -> list[db.Event]:
    with db.database.connection_context():
        return list(db.Event.select().order_by(db.Event.id))


def test_a_sign_in_is_stored_and_answered_before_it_is_planned(intake):
    body, answer = _sign_in(intake)
    assert answer.status_code == 202
    assert answer.json()["message"].startswith("accepted")
    [event] = _events()
    assert event.body is not None and event.entity == "entries:e-1"
    assert intake.grants() == [] and intake.persons("ada@example.com") == []

    intake.run_due()
    intake.run_due()  # the job update queued by the first run
    [grant] = intake.grants()
    assert grant.state == "active"
    [person] = intake.persons("ada@example.com")
    assert person["tags"] == ["visitor-lobby"]
    [event] = _events()
    assert event.body is None and event.status == 202
    [update] = intake.sim.jobs[body["meta"]["job"]["id"]]
    assert update["status"] == "done"
    # Only the work due now speaks for the job: the revoke at the end will not update it.
    revoke = [a for a in intake.actions() if a.kind == "revoke"]
    assert [a.payload for a in revoke] == [{}]


def test_an_unmapped_flow_is_reported_to_envoy_as_ignored(intake):
    body, answer = _sign_in(intake, flow_id="flow-interview", flow_name="Interview")
    assert answer.status_code == 202
    intake.run_due()
    intake.run_due()
    [update] = intake.sim.jobs[body["meta"]["job"]["id"]]
    assert update["status"] == "ignored" and "not mapped" in update["status_message"]
    [event] = _events()
    assert event.status == 400 and event.body is None
    assert intake.grants() == []


def test_a_repeat_before_planning_is_stored_once_and_planned_once(intake):
    body, first = _sign_in(intake)
    second = intake.send(body)
    assert first.status_code == second.status_code == 202
    assert len(_events()) == 1
    intake.run_due()
    intake.run_due()
    assert len(intake.grants()) == 1 and len(intake.persons("ada@example.com")) == 1
    assert intake.send(body).status_code == 200  # its work is done: the final answer


def test_a_payload_that_does_not_fit_its_event_is_refused_and_nothing_is_stored(intake):
    body = intake.invite(
        invite_id="i-1", full_name="Ada", email="ada@example.com", flow_id=FLOW,
        expected_arrival=time.time() + 3600,
    )  # fmt: skip
    body["meta"]["event"] = "entry_sign_in"
    answer = intake.send(body)
    assert answer.status_code == 400 and "does not fit" in answer.json()["message"]
    assert _events() == []


def test_sign_in_and_sign_out_stored_together_are_planned_in_arrival_order(intake):
    signed_in = time.time()
    sign_in, _ = _sign_in(intake, signed_in_at=signed_in)
    sign_out = _sign_out(intake, signed_in, signed_in)
    assert intake.send(sign_out).status_code == 202
    intake.run_due()
    intake.run_due()
    [grant] = intake.grants()
    assert grant.state == "cancelled"  # never issued: nothing reached Proxy
    assert intake.persons("ada@example.com") == []
    # Both jobs are finished in Envoy, the sign-in's too although its issue never ran.
    assert intake.sim.jobs[sign_in["meta"]["job"]["id"]][-1]["status"] == "done"
    assert intake.sim.jobs[sign_out["meta"]["job"]["id"]][-1]["status"] == "done"


def test_a_delivery_that_crashes_planning_fails_alone(intake, monkeypatch):
    real = planning.grants.open_window

    def open_window(install_id, plan, *args, **kwargs):
        if plan.subject == "entries:bad":
            raise RuntimeError("a bug")
        return real(install_id, plan, *args, **kwargs)

    monkeypatch.setattr(planning.grants, "open_window", open_window)
    bad, _ = _sign_in(intake, entry_id="bad", email="bad@example.com")
    good, _ = _sign_in(intake, entry_id="good", email="good@example.com")
    intake.run_due()
    intake.run_due()
    assert [g.subject for g in intake.grants()] == ["entries:good"]
    [update] = intake.sim.jobs[bad["meta"]["job"]["id"]]
    assert update["status"] == "failed" and "internal error" in update["failure_reason"]
    assert intake.sim.jobs[good["meta"]["job"]["id"]][-1]["status"] == "done"
    assert all(event.body is None for event in _events())


def test_every_job_waiting_on_the_same_issue_is_finished(intake):
    """An invite (early access: its issue is due now), then its guest's sign-in, both stored
    before anything ran: the issue reports to both jobs, not only the last one."""
    invite = intake.invite(
        invite_id="i-1", full_name="Ada Lovelace", email="ada@example.com", flow_id=FLOW,
        expected_arrival=time.time() + 600,
    )  # fmt: skip
    assert intake.send(invite).status_code == 202
    sign_in, answer = _sign_in(intake, invite_id="i-1")
    assert answer.status_code == 202
    intake.run_due()
    intake.run_due()
    assert len(intake.persons("ada@example.com")) == 1
    for body in (invite, sign_in):
        assert intake.sim.jobs[body["meta"]["job"]["id"]][-1]["status"] == "done"


def test_a_job_waiting_on_an_issue_that_an_ending_overtook_is_finished(intake):
    """The import is refused for 10 minutes (429), then the sign-out's revoke ends the grant
    while the issue waits to be retried: the sign-in's job is told how it ended."""
    intake.proxy.add_fault(status=429, retry_after=600, path_prefix="/manage/persons/import")
    signed_in = time.time()
    sign_in, _ = _sign_in(intake, signed_in_at=signed_in)
    intake.run_due()  # the issue fails and backs off
    [issue] = [a for a in intake.actions() if a.kind == "issue"]
    assert not issue.done and issue.attempts == 1
    sign_out = _sign_out(intake, signed_in, time.time())
    intake.send(sign_out)
    intake.run_due()  # plans the sign-out; its revoke ends the grant
    intake.run_due()
    [issue] = [a for a in intake.actions() if a.kind == "issue"]
    assert issue.outcome == "cancelled"
    assert intake.sim.jobs[sign_in["meta"]["job"]["id"]][-1]["status"] == "done"


def test_admins_see_how_many_deliveries_wait_to_be_planned(intake):
    from tests.test_metrics import _scrape, _value

    _sign_in(intake, entry_id="e-1", email="ada@example.com")
    _sign_in(intake, entry_id="e-2", email="grace@example.com")
    with db.database.connection_context():
        assert status_report.gather(db.now_epoch())["counts"]["events_waiting"] == 2
    assert _value(_scrape(intake), "envoy_proxy_events_waiting") == 2
    intake.run_due()
    assert _value(_scrape(intake), "envoy_proxy_events_waiting") == 0


def test_a_job_whose_work_moves_to_another_day_is_told_at_once(intake):
    """Early access made the invite's issue due now (202); before it ran, the invite moved to
    the day after tomorrow: its job is finished now, not in two days."""
    created = intake.invite(
        invite_id="i-1", full_name="Ada Lovelace", email="ada@example.com", flow_id=FLOW,
        expected_arrival=time.time() + 600,
    )  # fmt: skip
    assert intake.send(created).status_code == 202
    with db.database.connection_context():  # planned only: the issue is due, names the job
        planning.plan_received(intake.ctx, db.now_epoch())
    moved = intake.invite(
        "invite_updated", invite_id="i-1", full_name="Ada Lovelace", email="ada@example.com",
        flow_id=FLOW, expected_arrival=time.time() + 2 * 86400,
        changed_fields=["expected-arrival-time"],
    )  # fmt: skip
    intake.send(moved)
    intake.run_due()
    intake.run_due()
    [update] = intake.sim.jobs[created["meta"]["job"]["id"]]
    assert update["status"] == "done"
    assert intake.persons("ada@example.com") == []  # nothing issued: the visit is in two days


def test_a_job_that_joins_an_issue_already_running_is_finished(intake):
    from daemon import outbox, worker

    invite = intake.invite(
        invite_id="i-1", full_name="Ada Lovelace", email="ada@example.com", flow_id=FLOW,
        expected_arrival=time.time() + 600,
    )  # fmt: skip
    intake.send(invite)
    with db.database.connection_context():
        planning.plan_received(intake.ctx, db.now_epoch())
        [issue] = outbox.claim_due(db.now_epoch(), 10)  # in flight, as read when claimed
    sign_in, _ = _sign_in(intake, invite_id="i-1")
    with db.database.connection_context():
        planning.plan_received(intake.ctx, db.now_epoch())  # the sign-in joins the issue
        worker.execute(intake.ctx, issue, db.now_epoch())
    intake.run_due()
    for body in (invite, sign_in):
        assert intake.sim.jobs[body["meta"]["job"]["id"]][-1]["status"] == "done"


def test_work_that_cancels_its_never_issued_grant_reports_to_each_job_once(intake):
    """The sign-out is planned while the sign-in's issue is claimed, so both jobs wait on the
    due work; the issue then finds the window over and cancels the grant itself."""
    signed_in = time.time()
    sign_in, _ = _sign_in(intake, signed_in_at=signed_in)
    sign_out = _sign_out(intake, signed_in, signed_in)
    claimed = db.Action.kind == "issue"
    with db.database.connection_context():
        planning.plan_received(intake.ctx, db.now_epoch())  # the issue is due, names the job
        with db.database.atomic():
            db.Action.update(claimed_until=db.now_epoch() + 60).where(claimed).execute()
        intake.send(sign_out)
        planning.plan_received(intake.ctx, db.now_epoch())  # cannot cancel a claimed issue
        with db.database.atomic():
            db.Action.update(claimed_until=None).where(claimed).execute()
    intake.run_due()
    intake.run_due()
    for body in (sign_in, sign_out):
        assert [u["status"] for u in intake.sim.jobs[body["meta"]["job"]["id"]]] == ["done"]
    assert intake.persons("ada@example.com") == []


def test_a_job_answered_pending_is_finished_by_the_work_still_due(
    tmp_path, proxy_sandbox, envoy_sim, monkeypatch
):
    """Budget > 0: the webhook's own issue succeeds, but by then other work of the grant is
    due and being run elsewhere (an admin ended the access meanwhile), so the answer is 202.
    The issue reported to nobody (its webhook answers for it): that other work must."""
    from daemon import events, grants, outbox, worker

    taken = []

    def issue_then_admin_ends_the_grant(ctx, action_ids, now, answering=None):
        worker.run_inline(ctx, action_ids, now, answering)
        with db.database.atomic():
            [grant] = db.Grant.select()
            revoke = grants.end_now(grant, now)
        taken.extend(outbox.claim_due(now, 10, ids=[revoke.id]))  # the admin's run

    with served_daemon(
        tmp_path, proxy_sandbox, envoy_sim, ENVOY_PROXY_INLINE_BUDGET="1"
    ) as harness:
        harness.install()
        monkeypatch.setattr(events, "run_inline", issue_then_admin_ends_the_grant)
        body, answer = _sign_in(harness)
        assert answer.status_code == 202
        [revoke] = taken
        with db.database.connection_context():
            worker.execute(harness.ctx, revoke, db.now_epoch())  # the admin's run ends
        harness.run_due()
        assert harness.sim.jobs[body["meta"]["job"]["id"]][-1]["status"] == "done"
