"""The synchronous identity-verification hook: approve (200) or send to manual review (412).

Envoy holds the visitor's sign-in until we answer and lets them in if we take longer than
30 s, so the hook fails closed: the answer always leaves within `ENVOY_PROXY_VERIFY_DEADLINE`,
and anything that goes wrong (a locked database, a bug, a slow Proxy) is a 412 with a
message, never a 500. Order: the local watchlist (a read); then, if the install requires it,
the visitor's credential issued now, on the hook's own thread through the runner's claim and
executor (the same grant the later approved `entry_sign_in` reuses); otherwise approve.

The answer and Proxy agree: a credential this hook asked for is kept only with a 200. With a
412 the grant is ended (revoked if anything reached Proxy, else cancelled) and its subject
freed, so that the sign-in a reviewer approves later gets a fresh credential.
"""

import dataclasses
import logging
import threading
import time

from daemon.access import audit, grants, jobs, outbox, watchlist
from daemon.access.installs import install_for_event
from daemon.access.runner import execute
from daemon.rules.policy import Ignore, plan_sign_in
from daemon.rules.request import Answer, EnvoyRequest
from daemon.rules.settings import Settings
from daemon.rules.visits import Visit
from db import (
    Action,
    ActionKind,
    Grant,
    GrantState,
    Verification,
    database,
    grant_by_id,
    now_epoch,
)

log = logging.getLogger("envoy_proxy.verification")

APPROVE = Answer(200, {})
NO_ANSWER = "Proxy did not answer in time"


@dataclasses.dataclass(frozen=True)
class Decision:
    answer: Answer
    reason: str
    entry_id: int | None = None
    deadline_hit: bool = False


def _review(message: str, reason: str, **extra) -> Decision:
    return Decision(Answer.message(412, message), reason, **extra)


class _Verdict:
    """The one answer of a hook call: whichever of the decider and the deadline comes first.

    The decider keeps a credential only if its approval is the answer given; the caller,
    at the deadline, takes the review answer and the decider then gives the credential back.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._given = threading.Event()
        self.final: Decision | None = None
        self.issuing = False  # the decider is issuing the credential (Proxy is being called)

    def offer(self, decision: Decision) -> bool:
        """Make this the answer if none is yet; True if it is the answer."""
        with self._lock:
            if self.final is None:
                self.final = decision
                self._given.set()
            return self.final is decision

    def wait(self, timeout: float) -> bool:
        return self._given.wait(timeout)


def _issue(ctx, request: EnvoyRequest, visit: Visit, settings: Settings, deadline: float):
    """Ask the runner for the visitor's credential and wait for it until the deadline.

    Returns (grant id, failure): failure None when the credential is active.
    """
    now = now_epoch()
    plan = plan_sign_in(visit, settings, now)
    if isinstance(plan, Ignore):
        return None, (plan.message if plan.status == 412 else None)
    with database.atomic():
        # Written only when its meta says something new: an upsert by every hook made the
        # hooks of an install take turns on its row until each one's transaction committed.
        install_for_event(request, now)
        grant, _ = grants.open_window(request.install_id, plan, now, org_id=settings.proxy_org_id)
    if grant.state == GrantState.ACTIVE:
        return grant.id, None
    _issue_now(ctx, grant, now)

    def settled() -> bool:
        with database.connection_context():
            return _state(grant.id)[0] != "waiting"

    ctx.runner.watch.wait(grant.id, settled, deadline)
    with database.connection_context():
        state, failure = _state(grant.id)
    if state == "active":
        return grant.id, None
    return grant.id, failure or NO_ANSWER


def _issue_now(ctx, grant: Grant, now: int) -> None:
    """Run the grant's due issue on this thread, as part of answering the hook: Envoy holds
    the visitor for it, so it is neither queued behind the alarm nor paced as due work is
    while webhooks are answered (`WebhooksFirst`). If another claim has it, or an earlier
    action of the same person runs, the runner does it."""
    with database.connection_context():
        pending = grants.pending_action(grant, ActionKind.ISSUE)
        # Claimed only if due now and not held (claim_one asks both).
        claimed = None if pending is None else outbox.claim_one(pending.id, now, ctx.runner.claimer)
        if claimed is not None:
            execute(ctx, claimed, now)
            ctx.runner.watch.changed(grant.id)
    ctx.rearm(now)  # whatever is left (the issue, if not claimed here; job updates)


def _state(grant_id: int) -> tuple[str, str | None]:
    """`active`, `failed` (with why) or `waiting` for the grant's credential."""
    grant = grant_by_id(grant_id)
    if grant.state == GrantState.ACTIVE:
        return "active", None
    issue = (
        Action.select()
        .where((Action.grant == grant_id) & (Action.kind == ActionKind.ISSUE))
        .order_by(Action.id.desc())
        .first()
    )
    if grant.state != GrantState.PENDING or issue is None:
        return "failed", "the credential's window is closed"
    if issue.done or issue.attempts:
        return "failed", issue.last_error or "Proxy did not confirm the credential"
    return "waiting", None


def _give_back(ctx, grant_id: int) -> None:
    """End the credential this hook asked for and free its subject for a later sign-in."""
    now = now_epoch()
    with database.connection_context(), database.atomic():
        grants.retire(grant_by_id(grant_id), now, "review")
        jobs.settle(grant_id, now)
    ctx.rearm(now)
    log.info("grant %s: given back after manual review was asked", grant_id)


def _decide(ctx, request: EnvoyRequest, visit: Visit, deadline: float, verdict: _Verdict):
    with database.connection_context():
        listed = watchlist.match(visit.email, visit.full_name)
    if listed is not None:
        return _review(f"On the watchlist: {listed.reason}", "watchlist", entry_id=listed.id)
    settings = Settings.from_config(request.config)
    if not settings.verification_require_credential:
        return Decision(APPROVE, "approved")
    if time.monotonic() >= deadline:
        return _review("could not decide in time", "deadline", deadline_hit=True)
    verdict.issuing = True
    grant_id, failure = _issue(ctx, request, visit, settings, deadline)
    decision = Decision(APPROVE, "approved")
    if failure is not None:
        reason = "deadline" if failure == NO_ANSWER else "credential failed"
        decision = _review(
            f"Proxy credential could not be issued: {failure}",
            reason,
            deadline_hit=reason == "deadline",
        )
    if grant_id is not None and not (verdict.offer(decision) and decision.answer.status == 200):
        _give_back(ctx, grant_id)
    return decision


def _decide_and_record(ctx, request, visit, started, verdict: _Verdict) -> None:
    deadline = started + ctx.config.verify_deadline
    try:
        decision = _decide(ctx, request, visit, deadline, verdict)
    except Exception as error:
        log.exception("verification of entry %s failed", visit.id)
        decision = _review(f"the daemon could not decide ({type(error).__name__})", "error")
    verdict.offer(decision)
    _record(ctx, request, visit, verdict.final, started)


def _record(ctx, request: EnvoyRequest, visit: Visit, decision: Decision, started: float):
    """Keep the decision (ids only); after the answer is settled, never in its way."""
    elapsed_ms = int((time.monotonic() - started) * 1000)
    verdict = "approved" if decision.answer.status == 200 else "review"
    try:
        with database.connection_context(), database.atomic():
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
            audit.verified(request, visit, verdict, decision)
    except Exception:
        log.exception("verification of entry %s: the decision could not be recorded", visit.id)
    ctx.metrics.verifications.labels(verdict).inc()
    log.info(
        "verification install=%s entry=%s: %s (%s) in %d ms",
        request.install_id,
        visit.id,
        verdict,
        decision.reason,
        elapsed_ms,
    )


def verify_identity(ctx, request: EnvoyRequest) -> Answer:
    """Answer Envoy's held sign-in within the configured deadline, failing closed."""
    started = time.monotonic()
    visit = Visit.from_payload(request.payload)
    verdict = _Verdict()
    # On a thread of its own: a decision stuck on a locked database finishes in its own time
    # while the hook has answered 412 at the deadline.
    ctx.runner.decide(_decide_and_record, ctx, request, visit, started, verdict)
    if not verdict.wait(ctx.config.verify_deadline + 0.5):
        log.warning("verification of entry %s hit the deadline", visit.id)
        why = f"Proxy credential could not be issued: {NO_ANSWER}" if verdict.issuing else None
        why = why or "the daemon could not decide in time"
        verdict.offer(_review(why, "deadline", deadline_hit=True))
    if verdict.final.deadline_hit:
        ctx.metrics.verification_deadline_hits.inc()
    return verdict.final.answer
