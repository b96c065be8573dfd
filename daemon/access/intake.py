"""The intake behind `/envoy/events`: one transaction per event.

Parse once (at the edge), validate, plan, and write the inbox row with its grants, its due
work and the job's wait in one IMMEDIATE transaction; commit; answer. A repeated job id gets
the first answer and changes nothing. Proxy is never called here: due work is the runner's,
woken by `ctx.rearm`. An event answered 202 gets its final outcome as an Envoy job update.

A delivery whose planning fails for a reason of its own (a bug, a row it cannot write) is
quarantined: stored with its body and error, answered 202, and retried with backoff by the
runner (`retry_quarantined`), so it never stands in the way of the next one.
"""

import dataclasses
import json
import logging

from peewee import IntegrityError

from daemon.access import audit, grants, jobs, uninstall
from daemon.access.group_commit import GroupCommit
from daemon.access.installs import install_for_event
from daemon.access.jobs import ACCEPTED
from daemon.access.outbox import MIN_RETRY_SECONDS
from daemon.envoy.client import EnvoyError, EnvoyUserClient
from daemon.retry import backoff_seconds
from daemon.rules.policy import (
    ENTRY_EVENTS,
    HELD,
    VISITOR_EVENTS,
    Close,
    Ignore,
    Open,
    plan_visitor,
)
from daemon.rules.protect import EMPLOYEE_EVENTS, is_employee_event, plan_employee
from daemon.rules.request import Answer, BadRequest, EnvoyRequest
from daemon.rules.settings import Settings
from daemon.rules.visits import Visit, usable_email
from db import (
    LIVE_STATES,
    Event,
    Grant,
    GrantState,
    Install,
    database,
    insert,
    lock_within_transaction,
    now_epoch,
)

log = logging.getLogger("envoy_proxy.events")

QUARANTINE_BACKOFF_CAP_SECONDS = 900
UNAVAILABLE = 503
# The employee-email lookup holds its webhook's answer: bounded well inside Envoy's patience.
LOOKUP_TIMEOUT = (3.05, 5.0)
LOOKUP_RETRY_BUDGET = 5.0


def visit_of(request: EnvoyRequest) -> Visit:
    """The payload of an event this plugin handles, or BadRequest if it does not fit."""
    visit = Visit.from_payload(request.payload)
    if (request.event in ENTRY_EVENTS + EMPLOYEE_EVENTS) != (visit.kind == "entries"):
        raise BadRequest(f"`{request.event}` does not fit a payload of type {visit.kind!r}")
    return visit


def handle_event(ctx, request: EnvoyRequest) -> Answer:
    """Answer one Envoy event (see ENVOY_PROTOCOL §4 for what each status means to Envoy).

    While it is answered, due work keeps to its share of the CPU (`WebhooksFirst`)."""
    with ctx.runner.webhooks_first.serving(), audit.acting_as(audit.ENVOY):
        return _handle_event(ctx, request)


def _handle_event(ctx, request: EnvoyRequest) -> Answer:
    if not request.event:
        raise BadRequest("`meta.event` is missing")
    if not request.job_id:
        raise BadRequest("`meta.job.id` is missing")
    now = now_epoch()
    if request.event == uninstall.EVENT:
        answer = _store(request, None, now, lambda: (uninstall.on_event(request, now), None))
        ctx.rearm(now)  # its endings are due now
        return answer
    if request.event not in VISITOR_EVENTS + EMPLOYEE_EVENTS:
        answer = Answer.message(400, f"event {request.event!r} is not handled by this plugin")
        return _store(request, None, now, lambda: (answer, None))
    visit = visit_of(request)  # BadRequest: answered 4xx, nothing stored
    visit = _with_employee_email(ctx, request, visit)
    try:
        answer = _store(request, visit.subject, now, lambda: _apply(request, visit, now))
    except BadRequest:
        raise
    except Exception as error:  # a bug or a write that failed: keep it, apart from the rest
        log.exception("job %s (%s) could not be planned; quarantined", request.job_id,
                      request.event)  # fmt: skip
        answer = _quarantine(request, visit.subject, now, error)
    if answer.status == 202:
        ctx.rearm(now)
    ctx.metrics.event(request.event, answer.status)
    return answer


_GROUP = GroupCommit()


def _store(request: EnvoyRequest, entity: str | None, now: int, decide) -> Answer:
    """`decide()`'s answer, stored with the delivery in one transaction (shared with the
    events that arrived meanwhile: `GroupCommit`); `decide` returns the answer and the grant
    the job waits on, if any.

    A job id seen before (Envoy delivers again when an answer was lost) loses the insert on
    the inbox's unique job id: its planning is rolled back and it gets the first answer.
    Asking first would cost every delivery a statement for the rare repeat.
    """

    def store() -> Answer:
        answer, waits_on = decide()
        insert(Event, **_event_row(request, entity, now, answer), waits_on=waits_on)
        return answer

    try:
        return _GROUP.run(store)
    except IntegrityError:
        earlier = _answer_given(request.job_id)
        if earlier is None:
            raise
        return earlier


def _answer_given(job_id: str) -> Answer | None:
    """The answer stored for this job id, if it was stored."""
    earlier = Event.select(Event.status, Event.answer).where(Event.job_id == job_id).first()
    return None if earlier is None else Answer(earlier.status, earlier.answer)


def _event_row(request: EnvoyRequest, entity: str | None, now: int, answer: Answer) -> dict:
    """The inbox row of a delivery and the answer it got."""
    return {
        "job_id": request.job_id,
        "event": request.event,
        "install_id": request.install_id,
        "entity": entity,
        "received_at": now,
        "status": answer.status,
        "answer": answer.body,
    }


def _quarantine(request: EnvoyRequest, entity: str | None, now: int, error: Exception) -> Answer:
    """Store the delivery unplanned, with its error, for a later retry; 503 when even that
    cannot be written (Envoy then delivers it again)."""
    try:
        with database.atomic():
            Event.insert(
                **_event_row(request, entity, now, ACCEPTED),
                body=json.dumps({"meta": request.meta, "payload": request.payload}),
                attempts=1,
                next_attempt_at=now + _delay(1),
                last_error=_described(error),
            ).on_conflict_ignore().execute()
        # A repeat of a job stored before keeps the first answer.
        return _answer_given(request.job_id) or ACCEPTED
    except Exception:
        log.exception("job %s could not be stored either", request.job_id)
        return Answer.message(UNAVAILABLE, "the delivery could not be stored; deliver it again")


def _described(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"[:500]


def _delay(attempts: int) -> int:
    return MIN_RETRY_SECONDS + int(backoff_seconds(attempts, QUARANTINE_BACKOFF_CAP_SECONDS))


def _apply(request: EnvoyRequest, visit: Visit, now: int) -> tuple[Answer, int | None]:
    """Plan one event and write what it changes; call inside the event's transaction.

    Returns the answer and, when it is 202, the grant whose due work the job waits on."""
    # Another instance planning the same visit now would read the same old grant.
    lock_within_transaction(f"grant {request.install_id} {visit.subject}")
    install = install_for_event(request, now)
    settings = Settings.from_config(install.config or {})
    if is_employee_event(request.event, visit):
        kind = "employee"
        plan = plan_employee(request.event, visit, settings, now, install.timezone)
    else:
        kind = "visitor"
        plan = plan_visitor(request.event, visit, settings, now)
    # Until the install is set up nothing can be given, and the admin is told which step to
    # run; an ending never waits for that (a grant is ended with its own org's credentials).
    if not isinstance(plan, Close):
        plan = _not_ready(install, settings) or plan
    if isinstance(plan, Ignore):
        return audit.ignored(request, visit, Answer.message(plan.status, plan.message)), None
    if isinstance(plan, Open):
        grant, created = grants.open_window(
            request.install_id, plan, now, kind, settings.proxy_org_id
        )
        if created:
            # Nothing else waits on a new grant, and its only due work is its issue.
            answer = ACCEPTED if plan.starts_at <= now else jobs.final_answer(grant, now, install)
        else:
            answer = _answer_for(request, grant, install, now)
    else:
        assert isinstance(plan, Close)
        grant = grants.close_window(request.install_id, plan, now, kind)
        if grant is None:
            over = Answer.message(400, "the invite's access window is already over")
            return audit.ignored(request, visit, over), None
        if plan.reason and grant.state not in LIVE_STATES:  # no access was left to end
            jobs.settle(grant.id, now)
            refused = Answer.message(400, plan.reason)
            audit.decided(request, plan, grant, refused)
            return refused, None
        answer = _answer_for(request, grant, install, now)
    audit.decided(request, plan, grant, answer)
    return answer, (grant.id if answer.status == 202 else None)


def _answer_for(request: EnvoyRequest, grant: Grant, install: Install, now: int) -> Answer:
    """The answer for an event that changed an existing grant (jobs of its earlier events
    that waited on it are told first)."""
    if grant.on_hold:  # 202 while its access is being ended, then: held
        jobs.settle(grant.id, now)
        answer = jobs.final_answer(grant, now, install)
        return answer if answer.status == 202 else Answer.message(400, HELD)
    if grant.state in (GrantState.ENDED, GrantState.CANCELLED) and request.event.endswith(
        "sign_in"
    ):
        return Answer.message(400, "already signed out; no access was given")
    jobs.settle(grant.id, now)
    return jobs.final_answer(grant, now, install)


def _not_ready(install: Install, settings: Settings) -> Ignore | None:
    if install.uninstalled_at is not None:
        return Ignore(412, "the plugin was uninstalled for this location: install it again")
    if not install.proxy_secret or not settings.proxy_app_key or not settings.proxy_org_id:
        return Ignore(412, "Proxy access is not set up for this install: run the Proxy Access step")
    if not settings.proxy_site_id:
        return Ignore(412, "no Proxy site is selected for this install: run the Site step")
    return None


def _with_employee_email(ctx, request: EnvoyRequest, visit: Visit) -> Visit:
    """Protect entries may lack an email: ask Envoy's user API for the employee's.

    Asked here, on this webhook's own thread and before its transaction, so that a slow user
    API delays this answer only. If it fails, nothing is stored and Envoy is asked to deliver
    again (503), as it does for answers that are not 2xx.
    """
    if visit.email or not visit.employee_id or not is_employee_event(request.event, visit):
        return visit
    users = EnvoyUserClient.from_meta(
        ctx.config.envoy_base_url,
        request.meta,
        timeout=LOOKUP_TIMEOUT,
        retry_budget=LOOKUP_RETRY_BUDGET,
    )
    if users is None:
        return visit
    try:
        employee = users.get_employee(visit.employee_id)
    except EnvoyError as error:
        log.warning("employee %s: email lookup failed: %s", visit.employee_id, error)
        raise BadRequest(
            f"the employee's email could not be looked up in Envoy ({error}); deliver again",
            status=UNAVAILABLE,
        ) from None
    return dataclasses.replace(visit, email=usable_email((employee or {}).get("email")))


def retry_quarantined(ctx, now: int, limit: int = 50) -> int:
    """Plan again the quarantined deliveries that are due, each in its own transaction.

    One that fails again is pushed back with backoff; the others go on. Returns how many were
    planned. Their jobs, answered 202, get the final answer as a job update.
    """
    due = list(
        Event.select()
        .where(Event.body.is_null(False) & (Event.next_attempt_at <= now))
        .order_by(Event.next_attempt_at, Event.id)
        .limit(limit)
    )
    planned = 0
    for stored in due:
        try:
            request = EnvoyRequest.from_body(json.loads(stored.body))
            visit = _with_employee_email(ctx, request, visit_of(request))
            with database.atomic():
                answer, waits_on = _apply_stored(request, visit, now)
                Event.update(status=answer.status, answer=answer.body, body=None,
                             last_error=None, next_attempt_at=None, waits_on=waits_on).where(
                    Event.id == stored.id).execute()  # fmt: skip
            planned += 1
        except BadRequest as error:
            _refuse_stored(stored, Answer.message(error.status, str(error)), now)
        except Exception as error:
            log.exception("quarantined job %s failed again", stored.job_id)
            _push_back(stored, error, now)
    return planned


def _apply_stored(request: EnvoyRequest, visit: Visit, now: int) -> tuple[Answer, int | None]:
    """Plan a stored delivery; its job was answered 202, so a final answer is a job update."""
    answer, waits_on = _apply(request, visit, now)
    if answer.status != 202:
        jobs.queue_answer(request.job_id, request.install_id, answer, now)
    return answer, waits_on


def _refuse_stored(stored: Event, answer: Answer, now: int) -> None:
    if answer.status == UNAVAILABLE:  # the user API again: try later
        _push_back(stored, RuntimeError(answer.body.get("message")), now)
        return
    with database.atomic():
        jobs.queue_answer(stored.job_id, stored.install_id, answer, now)
        Event.update(status=answer.status, answer=answer.body, body=None,
                     next_attempt_at=None).where(Event.id == stored.id).execute()  # fmt: skip


def _push_back(stored: Event, error: Exception, now: int) -> None:
    attempts = stored.attempts + 1
    with database.atomic():
        Event.update(attempts=attempts, last_error=_described(error),
                     next_attempt_at=now + _delay(attempts)).where(
            Event.id == stored.id).execute()  # fmt: skip
