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
