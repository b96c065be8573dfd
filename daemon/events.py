"""The event worker behind `/envoy/events`: inbox, plan, one commit, fast path, answer.

Every accepted delivery is recorded in the inbox (unique on `meta.job.id`) in the same
transaction as the grants and actions it causes, so a duplicate delivery returns the first
answer and changes nothing. After the commit the event's own due actions run inline within a
small budget; if Proxy is slow or down the answer is 202 and the outbox finishes the job later
(and updates the Envoy job).
"""

import dataclasses
import logging
import time

from peewee import IntegrityError

from daemon import grants, outbox
from daemon.envoy_client import EnvoyError, EnvoyUserClient
from daemon.envoy_request import Answer, BadRequest, EnvoyRequest
from daemon.installs import remember_install
from daemon.outcomes import grant_attachments, grant_message
from daemon.policy import VISITOR_EVENTS, Close, Ignore, Open, plan_visitor
from daemon.protect import EMPLOYEE_EVENTS, is_employee_event, plan_employee
from daemon.settings import Settings
from daemon.visits import Visit, usable_email
from daemon.worker import run_inline
from db import Action, Event, Grant, Install, database, now_epoch

log = logging.getLogger("envoy_proxy.events")

ENTRY_EVENTS = ("entry_sign_in", "entry_sign_out")
PENDING = Answer.message(
    202, "Proxy did not answer in time; the job is updated when the change is done"
)


def _plan(event: str, visit: Visit, install: Install, now: int) -> tuple[object, str]:
    """The plan for this event, and the kind of grant it concerns."""
    if (event in ENTRY_EVENTS + EMPLOYEE_EVENTS) != (visit.kind == "entries"):
        raise BadRequest(f"`{event}` does not fit a payload of type {visit.kind!r}")
    settings = Settings.from_config(install.config or {})
    if is_employee_event(event, visit):
        return plan_employee(event, visit, settings, now, install.timezone), "employee"
    return plan_visitor(event, visit, settings, now), "visitor"


def _not_ready(install: Install) -> Ignore | None:
    settings = Settings.from_config(install.config or {})
    if not install.proxy_secret or not settings.proxy_app_key or not settings.proxy_org_id:
        return Ignore(412, "Proxy access is not set up for this install: run the Proxy Access step")
    if not settings.proxy_site_id:
        return Ignore(412, "no Proxy site is selected for this install: run the Site step")
    return None


def _record(request: EnvoyRequest, visit: Visit | None, answer: Answer, now: int) -> None:
    Event.create(
        job_id=request.job_id,
        event=request.event,
        install_id=request.install_id,
        entity=visit.subject if visit else None,
        received_at=now,
        status=answer.status,
        answer=answer.body,
    )


def _apply(request: EnvoyRequest, visit: Visit, now: int) -> tuple[Answer | None, Grant | None]:
    """The transaction: install, plan, grant rows, inbox row. Returns an answer or a grant."""
    install = remember_install(request, now, event=True)
    plan, kind = _plan(request.event, visit, install, now)
    if not isinstance(plan, Ignore):
        plan = _not_ready(install) or plan
    if isinstance(plan, Ignore):
        answer = Answer.message(plan.status, plan.message)
        _record(request, visit, answer, now)
        return answer, None
    if isinstance(plan, Open):
        grant = grants.open_window(request.install_id, plan, now, kind)
        if grant.state in ("ended", "cancelled") and request.event.endswith("sign_in"):
            answer = Answer.message(400, "already signed out; no access was given")
            _record(request, visit, answer, now)
            return answer, None
    else:
        assert isinstance(plan, Close)
        grant = grants.close_window(request.install_id, plan, now, kind)
    # Provisional until the fast path has run; a crash before the update still answers 202.
    _record(request, visit, PENDING, now)
    Action.update(payload={"job_id": request.job_id}).where(
        (Action.grant == grant) & (Action.done == False)  # noqa: E712
    ).execute()
    return None, grant


def _final_answer(grant: Grant, now: int) -> Answer:
    install = Install.get_or_none(install_id=grant.install_id)
    failed_issue = (
        Action.select().where((Action.grant == grant) & (Action.outcome == "dead")).first()
    )
    if failed_issue is not None and grant.state == "pending":
        return Answer.message(
            412,
            f"Proxy refused the credential: {failed_issue.last_error}",
            attachments=grant_attachments(grant, install),
        )
    due_work = (
        Action.select()
        .where(
            (Action.grant == grant)
            & (Action.done == False)  # noqa: E712
            & (Action.due_at <= now)
        )
        .exists()
    )
    if due_work:
        return PENDING
    return Answer.message(
        200, grant_message(grant, now), attachments=grant_attachments(grant, install)
    )


def _with_employee_email(ctx, request: EnvoyRequest, visit: Visit) -> Visit:
    """Protect entries may lack an email: ask Envoy's user API for the employee's."""
    if visit.email or not visit.employee_id or not is_employee_event(request.event, visit):
        return visit
    users = EnvoyUserClient.from_meta(ctx.config.envoy_base_url, request.meta)
    if users is None:
        return visit
    try:
        employee = users.get_employee(visit.employee_id)
    except EnvoyError as error:
        log.warning("employee %s: email lookup failed: %s", visit.employee_id, error)
        return visit
    return dataclasses.replace(visit, email=usable_email((employee or {}).get("email")))


def handle_event(ctx, request: EnvoyRequest) -> Answer:
    """Answer one Envoy event (see ENVOY_PROTOCOL §4 for what each status means to Envoy)."""
    if not request.event:
        raise BadRequest("`meta.event` is missing")
    if not request.job_id:
        raise BadRequest("`meta.job.id` is missing")
    previous = Event.get_or_none(job_id=request.job_id)
    if previous is not None:
        return Answer(previous.status, previous.answer)
    now = now_epoch()
    visit = None
    if request.event in VISITOR_EVENTS + EMPLOYEE_EVENTS:
        visit = _with_employee_email(ctx, request, Visit.from_payload(request.payload))
    try:
        with database.atomic():
            if visit is None:
                remember_install(request, now, event=True)
                answer = Answer.message(
                    400, f"event {request.event!r} is not handled by this plugin"
                )
                _record(request, None, answer, now)
                grant = None
            else:
                answer, grant = _apply(request, visit, now)
    except IntegrityError:
        # The same job delivered twice at once: the other delivery committed first.
        previous = Event.get(job_id=request.job_id)
        return Answer(previous.status, previous.answer)
    if grant is not None:
        answer = _run_fast_path(ctx, grant, now)
        with database.atomic():
            Event.update(status=answer.status, answer=answer.body).where(
                Event.job_id == request.job_id
            ).execute()
    ctx.rearm(outbox.next_due())
    ctx.metrics.event(request.event, answer.status)
    return answer


def _run_fast_path(ctx, grant: Grant, now: int) -> Answer:
    due = [
        a.id
        for a in Action.select(Action.id).where(
            (Action.grant == grant) & (Action.done == False) & (Action.next_attempt_at <= now)  # noqa: E712
        )
    ]
    if due and ctx.config.inline_budget > 0:
        budget = ctx.config.inline_budget
        started = time.monotonic()
        run_inline(dataclasses.replace(ctx, proxy=ctx.proxy.limited(budget)), due, now)
        # The scheduler may have claimed some of them first: wait for it within the budget.
        while outbox.in_progress(due) and time.monotonic() - started < budget:
            time.sleep(0.02)
    return _final_answer(Grant.get_by_id(grant.id), now)
