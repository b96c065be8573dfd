"""What Envoy's dashboard is told about a grant (daemon/access/jobs.py)."""

import db
from daemon.access.jobs import grant_attachments, queue_answer
from daemon.rules.request import Answer


def test_a_window_ended_before_its_start_is_never_shown_backwards():
    """A sign-out ahead of the invite's early access once read `03:53–02:08` in Envoy."""
    grant = db.Grant(kind="visitor", starts_at=1_800_003_600, ends_at=1_800_000_000, group_ids=[])
    [window] = grant_attachments(grant, None)
    start, _, end = window["value"].partition(" (")[0].partition("–")
    assert start <= end, window["value"]


def test_an_ignored_job_update_carries_its_reason_as_failure_reason(database):
    """Envoy's SDK sends a `failure_reason` with every job that did not get done."""
    answer = Answer.message(400, "flow 'Visitor' (f-1) is not mapped to Proxy groups")
    with database.atomic():
        queue_answer("job-1", "install-1", answer, 1_800_000_000)
    [update] = db.Action.select().where(db.Action.kind == db.ActionKind.JOB_UPDATE)
    assert update.payload["status"] == "ignored"
    assert update.payload["failure_reason"] == answer.body["message"]


def test_the_worker_that_issues_a_credential_tells_its_job_without_a_claim_of_its_own(daemon):
    """One claim runs the issue and then its job update, on the same worker: the update is
    queued held by that worker, so no second claim (and no wake-up of the alarm) is needed
    before the visitor's job is told done."""
    daemon.install()
    now = db.now_epoch()
    body = daemon.entry(entry_id="e-1", email="ada@example.com", full_name="Ada",
                        flow_id="flow-visitor", signed_in_at=now)  # fmt: skip
    answer = daemon.send(body)
    assert answer.status_code == 202
    runner = daemon.ctx.runner
    with db.database.connection_context():
        assert runner.dispatch(daemon.ctx, now) == 1  # the issue alone is due
        assert runner.drain(timeout=10)
    by_kind = {action.kind: action for action in daemon.actions()}
    issue, update = by_kind[db.ActionKind.ISSUE], by_kind[db.ActionKind.JOB_UPDATE]
    assert issue.done and update.done and update.claimed_by == runner.claimer
    [told] = daemon.sim.jobs.values()
    assert [u["status"] for u in told] == ["done"]
