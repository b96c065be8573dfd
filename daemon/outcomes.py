"""What Envoy's dashboard shows for a grant: the message and attachments of a job outcome."""

from daemon import outbox
from daemon.envoy_request import Answer
from daemon.times import local_clock, local_window
from db import Grant, Install, install_or_none

# How Envoy reads a final answer given later as a job update (ENVOY_PROTOCOL §4); any other
# final status is a failure.
JOB_STATUS = {200: "done", 400: "ignored"}


def _window_text(grant: Grant, zone_name: str | None) -> str:
    if grant.kind == "employee":
        if grant.ends_at is None:
            return "active, with no end set"
        return f"until {local_clock(grant.ends_at, zone_name)} {zone_name or 'UTC'}"
    return local_window(grant.starts_at, grant.ends_at, zone_name)


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
    if grant.state == "active":
        return "Proxy credential active"
    if grant.state == "ended":
        return "Proxy access ended"
    if grant.state == "cancelled":
        return "access cancelled before it started; no credential was issued"
    if grant.starts_at > now:
        return "Proxy access scheduled"
    return "Proxy credential being issued"


def waiting_jobs(payload: dict) -> list[str]:
    """The Envoy jobs, answered 202, that an issue or revoke action will report to."""
    return list(payload.get("jobs") or [])


def queue_job_update(job_id: str, grant: Grant, now: int, failure: str | None = None) -> None:
    """Tell Envoy how a job answered 202 ended (call in the transaction that ended it)."""
    install = install_or_none(grant.install_id)
    attachments = grant_attachments(grant, install)
    if failure:
        _queue(job_id, grant.install_id, now, "failed", "Proxy access failed", failure, attachments)
    else:
        _queue(job_id, grant.install_id, now, "done", grant_message(grant, now), None, attachments)


def queue_answer(job_id: str, install_id: str, answer: Answer, now: int) -> None:
    """Give Envoy, as a job update, the final answer to a job answered 202."""
    status = JOB_STATUS.get(answer.status, "failed")
    message = answer.body.get("message")
    failure = message if status == "failed" else None
    _queue(job_id, install_id, now, status, message, failure, answer.body.get("attachments"))


def _queue(job_id, install_id, now, status, message, failure_reason, attachments) -> None:
    payload = {"job_id": job_id, "status": status, "message": message,
               "failure_reason": failure_reason, "attachments": attachments}  # fmt: skip
    outbox.enqueue("job_update", install_id, now, payload=payload)
