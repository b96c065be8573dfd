"""The synchronous identity-verification hook: approve (200) or send to manual review (412).

Envoy holds the visitor's sign-in until we answer and gives up after 30 s, so the answer
always leaves within `ENVOY_PROXY_VERIFY_DEADLINE`. Order: the local watchlist; then, if the
install requires it, the visitor's credential issued now (the same grant the later
`entry_sign_in` reuses); otherwise approve. Each decision is recorded with ids only.
"""

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from daemon import grants, outbox, watchlist
from daemon.envoy_request import Answer, EnvoyRequest
from daemon.installs import remember_install
from daemon.policy import Ignore, plan_sign_in
from daemon.settings import Settings
from daemon.visits import Visit
from daemon.worker import run_inline
from db import Action, Grant, Verification, database, now_epoch

log = logging.getLogger("envoy_proxy.verification")

APPROVE = Answer(200, {})


@dataclasses.dataclass(frozen=True)
class Decision:
    answer: Answer
    reason: str
    entry_id: int | None = None
    deadline_hit: bool = False


def _review(message: str, reason: str, **extra) -> Decision:
    return Decision(Answer.message(412, message), reason, **extra)


def _issue_within(ctx, grant_id: int, budget: float, now: int) -> str | None:
    """Run the grant's issue action with Proxy calls bounded by `budget`; None if active."""
    limited = dataclasses.replace(ctx, proxy=ctx.proxy.limited(max(0.5, budget)))

    def attempt() -> str | None:
        with database.connection_context():
            due = [
                a.id
                for a in Action.select(Action.id).where(
                    (Action.grant == grant_id)
                    & (Action.kind == grants.ISSUE)
                    & (Action.done == False)  # noqa: E712
                )
            ]
            run_inline(limited, due, now)
            # The scheduler may have claimed it first: wait for it (the caller's timeout
            # bounds the wait by the deadline).
            while outbox.in_progress(due):
                time.sleep(0.02)
            grant = Grant.get_by_id(grant_id)
            if grant.state == "active":
                return None
            failed = Action.get_or_none(Action.grant == grant_id, Action.kind == grants.ISSUE)
            return (failed.last_error if failed else None) or "Proxy did not confirm the credential"

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify")
    try:
        return pool.submit(attempt).result(timeout=budget)
    finally:
        pool.shutdown(wait=False)


def _require_credential(ctx, request, visit, settings, deadline: float) -> Decision | None:
    now = now_epoch()
    plan = plan_sign_in(visit, settings, now)
    if isinstance(plan, Ignore):
        if plan.status == 412:
            return _review(f"Proxy credential could not be issued: {plan.message}", "no email")
        return None  # flow not mapped, or walk-ins not served: nothing to require
    with database.atomic():
        remember_install(request, now)
        grant = grants.open_window(request.install_id, plan, now)
    if grant.state == "active":
        return None
    remaining = deadline - time.monotonic()
    try:
        failure = _issue_within(ctx, grant.id, remaining, now)
    except FutureTimeout:
        ctx.metrics.verification_deadline_hits.inc()
        log.warning("verification of entry %s hit the deadline; the outbox goes on", visit.id)
        return _review(
            "Proxy credential could not be issued: Proxy did not answer in time",
            "deadline",
            deadline_hit=True,
        )
    if failure:
        return _review(f"Proxy credential could not be issued: {failure}", "credential failed")
    return None


def _decide(ctx, request: EnvoyRequest, visit: Visit, deadline: float) -> Decision:
    listed = watchlist.match(visit.email, visit.full_name)
    if listed is not None:
        return _review(f"On the watchlist: {listed.reason}", "watchlist", entry_id=listed.id)
    settings = Settings.from_config(request.config)
    if settings.verification_require_credential:
        decision = _require_credential(ctx, request, visit, settings, deadline)
        if decision is not None:
            return decision
    return Decision(APPROVE, "approved")


def verify_identity(ctx, request: EnvoyRequest) -> Answer:
    """Answer Envoy's held sign-in within the configured deadline."""
    started = time.monotonic()
    visit = Visit.from_payload(request.payload)
    decision = _decide(ctx, request, visit, started + ctx.config.verify_deadline)
    elapsed_ms = int((time.monotonic() - started) * 1000)
    verdict = "approved" if decision.answer.status == 200 else "review"
    with database.atomic():
        Verification.create(
            install_id=request.install_id,
            entry_id=visit.id,
            decision=verdict,
            reason=decision.reason,
            watchlist_entry=decision.entry_id,
            deadline_hit=decision.deadline_hit,
            duration_ms=elapsed_ms,
            decided_at=now_epoch(),
        )
    ctx.metrics.verifications.labels(verdict).inc()
    log.info(
        "verification install=%s entry=%s: %s (%s) in %d ms",
        request.install_id,
        visit.id,
        verdict,
        decision.reason,
        elapsed_ms,
    )
    return decision.answer
