"""One bad event, one slow dependency, one failing action never stops the rest (issue 15).

Each test reproduces a failure observed on the old core: a delivery whose planning raised
stayed stored and made every scheduler run fail (sign-outs never revoked); Protect sign-ins
waiting on a hanging Envoy user API delayed every ending; issues were claimed before endings.
"""

import time

import requests
import time_machine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import db
from daemon.access import grants, outbox

FLOW = "flow-visitor"


def _entry(daemon, entry_id, email, event="entry_sign_in", **kwargs):
    kwargs.setdefault("full_name", "Visitor")
    kwargs.setdefault("flow_id", FLOW)
    kwargs.setdefault("signed_in_at", time.time())
    return daemon.entry(event, entry_id=entry_id, email=email, **kwargs)


def _poisoned(monkeypatch, email: str) -> None:
    """A bug that only this visitor's planning meets."""
    open_window = grants.open_window

    def open_window_with_a_bug(install_id, plan, *args, **kwargs):
        if plan.visit.email == email:
            raise RuntimeError("a bug in planning")
        return open_window(install_id, plan, *args, **kwargs)

    monkeypatch.setattr(grants, "open_window", open_window_with_a_bug)


def test_a_delivery_whose_planning_fails_is_quarantined_and_the_rest_goes_on(daemon, monkeypatch):
    daemon.install()
    assert daemon.deliver(_entry(daemon, "e-1", "ada@example.com")).status_code == 200
    _poisoned(monkeypatch, "bad@example.com")
    poison = _entry(daemon, "e-2", "bad@example.com")
    answer = daemon.send(poison)
    assert answer.status_code == 202, "stored for a retry, not a 500 that Envoy repeats"
    # Everything else still runs: a new visitor, and the first visitor's sign-out.
    assert daemon.deliver(_entry(daemon, "e-3", "bob@example.com")).status_code == 200
    signed_out = daemon.deliver(_entry(daemon, "e-1", "ada@example.com", "entry_sign_out",
                                       signed_out_at=time.time()))  # fmt: skip
    assert signed_out.status_code == 200
    assert daemon.persons("ada@example.com")[0]["tags"] == []
    # It is shown with its error, on the page's JSON twin and in the metrics.
    daemon.ctx.config = daemon.ctx.config.replace(admin_password="pw")
    facts = requests.get(daemon.url + "/status.json", timeout=5, auth=("admin", "pw")).json()
    [shown] = facts["quarantined"]
    assert shown["job_id"] == poison["meta"]["job"]["id"]
    assert "a bug in planning" in shown["error"]
    # The bug fixed, its retry plans it and its job gets the final answer.
    monkeypatch.undo()
    with db.database.connection_context():
        retry_at = db.Event.get(db.Event.job_id == poison["meta"]["job"]["id"]).next_attempt_at
    with time_machine.travel(retry_at + 1, tick=False):
        daemon.run_due()
    [update] = daemon.sim.jobs[poison["meta"]["job"]["id"]]
    assert update["status"] == "done"
    assert daemon.persons("bad@example.com")[0]["status"] == "active"


def test_a_quarantined_delivery_that_keeps_failing_never_fails_the_run(daemon, monkeypatch):
    daemon.install()
    _poisoned(monkeypatch, "bad@example.com")
    daemon.send(_entry(daemon, "e-2", "bad@example.com"))
    assert daemon.deliver(_entry(daemon, "e-1", "ada@example.com")).status_code == 200
    later = time.time() + 3600
    with time_machine.travel(later, tick=False):
        daemon.run_due()  # raises nothing, retries the poison once more
    with db.database.connection_context():
        [stored] = db.Event.select().where(db.Event.body.is_null(False))
    assert stored.attempts == 2 and stored.next_attempt_at > later


def test_a_hanging_user_api_holds_only_its_own_webhook(daemon, envoy_sim, monkeypatch):
    """Protect sign-ins without an email ask Envoy's user API on their own thread: with the API
    hanging, endings and other sign-ins go on (on the old core an end came 103 s late)."""
    from daemon.access import intake

    daemon.install(protect_enabled=True)
    assert daemon.deliver(_entry(daemon, "e-1", "ada@example.com")).status_code == 200
    calls = []

    def hanging_lookup(self, employee_id):
        calls.append(employee_id)
        raise intake.EnvoyError("no answer in time (ReadTimeout)")

    monkeypatch.setattr(intake.EnvoyUserClient, "get_employee", hanging_lookup)
    employee = daemon.entry("employee_entry_sign_in", entry_id="p-1", email=None,
                            full_name="Erin", employee_id="emp-1", flow_id="flow-employee",
                            signed_in_at=time.time())  # fmt: skip
    answer = daemon.send(employee)
    assert answer.status_code == 503, "Envoy delivers it again; nothing is stored"
    assert calls == ["emp-1"]
    with db.database.connection_context():
        assert (
            not db.Event.select().where(db.Event.job_id == employee["meta"]["job"]["id"]).exists()
        )
    signed_out = daemon.deliver(_entry(daemon, "e-1", "ada@example.com", "entry_sign_out",
                                       signed_out_at=time.time()))  # fmt: skip
    assert signed_out.status_code == 200
    assert calls == ["emp-1"], "due work never waits on the user API"


def test_endings_are_claimed_before_issues_due_at_the_same_time(database):
    now = 1_800_000_000
    with db.database.atomic():
        for kind in ("issue", "issue", "revoke", "job_update", "revoke"):
            outbox.enqueue(kind, "install-1", now - 10)
    first_two = outbox.claim_due(now, 2)
    assert [a.kind for a in first_two] == ["revoke", "revoke"]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kinds=st.lists(st.sampled_from(["issue", "revoke", "job_update"]), min_size=1, max_size=12),
    room=st.integers(min_value=1, max_value=12),
)
def test_no_issue_is_claimed_while_an_ending_waits(database, kinds, room):
    """Property: whatever is due, a claim never takes an issue and leaves an ending behind."""
    now = 1_800_000_000
    with db.database.atomic():
        db.Action.delete().execute()
        for offset, kind in enumerate(kinds):
            outbox.enqueue(kind, "install-1", now - 100 + offset)
    claimed = outbox.claim_due(now, room)
    left = [a.kind for a in db.Action.select().where(db.Action.claimed_until.is_null())]
    if "revoke" in left:
        assert all(a.kind == "revoke" for a in claimed)


def test_a_damaged_row_fails_its_own_work_only(daemon):
    """A stored JSON text that no longer parses (a damaged page, a hand edit) once made every
    claim of due work raise: no ending ran for anyone. Now the damaged action fails alone,
    shown with its error, and the other visitor's sign-out still reaches Proxy."""
    daemon.install()
    assert daemon.deliver(_entry(daemon, "e-1", "ada@example.com")).status_code == 200
    bob = _entry(daemon, "e-2", "bob@example.com")
    assert daemon.send(bob).status_code == 202  # its issue is due, not yet run
    with db.database.connection_context():
        [bobs] = [g for g in db.Grant.select() if g.email == "bob@example.com"]
        unreadable = db.models.Unreadable  # written as the text it holds: not JSON
        db.Grant.update(group_ids=unreadable('["grp-vis')).where(db.Grant.id == bobs.id).execute()
        db.Action.update(payload=unreadable("{not json")).where(
            (db.Action.grant == bobs.id) & (db.Action.kind == "issue")
        ).execute()
    signed_out = daemon.deliver(_entry(daemon, "e-1", "ada@example.com", "entry_sign_out",
                                       signed_out_at=time.time()))  # fmt: skip
    assert signed_out.status_code == 200
    assert daemon.persons("ada@example.com")[0]["tags"] == []
    with db.database.connection_context():
        [issue] = db.Action.select().where(
            (db.Action.grant == bobs.id) & (db.Action.kind == "issue")
        )
        assert issue.last_error, "its own error, shown"
        assert issue.payload.text == "{not json", "kept as it was"
    assert daemon.persons("bob@example.com") == []
