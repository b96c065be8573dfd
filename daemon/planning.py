"""Planning stored deliveries: each event becomes grant rows and outbox actions.

Deliveries are planned in the order they were accepted, several per transaction but never
for longer than `SLICE_SECONDS` at a time, so that webhooks waiting to store their own
deliveries (and the outbox) get the write lock back quickly. A delivery is planned exactly
once: a planner only takes rows whose `body` is still set, inside its IMMEDIATE transaction.

What planning decides becomes the delivery's stored answer. When the webhook already answered
202 (`follow_up`), Envoy's job is updated later: by a job update queued here when the answer
is final, or by the outbox once the access work it waits for is done.
"""

import contextlib
import dataclasses
import json
import logging
import threading
import time

from daemon import grants
from daemon.envoy_client import EnvoyError, EnvoyUserClient
from daemon.envoy_request import Answer, BadRequest, EnvoyRequest
from daemon.inbox import ACCEPTED
from daemon.installs import install_changes, save_install
from daemon.outcomes import grant_attachments, grant_message, queue_answer
from daemon.policy import Close, Ignore, Open, plan_visitor, visit_subject
from daemon.protect import EMPLOYEE_EVENTS, is_employee_event, plan_employee
from daemon.settings import Settings
from daemon.visits import Visit, usable_email
from db import Action, Event, Grant, Install, database, install_or_none
from db.prepared import Prepared, Slot, SlotList, columns

log = logging.getLogger("envoy_proxy.planning")

BATCH = 200  # deliveries read per round
SLICE_SECONDS = 0.02  # longest a planning transaction keeps the write lock (at least one)
# One background planner at a time: two would read and parse the same deliveries, and all
# but one of them would find the rows taken. A run that waits here plans what is left.
_BACKGROUND = threading.Lock()
ENTRY_EVENTS = ("entry_sign_in", "entry_sign_out")


@dataclasses.dataclass
class Planned:
    answer: Answer
    grant: Grant | None = None
    created: bool = False  # a new grant: its due issue already names the Envoy job


def visit_of(request: EnvoyRequest) -> Visit:
    """The payload of an event this plugin handles, or BadRequest if it does not fit."""
    visit = Visit.from_payload(request.payload)
    if (request.event in ENTRY_EVENTS + EMPLOYEE_EVENTS) != (visit.kind == "entries"):
        raise BadRequest(f"`{request.event}` does not fit a payload of type {visit.kind!r}")
    return visit


def _plan(event: str, visit: Visit, install: Install, now: int) -> tuple[object, str]:
    """The plan for this event, and the kind of grant it concerns."""
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


class _Installs:
    """Install rows refreshed from each delivery's meta, written only when the meta differs
    from the previous delivery of the same install in this transaction."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[dict, Install]] = {}

    def remember(self, request: EnvoyRequest, now: int) -> Install:
        changes = install_changes(request, now, event=True)
        seen = self._seen.get(request.install_id)
        if seen is None or seen[0] != changes:
            seen = changes, save_install(request.install_id, changes, now)
            self._seen[request.install_id] = seen
        return seen[1]


def _apply(request: EnvoyRequest, visit: Visit, install: Install, now: int, known: set) -> Planned:
    """Plan one event and write its grant and actions (inside the caller's transaction).

    `known`: the (install, subject) pairs that may have a grant; the caller checked that the
    others of this batch have none.
    """
    plan, kind = _plan(request.event, visit, install, now)
    if not isinstance(plan, Ignore):
        plan = _not_ready(install) or plan
    if isinstance(plan, Ignore):
        return Planned(Answer.message(plan.status, plan.message))
    subject = (request.install_id, plan.subject)
    is_new = subject not in known
    known.add(subject)
    if isinstance(plan, Open) and is_new:
        grant = grants.open_window(
            request.install_id, plan, now, kind, job_id=request.job_id, known_new=True
        )
        answer = ACCEPTED if plan.starts_at <= now else final_answer(grant, now)
        return Planned(answer, grant, created=True)
    if isinstance(plan, Open):
        grant = grants.open_window(request.install_id, plan, now, kind)
        if grant.state in ("ended", "cancelled") and request.event.endswith("sign_in"):
            return Planned(Answer.message(400, "already signed out; no access was given"))
    else:
        assert isinstance(plan, Close)
        grant = grants.close_window(request.install_id, plan, now, kind)
    return Planned(final_answer(grant, now), grant)


_WORK_OUTCOMES = Prepared(
    lambda: Action.select(Action.outcome, Action.done, Action.due_at, Action.last_error).where(
        Action.grant == Slot("grant")
    )
)


def final_answer(grant: Grant, now: int) -> Answer:
    """202 while the grant has due work; else what it came to (200, or 412 if refused)."""
    actions = _WORK_OUTCOMES.all(grant=grant.id)
    if grant.state == "pending":
        failed = next((a for a in actions if a.outcome == "dead"), None)
        if failed is not None:
            return Answer.message(
                412,
                f"Proxy refused the credential: {failed.last_error}",
                attachments=grant_attachments(grant, install_or_none(grant.install_id)),
            )
    if any(not a.done and a.due_at <= now for a in actions):
        return ACCEPTED
    return Answer.message(
        200,
        grant_message(grant, now),
        attachments=grant_attachments(grant, install_or_none(grant.install_id)),
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


def _read(ctx, raw: str) -> tuple[EnvoyRequest, Visit]:
    """A stored body, checked when it was accepted, read again (outside any transaction:
    it may ask Envoy for an employee's email)."""
    request = EnvoyRequest.from_body(json.loads(raw))
    return request, _with_employee_email(ctx, request, visit_of(request))


def _settle(row: "_Row", planned: Planned, now: int, follow_up: bool) -> None:
    """Tie the due work to the Envoy job, or tell Envoy the outcome (the answer is stored
    by the caller)."""
    answer = planned.answer
    if answer.status == 202 and not planned.created:
        grants.report_to(planned.grant, row.job_id, now)
    elif answer.status != 202 and follow_up:
        queue_answer(row.job_id, row.install_id, answer, now)


_STORE_ANSWER = Prepared(
    lambda: Event.update({**columns(Event.status, Event.answer), Event.body: None}).where(
        Event.id == Slot("id")
    )
)


def _store_answers(answers: dict[int, Answer]) -> None:
    """Each planned delivery's answer, in one call into SQLite."""
    _STORE_ANSWER.run_many(
        {"status": answer.status, "answer": answer.body, "id": event_id}
        for event_id, answer in answers.items()
    )


@dataclasses.dataclass
class _Row:
    """A stored delivery read back for planning, or the reason it cannot be planned."""

    id: int
    job_id: str
    install_id: str
    request: EnvoyRequest | None = None
    visit: Visit | None = None
    refusal: Answer | None = None


def _read_row(ctx, event_id: int, job_id: str, install_id: str, raw: str) -> _Row:
    row = _Row(event_id, job_id, install_id)
    try:
        row.request, row.visit = _read(ctx, raw)
    except (BadRequest, ValueError) as error:
        row.refusal = Answer.message(400, f"the stored delivery cannot be planned: {error}")
    return row


def plan_received(
    ctx, now: int, *, job_ids: list[str] | None = None, follow_up: bool = True
) -> dict[str, Planned]:
    """Plan stored deliveries (all, or those of `job_ids`) in the order they arrived.

    `follow_up`: their webhooks answered 202 already, so final answers become Envoy job
    updates. Returns what this call planned, by job id (another planner may take some first).
    """
    if job_ids is not None:
        return _plan_stored(ctx, now, job_ids, follow_up)
    with _BACKGROUND:
        return _plan_stored(ctx, now, None, follow_up)


def _unplanned(of_jobs: bool) -> Prepared:
    """Stored deliveries not yet planned, in arrival order (those of some jobs only)."""
    unplanned = Event.body.is_null(False)
    if of_jobs:
        unplanned &= Event.job_id.in_(SlotList("job_ids"))
    return Prepared(
        lambda: (
            Event.select(Event.id, Event.job_id, Event.install_id, Event.body)
            .where(unplanned)
            .order_by(Event.id)
            .limit(BATCH)
        )
    )


_UNPLANNED, _UNPLANNED_OF_JOBS = _unplanned(of_jobs=False), _unplanned(of_jobs=True)
_STILL_UNPLANNED = Prepared(
    lambda: Event.select(Event.id).where(Event.id.in_(SlotList("ids")) & Event.body.is_null(False))
)
_SUBJECTS_WITH_GRANTS = Prepared(
    lambda: Grant.select(Grant.install_id, Grant.subject).where(
        (Grant.install_id == Slot("install_id")) & Grant.subject.in_(SlotList("subjects"))
    )
)


def _plan_stored(ctx, now: int, job_ids: list[str] | None, follow_up: bool) -> dict[str, Planned]:
    done: dict[str, Planned] = {}
    while True:
        stored = _UNPLANNED.rows() if job_ids is None else _UNPLANNED_OF_JOBS.rows(job_ids=job_ids)
        rows = [_read_row(ctx, *row) for row in stored]
        pending = rows
        while pending:
            # In the background (follow_up), webhooks first; a webhook's own planning is not.
            with ctx.priority.background_step() if follow_up else contextlib.nullcontext():
                pending = _plan_slice(pending, now, follow_up, done)
        if len(rows) < BATCH:
            return done


def _plan_slice(rows: list[_Row], now: int, follow_up: bool, done: dict) -> list[_Row]:
    """Plan deliveries in one transaction until the slice is used up; the rest is returned."""
    installs = _Installs()
    started = time.monotonic()
    answers: dict[int, Answer] = {}
    with database.atomic():
        unplanned = {event_id for (event_id,) in _STILL_UNPLANNED.rows(ids=[r.id for r in rows])}
        known = _known_subjects([row for row in rows if row.id in unplanned])
        rest: list[_Row] = []
        for index, row in enumerate(rows):
            if index and time.monotonic() - started > SLICE_SECONDS:
                rest = rows[index:]
                break
            if row.id not in unplanned:
                continue  # another planner took it
            planned = _plan_one(row, installs, known, now)
            _settle(row, planned, now, follow_up)
            answers[row.id] = planned.answer
            done[row.job_id] = planned
        _store_answers(answers)
    return rest


def _known_subjects(rows: list[_Row]) -> set[tuple[str, str]]:
    """The (install, subject) pairs among these deliveries that already have a grant."""
    wanted: dict[str, set[str]] = {}
    for row in rows:
        if row.visit is not None:
            # An entry's grant may be its invite's.
            subjects = {row.visit.subject, visit_subject(row.visit)}
            wanted.setdefault(row.install_id, set()).update(subjects)
    known = set()
    for install_id, subjects in wanted.items():
        known.update(_SUBJECTS_WITH_GRANTS.rows(install_id=install_id, subjects=sorted(subjects)))
    return known


def _plan_one(row: _Row, installs: _Installs, known: set, now: int) -> Planned:
    if row.refusal is not None:
        return Planned(row.refusal)
    install = installs.remember(row.request, now)
    try:
        with database.atomic():  # a savepoint: one bad delivery must not undo the others
            return _apply(row.request, row.visit, install, now, known)
    except BadRequest as error:
        return Planned(Answer.message(error.status, str(error)))
    except Exception as error:  # a bug must not block every later delivery
        log.exception("planning job %s (%s) failed", row.job_id, row.request.event)
        return Planned(Answer.message(412, f"internal error: {error!r}"))
