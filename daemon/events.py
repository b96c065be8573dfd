"""The event worker behind `/envoy/events`: check, store, then plan now or in the background.

Every delivery is checked (its payload must fit its event) and stored in the inbox, unique on
`meta.job.id`, before we answer; a repeated delivery gets the first one's answer and changes
nothing. With an inline budget of 0 the answer is 202 as soon as the delivery is on disk, and
the scheduler plans it with others in a batch and updates the Envoy job when done. Otherwise
the webhook plans its own delivery and runs the due Proxy work within the budget; if Proxy is
slow or down the answer is 202 and the outbox finishes the job later.
"""

import dataclasses
import json
import time

from daemon import grants, outbox
from daemon.envoy_request import Answer, BadRequest, EnvoyRequest
from daemon.inbox import ACCEPTED, Delivery
from daemon.planning import final_answer, plan_received, visit_of
from daemon.policy import VISITOR_EVENTS
from daemon.protect import EMPLOYEE_EVENTS
from daemon.worker import run_inline
from db import Action, Event, Grant, database, grant_by_id, now_epoch
from db.prepared import Prepared, Slot, columns

PENDING = Answer.message(
    202, "Proxy did not answer in time; the job is updated when the change is done"
)


def _delivery(request: EnvoyRequest, now: int) -> Delivery:
    """What the inbox keeps of this delivery; BadRequest (nothing stored) if it is unusable."""
    if request.event not in VISITOR_EVENTS + EMPLOYEE_EVENTS:
        unhandled = Answer.message(400, f"event {request.event!r} is not handled by this plugin")
        return Delivery(
            request.job_id, request.event, request.install_id, None, now, None, unhandled
        )
    visit = visit_of(request)
    raw = request.raw or json.dumps({"meta": request.meta, "payload": request.payload})
    return Delivery(request.job_id, request.event, request.install_id, visit.subject, now, raw)


def handle_event(ctx, request: EnvoyRequest) -> Answer:
    """Answer one Envoy event (see ENVOY_PROTOCOL §4 for what each status means to Envoy)."""
    if not request.event:
        raise BadRequest("`meta.event` is missing")
    if not request.job_id:
        raise BadRequest("`meta.job.id` is missing")
    now = now_epoch()
    delivery = _delivery(request, now)
    earlier = ctx.inbox.store(delivery)
    if earlier is not None:
        answer = _answer_again(request, now) if earlier.status == 202 else earlier
        answer = answer or earlier
    elif delivery.raw is None:
        answer = delivery.answer
    elif ctx.config.inline_budget > 0:
        answer = _plan_now(ctx, request.job_id, now)
        ctx.rearm(outbox.next_due())
    else:
        answer = ACCEPTED
        ctx.rearm(now)  # the scheduler plans it, with whatever else arrived meanwhile
    ctx.metrics.event(request.event, answer.status)
    return answer


_STORE_ANSWER = Prepared(
    lambda: Event.update(columns(Event.status, Event.answer)).where(Event.job_id == Slot("job_id"))
)


def _answer_again(request: EnvoyRequest, now: int) -> Answer | None:
    """The final answer to a repeat of a planned delivery stored as 202 whose work is done.

    A webhook that runs its job's work itself answers that job itself (no job update is
    queued for it); killed before it stored its final answer, it leaves a 202 that would
    otherwise be the answer to every retry, and Envoy's job would never finish.
    """
    stored = Event.get(Event.job_id == request.job_id)
    grant = _grant_of(stored) if stored.body is None and stored.entity else None
    answer = final_answer(grant, now) if grant is not None else None
    if answer is None or answer.status == 202:
        return None
    with database.atomic():
        _STORE_ANSWER.run(status=answer.status, answer=answer.body, job_id=request.job_id)
    return answer


def _grant_of(stored: Event) -> Grant | None:
    """The grant a planned delivery concerned: its own, or for an entry its invite's."""
    grant = Grant.get_or_none(install_id=stored.install_id, subject=stored.entity)
    kind, _, entity_id = stored.entity.partition(":")
    if grant is None and kind == "entries":
        grant = Grant.get_or_none(install_id=stored.install_id, entry_id=entity_id)
    return grant


_DUE_WORK = Prepared(
    lambda: Action.select(Action.id).where(
        (Action.grant == Slot("grant"))
        & (Action.done == False)  # noqa: E712
        & (Action.next_attempt_at <= Slot("now"))
    )
)


def _plan_now(ctx, job_id: str, now: int) -> Answer:
    """Plan this delivery and run its due work within the budget; the answer to give."""
    planned = plan_received(ctx, now, job_ids=[job_id], follow_up=False).get(job_id)
    if planned is None:  # the scheduler planned it first and will update the job
        stored = Event.get(Event.job_id == job_id)
        return Answer(stored.status, stored.answer)
    if planned.answer.status != 202:
        return planned.answer
    answer = _run_fast_path(ctx, planned.grant, job_id, now)
    with database.atomic():
        _STORE_ANSWER.run(status=answer.status, answer=answer.body, job_id=job_id)
    return answer


def _run_fast_path(ctx, grant: Grant, job_id: str, now: int) -> Answer:
    due = [action_id for (action_id,) in _DUE_WORK.rows(grant=grant.id, now=now)]
    budget = ctx.config.inline_budget
    started = time.monotonic()
    run_inline(dataclasses.replace(ctx, proxy=ctx.proxy.limited(budget)), due, now, job_id)
    # The scheduler may have claimed some of them first: wait for it within the budget.
    while outbox.in_progress(due) and time.monotonic() - started < budget:
        time.sleep(0.02)
    answer = final_answer(grant_by_id(grant.id), now)
    if answer.status == 202:
        answer = _leave_job_to_due_work(grant, job_id, now)
    return PENDING if answer.status == 202 else answer


def _leave_job_to_due_work(grant: Grant, job_id: str, now: int) -> Answer:
    """The work run here reported to nobody (this webhook answers for it): what is still due
    reports to the job when it is done. Checked again in the transaction that hands the job
    over, so that work completing meanwhile either counts in the answer or finds the job."""
    with database.atomic():
        answer = final_answer(grant_by_id(grant.id), now)
        if answer.status == 202:
            grants.report_to(grant, job_id, now)
    return answer
