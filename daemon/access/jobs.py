"""Envoy jobs and what they are told: the answer a grant's state gives, and the job updates
owed to jobs answered 202.

One home for "which job waits on which work": the inbox row of a job answered 202 names the
grant it waits on (`Event.waits_on`). Every transaction that changes a grant's work ends with
`settle(grant)`, which tells each waiting job how things stand once the grant has no due work
left, and forgets the wait.
"""

from daemon.access import outbox
from daemon.rules.request import Answer
from daemon.rules.times import local_clock, local_window
from db import (
    Action,
    ActionKind,
    ActionOutcome,
    Event,
    Grant,
    GrantState,
    Install,
    grant_by_id,
    install_or_none,
)

ACCEPTED = Answer.message(202, "accepted; the job is updated when the change is done")
# How Envoy reads a final answer given later as a job update (ENVOY_PROTOCOL §4); any other
# final status is a failure.
JOB_STATUS = {200: "done", 400: "ignored"}


def _window_text(grant: Grant, zone_name: str | None) -> str:
    if grant.kind == "employee":
        if grant.ends_at is None:
            return "active, with no end set"
        return f"until {local_clock(grant.ends_at, zone_name)} {zone_name or 'UTC'}"
    # A window ended before it was due to start (a sign-out ahead of early access) is shown
    # as the instant it ended, never backwards.
    starts = grant.starts_at if grant.ends_at is None else min(grant.starts_at, grant.ends_at)
    return local_window(starts, grant.ends_at, zone_name)


def grant_attachments(grant: Grant, install: Install | None) -> list[dict]:
    zone_name = install.timezone if install else None
    label = "Protect access" if grant.kind == "employee" else "Proxy access"
    attachments = [{"type": "text", "label": label, "value": _window_text(grant, zone_name)}]
    if grant.proxy_person_id:
        attachments.append(
            {"type": "text", "label": "Proxy person", "value": grant.proxy_person_id}
        )
    return attachments


def grant_message(grant: Grant, now: int) -> str:
    if grant.state == GrantState.ACTIVE:
        return "Proxy credential active"
    if grant.state == GrantState.ENDED:
        return "Proxy access ended"
    if grant.state == GrantState.CANCELLED:
        return "access cancelled before it started; no credential was issued"
    if grant.starts_at > now:
        return "Proxy access scheduled"
    return "Proxy credential being issued"


def final_answer(grant: Grant, now: int, install: Install | None = None) -> Answer:
    """202 while the grant has due work; else what it came to (200, or 412 if refused).

    `install`: the grant's install, when the caller has it at hand."""
    work = list(
        Action.select(
            Action.kind, Action.outcome, Action.done, Action.due_at, Action.last_error
        ).where(Action.grant == grant.id)
    )
    attachments = grant_attachments(grant, install or install_or_none(grant.install_id))
    if any(not a.done and a.due_at <= now for a in work):
        return ACCEPTED  # e.g. a failed issue's revoke: "failed" only once nothing is left on
    issued = any(a.kind == ActionKind.ISSUE and a.outcome == ActionOutcome.DONE for a in work)
    if grant.state != GrantState.ACTIVE and not issued:
        failed = next((a for a in work if a.outcome == ActionOutcome.DEAD), None)
        if failed is not None:
            message = f"Proxy credential could not be issued: {failed.last_error}"
            return Answer.message(412, message, attachments=attachments)
    return Answer.message(200, grant_message(grant, now), attachments=attachments)


def settle(grant_id: int, now: int, sender: str | None = None) -> list[Action]:
    """Tell the jobs waiting on this grant how it stands, if it has no due work left.

    Call at the end of every transaction that changes the grant or its work: the update is
    queued in that transaction, the stored answer of the job's delivery becomes the final one
    (a redelivery gets it), and the wait is gone, so each job is told once.

    `sender`: the runner's claimer recording an outcome, which sends the updates itself next
    (they are returned, held by it); otherwise the alarm has them sent.
    """
    waiting = list(
        Event.select(Event.job_id, Event.install_id).where(Event.waits_on == grant_id).tuples()
    )
    if not waiting:
        return []
    answer = final_answer(grant_by_id(grant_id), now)
    if answer.status == 202:
        return []
    updates = [
        queue_answer(job_id, install_id, answer, now, sender) for job_id, install_id in waiting
    ]
    Event.update(status=answer.status, answer=answer.body, waits_on=None).where(
        Event.waits_on == grant_id
    ).execute()
    return [update for update in updates if update is not None]


def queue_answer(
    job_id: str, install_id: str, answer: Answer, now: int, sender: str | None = None
) -> Action | None:
    """Give Envoy, as a job update, the final answer to a job answered 202: sent by the alarm,
    or held by `sender`, which sends it itself (the update is returned)."""
    status = JOB_STATUS.get(answer.status, "failed")
    message = answer.body.get("message")
    payload = {
        "job_id": job_id,
        "status": status,
        "message": message,
        "failure_reason": message if status in ("failed", "ignored") else None,
        "attachments": answer.body.get("attachments"),
    }
    if sender is not None:
        return outbox.enqueue_held(ActionKind.JOB_UPDATE, install_id, now, sender, payload=payload)
    outbox.enqueue(ActionKind.JOB_UPDATE, install_id, now, payload=payload)
    return None
