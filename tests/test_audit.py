"""The audit trail: every access change and decision, with who and why, written in the
transaction of the change (a change rolled back leaves no entry), and never a secret."""

import getpass
import time

import pytest
import time_machine

import db
from daemon.__main__ import main
from daemon.access import audit, grants, outbox, watchlist
from daemon.ops import audit_report
from sandbox.envoy import route_body

FLOW = "flow-visitor"
ADA = "ada@example.com"


def _story(email=ADA) -> list[tuple]:
    with db.database.connection_context():
        return [(e["kind"], e["actor"], e["reason"]) for e in audit_report.entries(email=email)]


def _sign_in(daemon, entry_id="e-1", email=ADA, flow=FLOW, name="Ada Lovelace"):
    return daemon.deliver(
        daemon.entry(
            entry_id=entry_id,
            email=email,
            full_name=name,
            flow_id=flow,
            signed_in_at=time.time(),
        )
    )


def _sign_out(daemon, entry_id="e-1", email=ADA):
    return daemon.deliver(
        daemon.entry(
            "entry_sign_out",
            entry_id=entry_id,
            email=email,
            full_name="Ada Lovelace",
            flow_id=FLOW,
            signed_in_at=time.time() - 60,
            signed_out_at=time.time(),
        )
    )


def _grant(state: str) -> db.Grant:
    """Ada's grant of visit 1, stored as it is in `state` (inside a transaction)."""
    return db.Grant.create(install_id="i", kind="visitor", subject="entries:1", email=ADA,
                           starts_at=0, state=state)  # fmt: skip


def _cli(daemon, capsys, *argv):
    cfg = daemon.ctx.config
    code = main(
        [*argv, "--db", cfg.db, "--key-file", cfg.key_file, "--proxy-api-url", cfg.proxy_api_url]
    )
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_visit_is_told_from_sign_in_to_sign_out_with_who_and_why(daemon):
    daemon.install()
    assert _sign_in(daemon).status_code == 200
    assert _sign_out(daemon).status_code == 200
    story = _story()
    assert [kind for kind, _, _ in story] == [
        audit.PLANNED,
        audit.PROXY,
        audit.ISSUED,
        audit.END_REQUESTED,
        audit.PROXY,
        audit.ENDED,
    ]
    assert story[0][:2] == (audit.PLANNED, audit.ENVOY)
    assert story[1][1] == audit.DAEMON and "active" in story[1][2]
    assert story[3] == (audit.END_REQUESTED, audit.ENVOY, "sign-out")
    assert "suspended" in story[4][2]
    assert story[5] == (audit.ENDED, audit.DAEMON, "sign-out")
    with db.database.connection_context():
        [issued] = db.AuditEntry.select().where(db.AuditEntry.kind == audit.ISSUED)
    assert issued.details["proxy_person_id"] == daemon.persons(ADA)[0]["id"]
    assert issued.full_name == "Ada Lovelace" and issued.install_id == daemon.install_id


def test_access_that_runs_out_ends_for_its_duration(daemon):
    daemon.install()
    assert _sign_in(daemon).status_code == 200
    [grant] = daemon.grants()
    with time_machine.travel(grant.ends_at + 1, tick=False):
        daemon.run_due()
    assert _story()[-1] == (audit.ENDED, audit.DAEMON, audit.DURATION)


def test_an_ignored_event_says_why_no_credential_was_given(daemon):
    daemon.install()
    answer = _sign_in(daemon, flow="flow-not-mapped", email="bob@example.com", name="Bob")
    assert answer.status_code == 400
    [(kind, actor, reason)] = _story("bob@example.com")
    assert (kind, actor) == (audit.IGNORED, audit.ENVOY)
    assert "not mapped" in reason
    # The same answer from the Activity view, in one search by name.
    with db.database.connection_context():
        found = audit_report.activity("bob")
    assert found["grants"] == []
    assert [e["reason"] for e in found["entries"]] == [reason]
    assert found["entries"][0]["details"]["status"] == 400


def test_a_refused_issue_is_recorded_with_proxys_reason(daemon):
    daemon.install()
    daemon.proxy.add_fault(status=503)
    assert (
        daemon.send(
            daemon.entry(
                entry_id="e-1",
                email=ADA,
                full_name="Ada Lovelace",
                flow_id=FLOW,
                signed_in_at=time.time(),
            )
        ).status_code
        == 202
    )
    daemon.run_due()
    failed = [e for e in _story() if e[0] == audit.PROXY]
    assert failed and "503" in failed[0][2]
    with db.database.connection_context():
        [entry] = db.AuditEntry.select().where(db.AuditEntry.kind == audit.PROXY)
    assert entry.details["ok"] is False and entry.details["attempt"] == 1


def test_failures_past_the_first_few_are_sampled(database):
    """An ending retried every 2 minutes through a long outage does not flood the trail."""
    with database.atomic():
        grant = _grant("active")
        action = db.Action.create(
            grant=grant, install_id="i", kind="revoke", due_at=0, next_attempt_at=0
        )
        for _ in range(120):
            outbox.fail(action, 0, "Proxy answered 503")
            action = db.Action.get_by_id(action.id)
    attempts = [e.details["attempt"] for e in db.AuditEntry.select()]
    assert attempts == [1, 2, 3, 4, 5, 30, 60, 90, 120]


def test_an_event_whose_planning_fails_leaves_no_audit_entry(daemon, monkeypatch):
    """The `planned` entry is written before the failure, in the event's transaction: the
    rollback takes it away with the grant (the delivery is quarantined)."""
    daemon.install()

    def broken(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(outbox, "enqueue_each", broken)
    answer = daemon.send(
        daemon.entry(
            entry_id="e-1",
            email=ADA,
            full_name="Ada Lovelace",
            flow_id=FLOW,
            signed_in_at=time.time(),
        )
    )
    assert answer.status_code == 202  # quarantined
    with db.database.connection_context():
        assert db.Grant.select().count() == 0
        assert db.AuditEntry.select().count() == 0


def test_a_rolled_back_change_takes_its_audit_entry_with_it(database):
    with database.atomic():
        db.Install.create(install_id="i", config={}, created_at=0, updated_at=0)
    with pytest.raises(RuntimeError), database.atomic():
        watchlist.add(email="eve@example.com", reason="badge stolen")
        raise RuntimeError("the change failed after its entry was written")
    assert db.AuditEntry.select().count() == 0
    assert db.WatchlistEntry.select().count() == 0
    watchlist.add(email="eve@example.com", reason="badge stolen")
    [entry] = db.AuditEntry.select()
    assert (entry.kind, entry.email, entry.reason) == (
        audit.WATCHLIST,
        "eve@example.com",
        "added: badge stolen",
    )


def test_admin_revoke_names_the_os_user_and_the_reason(daemon, capsys):
    daemon.install()
    assert _sign_in(daemon).status_code == 200
    [grant] = daemon.grants()
    code, _, err = _cli(daemon, capsys, "revoke", str(grant.id))
    assert code == 0, err
    user = f"cli:{getpass.getuser()}"
    assert (audit.END_REQUESTED, user, "admin revoke") in _story()
    assert _story()[-1] == (audit.ENDED, user, "admin revoke")


def test_watchlist_changes_from_the_cli_name_the_os_user(daemon, capsys):
    code, _, err = _cli(
        daemon, capsys, "watchlist", "add", "--name", "Eve  Mallory", "--reason", "badge stolen"
    )
    assert code == 0, err
    code, _, err = _cli(daemon, capsys, "watchlist", "remove", "--name", "eve mallory")
    assert code == 0, err
    with db.database.connection_context():
        rows = audit_report.entries(name="eve")
    assert [(r["kind"], r["actor"], r["reason"]) for r in rows] == [
        (audit.WATCHLIST, f"cli:{getpass.getuser()}", "added: badge stolen"),
        (audit.WATCHLIST, f"cli:{getpass.getuser()}", "removed: badge stolen"),
    ]


def test_retry_from_the_cli_is_recorded(daemon, capsys):
    daemon.install()
    daemon.proxy.add_fault(status=503)
    daemon.send(
        daemon.entry(
            entry_id="e-1",
            email=ADA,
            full_name="Ada Lovelace",
            flow_id=FLOW,
            signed_in_at=time.time(),
        )
    )
    daemon.run_due()
    [issue] = [a for a in daemon.actions() if a.kind == "issue"]
    code, _, err = _cli(daemon, capsys, "retry", str(issue.id))
    assert code == 0, err
    assert _story()[-1] == (audit.ADMIN, f"cli:{getpass.getuser()}", f"retry action {issue.id}")


def test_a_retired_grant_records_why(database):
    with database.atomic():
        grant = _grant("pending")
        grants.retire(grant, 10, "review")
    [entry] = db.AuditEntry.select()
    assert (entry.kind, entry.reason, entry.grant_id) == (audit.CANCELLED, "review", grant.id)


def test_details_never_carry_a_secret_value(database):
    audit.record(
        audit.ADMIN, details={"app_secret": "s3cr3t", "Authorization": "Bearer x", "keys": ["a"]}
    )
    [entry] = db.AuditEntry.select()
    assert entry.details == {"app_secret": "(secret)", "Authorization": "(secret)", "keys": ["a"]}


def test_setup_steps_record_the_keys_they_changed_never_the_secret(daemon):
    access = {"proxy_app_key": "app-key", "proxy_app_secret": "app-secret", "proxy_org_id": "org-1"}
    path = "/envoy/setup/proxy-access"
    body = route_body(path, payload=access, config={}, install_id=daemon.install_id)
    assert daemon.send(body, path=path).status_code == 200
    assert daemon.send(body, path=path).status_code == 200  # again: the secret replaced only
    with db.database.connection_context():
        rows = list(db.AuditEntry.select().order_by(db.AuditEntry.id).tuples())
        entries = list(db.AuditEntry.select().order_by(db.AuditEntry.id))
    assert [(e.kind, e.actor) for e in entries] == [(audit.SETUP, audit.ENVOY)] * 2
    assert entries[0].details == {"keys": ["proxy_app_key", "proxy_org_id", "proxy_app_secret"]}
    assert entries[1].details == {"keys": ["proxy_app_secret"]}
    assert "app-secret" not in repr(rows)


def test_an_identity_check_sent_to_review_says_why(daemon):
    daemon.install()
    with db.database.connection_context():
        watchlist.add(email=ADA, reason="banned after incident 42")
    hook = "/envoy/hooks/identity-verification"
    body = daemon.entry(
        entry_id="e-50", email=ADA, full_name="Ada Lovelace", flow_id=FLOW, signed_in_at=time.time()
    )
    assert daemon.send(body, path=hook).status_code == 412
    assert daemon.ctx.runner.drain_decisions(timeout=15)
    assert _story()[-1] == (
        audit.VERIFIED,
        audit.ENVOY,
        "review: On the watchlist: banned after incident 42",
    )
