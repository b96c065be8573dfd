"""The synchronous identity-verification hook: watchlist, required credential, deadline."""

import time

import pytest
import time_machine

import db
from daemon import watchlist

HOOK = "/envoy/hooks/identity-verification"


def _hook_body(daemon, entry_id="e-50", email="ada@example.com", full_name="Ada Lovelace", **kw):
    kw.setdefault("flow_id", "flow-visitor")
    kw.setdefault("signed_in_at", time.time())
    return daemon.entry(entry_id=entry_id, email=email, full_name=full_name, **kw)


def _verifications():
    with db.database.connection_context():
        return list(db.Verification.select().order_by(db.Verification.id))


def _watch(**kwargs):
    with db.database.connection_context(), db.database.atomic():
        return watchlist.add(**kwargs)


def test_unlisted_visitor_is_approved_and_the_decision_recorded(daemon):
    daemon.install()
    answer = daemon.send(_hook_body(daemon), path=HOOK)
    assert answer.status_code == 200
    [decision] = _verifications()
    assert (decision.decision, decision.reason, decision.entry_id) == (
        "approved",
        "approved",
        "e-50",
    )
    assert daemon.persons("ada@example.com") == [], "no credential unless the install asks for it"


def test_watchlist_hit_by_email_sends_to_manual_review_with_the_reason(daemon):
    daemon.install()
    _watch(email="Ada@Example.com", reason="banned after incident 42")
    answer = daemon.send(_hook_body(daemon), path=HOOK)
    assert answer.status_code == 412
    assert answer.json()["message"] == "On the watchlist: banned after incident 42"
    assert _verifications()[0].decision == "review"


@pytest.mark.parametrize("variant", ["ada lovelace", "  ADA   Lovelace ", "Ada\tLovelace"])
def test_watchlist_hit_by_name_ignores_case_and_whitespace(daemon, variant):
    daemon.install()
    _watch(full_name="Ada Lovelace", reason="ask security")
    answer = daemon.send(
        _hook_body(daemon, full_name=variant, email="other@example.com"), path=HOOK
    )
    assert answer.status_code == 412 and "ask security" in answer.json()["message"]


def test_watchlist_miss_is_approved(daemon):
    daemon.install()
    _watch(email="someone@example.com", reason="x")
    _watch(full_name="Someone Else", reason="y")
    assert daemon.send(_hook_body(daemon), path=HOOK).status_code == 200


def test_the_hook_is_signed_like_every_envoy_route(daemon):
    daemon.install()
    answer = daemon.send(_hook_body(daemon), path=HOOK, secret="wrong-secret")
    assert answer.status_code == 401
    assert _verifications() == []


def test_required_credential_is_issued_before_approval_and_reused_by_sign_in(daemon):
    daemon.install(verification_require_credential=True)
    body = _hook_body(daemon)
    assert daemon.send(body, path=HOOK).status_code == 200
    assert daemon.persons("ada@example.com")[0]["status"] == "active"
    sign_in = daemon.send(_hook_body(daemon))  # the later entry_sign_in for the same entry
    assert sign_in.status_code == 200
    assert len(daemon.persons("ada@example.com")) == 1
    assert len(daemon.grants()) == 1


def test_required_credential_with_failing_proxy_goes_to_review_with_the_reason(daemon):
    daemon.install(verification_require_credential=True)
    daemon.proxy.add_fault(status=400, path_prefix="/manage/persons/import")
    answer = daemon.send(_hook_body(daemon), path=HOOK)
    assert answer.status_code == 412
    assert answer.json()["message"].startswith("Proxy credential could not be issued: ")


def test_hanging_proxy_is_answered_within_the_deadline(daemon):
    daemon.install(verification_require_credential=True)
    daemon.ctx.config = daemon.ctx.config.replace(verify_deadline=2.0)
    daemon.proxy.add_fault(hang=True)
    started = time.monotonic()
    answer = daemon.send(_hook_body(daemon), path=HOOK)
    elapsed = time.monotonic() - started
    assert answer.status_code == 412
    assert "did not answer in time" in answer.json()["message"]
    assert elapsed < 2.0 + 1.0
    [decision] = _verifications()
    assert decision.deadline_hit and decision.reason == "deadline"
    # Once Proxy answers, the credential still arrives: the later sign-in will find it.
    daemon.proxy.clear_faults()
    deadline = time.monotonic() + 10
    while (issue := _issue_action(daemon)).claimed_until is not None:
        assert time.monotonic() < deadline, "the background attempt never finished"
        time.sleep(0.05)
    if not issue.done:  # the attempt gave up before the hang ended: the outbox retries
        with time_machine.travel(issue.next_attempt_at + 1, tick=False):
            daemon.run_due()
    assert daemon.grants()[0].state == "active"
    assert len(daemon.persons("ada@example.com")) == 1


def _issue_action(daemon):
    return next(a for a in daemon.actions() if a.kind == "issue")


def test_unmapped_flow_needs_no_credential(daemon):
    daemon.install(verification_require_credential=True)
    answer = daemon.send(_hook_body(daemon, flow_id="flow-interview"), path=HOOK)
    assert answer.status_code == 200
    assert daemon.persons("ada@example.com") == []
