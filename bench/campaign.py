"""What the fault campaigns share: a mix of visits, an Envoy that retries, the final check.

A campaign sends stories (one visit's events in their natural order: a walk-in's sign-in and
sign-out, an invite created, moved, signed into and removed, a Protect employee's day) on
lanes: each lane is one sender that waits for an answer before its next delivery, as the
events of one visit are minutes apart in life. Stories never share a person, so the daemon's
order of the events of one subject is the lane's order, which is what the oracle replays.
Envoy resends a delivery that got no 2xx/4xx answer, up to 5 times (Envoy spreads them over
10 minutes; here 1, 2, 4, 8 and 16 s, to keep campaigns short). A delivery Envoy gave up on may
still have been committed (the answer was lost): the oracle replays it where the lane sent it
when the inbox holds its job id.

The daemon plans and stores each event in one transaction and answers at once: an event
whose Proxy work is due now is answered 202, and its final outcome reaches Envoy as a job
update once that work is done. Every job answered 202 must end with exactly one final job
update (done, ignored or failed); the drain also waits for quarantined deliveries.
"""

import contextlib
import http.client
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (
    INSTALL_ID,
    SITE_CONFIG,
    Daemon,
    EnvoySim,
    KeepAlive,
    Sandbox,
    SandboxClient,
    daemon_db,
    prepare_install,
    signed,
    wait_for,
)
from bench.oracle import Oracle, compare, future_actives, timeline
from sandbox.envoy import entry_event, invite_event

CAMPAIGN_CONFIG = {
    **SITE_CONFIG,
    "protect_enabled": True,
    "protect_limit_access": True,
    "protect_access_duration_minutes": 240,
}
DEMO_STAFF = {"erin@example.com", "sam@example.com"}
STATUS_MARGIN = 35  # Proxy applies statuses >= 5 s (30 s after a clock dispute) after the call
# How long after an event Proxy's timeline may still differ from the windows: the daemon's
# work and a status's lead, a restart after a SIGKILL (issue 16's proof, in the campaigns).
TIMELINE_TOLERANCE = 10
RETRIES = 5
DAY = 86400


@dataclass
class Event:
    body: dict
    raw: bytes
    headers: dict

    @property
    def job_id(self) -> str:
        return self.body["meta"]["job"]["id"]


def _event(body: dict) -> Event:
    raw, headers = signed(body)
    return Event(body, raw, headers)


def employee_seed(k: int) -> dict:
    """A Protect employee as Proxy has them before the campaign: suspended, tagged staff."""
    return {
        "orgId": "org-1", "siteId": "site-1", "name": f"Employee {k}",
        "email": f"emp-{k}@example.com", "tags": ["staff"],
        "scheduledStatuses": [{"status": "suspended", "scheduledDate": "2020-01-01T00:00:00Z"}],
    }  # fmt: skip


class Stories:
    """Random visits whose events the daemon must turn into the oracle's state."""

    def __init__(self, seed: int, config: dict = CAMPAIGN_CONFIG, tag: str = "c"):
        self.rng = random.Random(seed)
        self.config = config
        self.tag = tag
        self.serial = 0
        self.employees: list[dict] = []

    def _next(self) -> int:
        self.serial += 1
        return self.serial

    def _common(self) -> dict:
        return {"config": self.config, "install_id": INSTALL_ID, "job_id": str(uuid.uuid4())}

    def walk_in(self, now: float) -> list[Event]:
        n, rng = self._next(), self.rng
        flow = rng.choice(["flow-visitor"] * 5 + ["flow-contractor"] * 3 + ["flow-unmapped"])
        email = None if rng.random() < 0.05 else f"{self.tag}-walk-{n}@example.com"
        signed_in = now - rng.randint(0, 600)
        story = [
            entry_event(entry_id=f"{self.tag}-w{n}", full_name=f"Walk In {n}", email=email,
                        flow_id=flow, signed_in_at=signed_in, **self._common())
        ]  # fmt: skip
        if rng.random() < 0.5:
            story.append(
                entry_event("entry_sign_out", entry_id=f"{self.tag}-w{n}", full_name=f"Walk In {n}",
                            email=email, flow_id=flow, signed_in_at=signed_in,
                            signed_out_at=now, **self._common())
            )  # fmt: skip
        return [_event(body) for body in story]

    def invite(self, now: float) -> list[Event]:
        n, rng = self._next(), self.rng
        flow = rng.choice(["flow-visitor", "flow-contractor"])
        email = f"{self.tag}-guest-{n}@example.com"
        invite_id = f"{self.tag}-i{n}"

        def arrival():
            return now + 2 * DAY if rng.random() < 0.3 else now + rng.randint(-600, 1200)

        def invite(event, at):
            return invite_event(event, invite_id=invite_id, full_name=f"Guest {n}", email=email,
                                flow_id=flow, expected_arrival=at, **self._common())  # fmt: skip

        first = arrival()
        story = [invite("invite_created", first)]
        if rng.random() < 0.4:
            # A started window moved days ahead keeps an issued credential until its new end
            # but not one still pending: a race the oracle cannot call, so not generated.
            second = arrival() if first > now + DAY else now + rng.randint(-600, 1200)
            story.append(invite("invite_updated", second))
        if rng.random() < 0.4:
            entry = {"entry_id": f"{self.tag}-ie{n}", "full_name": f"Guest {n}", "email": email,
                     "flow_id": flow, "invite_id": invite_id, "signed_in_at": now}  # fmt: skip
            story.append(entry_event(**entry, **self._common()))
            if rng.random() < 0.5:
                story.append(
                    entry_event("entry_sign_out", signed_out_at=now, **entry, **self._common())
                )
        if rng.random() < 0.2:
            story.append(invite("invite_removed", arrival()))
        return [_event(body) for body in story]

    def employee(self, now: float) -> list[Event]:
        k = len(self.employees) + 1
        self.employees.append(employee_seed(k))
        entry = {"entry_id": f"{self.tag}-emp{k}", "full_name": f"Employee {k}",
                 "email": f"emp-{k}@example.com", "flow_id": "flow-employee",
                 "employee_id": f"e-{k}", "employee_screening": True,
                 "signed_in_at": now}  # fmt: skip
        story = [entry_event("employee_entry_sign_in", **entry, **self._common())]
        if self.rng.random() < 0.5:
            story.append(
                entry_event("employee_entry_sign_out", signed_out_at=now, **entry, **self._common())
            )
        return [_event(body) for body in story]

    def make(self, events: int, now: float | None = None) -> list[list[Event]]:
        """Stories totalling at least `events` events (about 45% walk-ins, 40% invites)."""
        now = time.time() if now is None else now
        stories, total = [], 0
        while total < events:
            pick = self.rng.random()
            kind = self.walk_in if pick < 0.45 else self.invite if pick < 0.85 else self.employee
            story = kind(now)
            stories.append(story)
            total += len(story)
        return stories


def lanes_of(stories: list[list[Event]], count: int, rng: random.Random) -> list[list[Event]]:
    """Share stories among `count` lanes; a lane interleaves its stories, each kept in order."""
    lanes: list[list[list[Event]]] = [[] for _ in range(count)]
    for i, story in enumerate(stories):
        lanes[i % count].append(list(story))
    out = []
    for mine in lanes:
        lane = []
        while any(mine):
            story = rng.choice([s for s in mine if s])
            lane.append(story.pop(0))
        out.append(lane)
    return out


@dataclass
class Delivery:
    event: Event
    together: bool = False  # a second copy sent at the same moment from another connection


@dataclass
class Sent:
    """What Envoy saw: per lane, each event once, in sending order, with the time of its first
    answer and whether it got one (False: Envoy gave up); and every status each job got."""

    accepted: list[list[tuple[Event, float, bool]]] = field(default_factory=list)
    given_up: list[Event] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    answers: dict[str, set[int]] = field(default_factory=dict)
    attempts: int = 0
    elapsed: float = 0.0

    @property
    def answered_jobs(self) -> set[str]:
        return {event.job_id for lane in self.accepted for event, _, ok in lane if ok}

    @property
    def jobs(self) -> set[str]:
        return {event.job_id for lane in self.accepted for event, _, _ in lane}

    @property
    def accepted_later(self) -> set[str]:
        """Jobs answered 202 by any delivery: each is owed a final job update."""
        return {job for job, statuses in self.answers.items() if 202 in statuses}

    def record(self, job_id: str, status: int | None) -> None:
        self.attempts += 1
        self.statuses[status or "no answer"] += 1
        if status is not None:
            self.answers.setdefault(job_id, set()).add(status)


class Envoy:
    """Envoy's webhook sender: lanes in parallel, each sequential, with retries."""

    def __init__(self, url: str, retries: int = RETRIES, backoff: float = 1.0, pace: float = 0.0):
        self.url, self.retries, self.backoff, self.pace = url, retries, backoff, pace
        self._lock = threading.Lock()

    def _post(self, conn: KeepAlive, event: Event) -> int | None:
        try:
            status, _ = conn.request("POST", "/envoy/events", event.raw, event.headers)
            return status
        except (OSError, http.client.HTTPException):
            return None

    def _post_twin(self, event: Event, sent: Sent) -> None:
        status = self._post(KeepAlive(self.url, timeout=30), event)
        with self._lock:
            sent.record(event.job_id, status)

    def _deliver(self, conn: KeepAlive, delivery: Delivery, sent: Sent) -> int | None:
        """One delivery with Envoy's retries; the status that ended it, None if given up."""
        for attempt in range(self.retries + 1):
            twin = None
            if delivery.together:
                twin = threading.Thread(target=self._post_twin, args=(delivery.event, sent))
                twin.start()
            status = self._post(conn, delivery.event)
            if twin is not None:
                twin.join()
            with self._lock:
                sent.record(delivery.event.job_id, status)
            if status is not None and status < 500:
                return status
            time.sleep(self.backoff * 2**attempt)
        return None

    def send(self, lanes: list[list[Delivery]], time_limit: float = 600) -> Sent:
        sent = Sent(accepted=[[] for _ in lanes])
        deadline = time.monotonic() + time_limit
        began = time.monotonic()

        def run(index: int) -> None:
            conn = KeepAlive(self.url, timeout=30)
            seen = set()
            for delivery in lanes[index]:
                if time.monotonic() > deadline:
                    break
                status = self._deliver(conn, delivery, sent)
                job = delivery.event.job_id
                if status is None:
                    with self._lock:
                        sent.given_up.append(delivery.event)
                if job not in seen:
                    seen.add(job)
                    sent.accepted[index].append((delivery.event, time.time(), status is not None))
                if self.pace:
                    time.sleep(self.pace)
            conn.close()

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(lanes))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=time_limit + 120)
        sent.elapsed = time.monotonic() - began
        return sent


def replay(
    sent: Sent, employees: list[dict], committed: set[str], config: dict = CAMPAIGN_CONFIG
) -> Oracle:
    """The oracle after the events the daemon accepted: those answered, and those Envoy gave
    up on whose job id the inbox (`committed`) holds anyway."""
    oracle = Oracle(config)
    oracle.employees = {e["email"]: e for e in employees}
    for lane in sent.accepted:
        for event, at, answered in lane:
            if answered or event.job_id in committed:
                oracle.apply(event.body, at)
    return oracle


def outbox_backlog(state: Path) -> tuple[int, int]:
    """(actions due and not done, revoke actions given up) in the daemon's database."""
    with daemon_db(state) as db:
        now = int(time.time())
        due = (
            db.Action.select()
            .where((db.Action.done == False) & (db.Action.due_at <= now))  # noqa: E712
            .count()
        )
        dead = (
            db.Action.select()
            .where((db.Action.kind == "revoke") & (db.Action.outcome == "dead"))
            .count()
        )
        return due, dead


def quarantined(state: Path) -> int:
    """Deliveries stored unplanned after their planning failed, waiting for a retry."""
    with daemon_db(state) as db:
        return db.Event.select().where(db.Event.body.is_null(False)).count()


def jobs_waiting(state: Path) -> int:
    """Jobs answered 202 that still wait for their grant's due work (no job update yet)."""
    with daemon_db(state) as db:
        return db.Event.select().where(db.Event.waits_on.is_null(False)).count()


def work_left(state: Path) -> int:
    """Quarantined deliveries plus actions due and not done (job updates included)."""
    return quarantined(state) + outbox_backlog(state)[0]


FINAL_JOB_STATUSES = ("done", "ignored", "failed")


@dataclass
class JobUpdates:
    """Envoy job updates as the daemon's outbox records them: an update action is `done` only
    after the simulator accepted the PATCH. (The simulator keeps its own record of the PATCHes
    in memory, with no route to read it over HTTP.)"""

    owed: int  # jobs that must end with a final update
    missing: list[str]  # owed jobs without a final update sent
    waiting: list[str]  # of `missing`: still waiting for their grant's due work (`Event.waits_on`)
    dead: int  # job updates given up after their retries
    statuses: Counter  # final statuses sent, one per job (the last sent)
    repeated: int  # owed jobs told a final status more than once

    @property
    def ok(self) -> bool:
        return not self.missing and self.dead == 0 and self.repeated == 0

    def describe(self) -> str:
        return (
            f"{self.owed} jobs owed a final job update, {self.owed - len(self.missing)} got one "
            f"{dict(self.statuses)}, {len(self.missing)} never finished ({len(self.waiting)} "
            f"still waiting for their work), {self.dead} updates given up, {self.repeated} "
            f"jobs updated twice or more"
        )


def job_updates(state: Path, accepted_later: set[str]) -> JobUpdates:
    """Which jobs got a final Envoy job update. Owed one: every job answered 202
    (`accepted_later`, as Envoy saw the answers) and every job the daemon still keeps waiting
    (answered 202, the answer perhaps lost in a crash)."""
    with daemon_db(state) as db:
        waiting = {
            job_id
            for (job_id,) in db.Event.select(db.Event.job_id)
            .where(db.Event.waits_on.is_null(False))
            .tuples()
        }
        final: dict[str, list[str]] = {}
        dead = 0
        updates = db.Action.select(db.Action.payload, db.Action.outcome).where(
            db.Action.kind == "job_update"
        )
        for action in updates:
            dead += action.outcome == "dead"
            status = action.payload.get("status")
            if action.outcome == "done" and status in FINAL_JOB_STATUSES:
                final.setdefault(action.payload.get("job_id"), []).append(status)
    owed = accepted_later | waiting
    missing = owed - final.keys()
    return JobUpdates(
        owed=len(owed),
        missing=sorted(missing),
        waiting=sorted(missing & waiting),
        dead=dead,
        statuses=Counter(final[job][-1] for job in owed & final.keys()),
        repeated=sum(1 for job in owed if len(final.get(job, ())) > 1),
    )


def cancelled_after_contact(state: Path) -> set[str]:
    """Emails of grants cancelled as never issued although an issue attempt reached Proxy."""
    with daemon_db(state) as db:
        grants = db.Grant.select(db.Grant.email).where(
            (db.Grant.state == "cancelled") & db.Grant.proxy_person_id.is_null(False)
        )
        return {g.email for g in grants}


def moved_before_issue(state: Path, at: float) -> set[str]:
    """Emails of grants still pending with a start after `at`. Where the oracle wants them
    active, a started window was moved ahead (an invite's late copy overtaken by a later event
    of the visit) before its issue ran, so it kept no start. The oracle takes a started window
    as issued; the daemon issues after its answer, so whether the move came first is a race."""
    with daemon_db(state) as db:
        grants = db.Grant.select(db.Grant.email).where(
            (db.Grant.state == "pending") & (db.Grant.starts_at > at)
        )
        return {g.email for g in grants}


def inbox_jobs(state: Path) -> set[str]:
    """The job ids in the daemon's inbox."""
    with daemon_db(state) as db:
        return {event.job_id for event in db.Event.select(db.Event.job_id)}


@dataclass
class Verdict:
    problems: list[str]
    drained: bool
    drain_seconds: float
    dead_revokes: int
    persons: int
    expected_active: int
    jobs: JobUpdates
    # Differences the rules allow either way (see `moved_before_issue`).
    explained: list[str] = field(default_factory=list)
    timeline_judged: int = 0  # instants of the persons' status timelines compared

    @property
    def ok(self) -> bool:
        return not self.problems and self.drained and self.dead_revokes == 0 and self.jobs.ok

    def describe(self) -> str:
        kinds = Counter(p.split(":", 1)[0] for p in self.problems)
        head = (
            f"outbox {'drained' if self.drained else 'NOT drained'} in {self.drain_seconds:.1f} s, "
            f"{self.persons} persons in Proxy, {self.expected_active} should be active, "
            f"{self.timeline_judged} timeline instants compared, "
            f"{self.dead_revokes} revokes given up, {len(self.problems)} differences "
            f"{dict(kinds)}, {len(self.explained)} explained; {self.jobs.describe()}"
        )
        unfinished = [f"job never finished: {job}" for job in self.jobs.missing[:10]]
        explained = [f"explained, {p}" for p in self.explained[:10]]
        lines = [f"     - {p}" for p in [*self.problems[:20], *unfinished, *explained]]
        return "\n".join([head, *lines])


def settle_and_compare(
    daemon: Daemon,
    sandbox: SandboxClient,
    oracle: Oracle,
    accepted_later: set[str],
    drain_timeout: float = 120,
    quiet: tuple[tuple[float, float], ...] = (),
) -> Verdict:
    """Wait until no quarantined delivery and nothing due is left in the outbox, then compare
    Proxy with the oracle: its state at the end, and each person's status timeline over the
    whole run (outside `quiet` intervals when Proxy failed, each extended until the outbox has
    drained: the work it deferred is late by design). The verdict also requires exactly one
    final Envoy job update for every job answered 202 (`accepted_later`)."""
    began = time.monotonic()
    drained = wait_for(lambda: work_left(daemon.state) == 0, drain_timeout, 0.25)
    drain_seconds = time.monotonic() - began
    persons = sandbox.persons()
    now = time.time()
    quiet = tuple((start, max(end, now)) for start, end in quiet)
    at = now + STATUS_MARGIN
    problems = compare(oracle, persons, at, ignore=DEMO_STAFF)
    differences, judged = timeline(oracle, persons, at, TIMELINE_TOLERANCE, quiet)
    problems += differences + future_actives(persons, at)
    # Name the cause where the database shows it (see BENCHMARKS.md, "Bugs found"); the
    # differences stay differences.
    partial = cancelled_after_contact(daemon.state)
    moved = moved_before_issue(daemon.state, at)
    problems = [
        f"cancelled-after-partial-issue: {p}"
        if p.startswith("access:") and p.split()[1] in partial
        else f"moved-before-issue: {p}"
        if p.startswith("access:") and p.split()[1] in moved and "should be active" in p
        else p
        for p in problems
    ]
    # A window moved ahead before its issue ran keeps no start: the rules want it pending,
    # the oracle (which takes a started window as issued) active. Both are right.
    explained = [p for p in problems if p.startswith("moved-before-issue:")]
    expected = oracle.expected(at)
    return Verdict(
        problems=[p for p in problems if p not in explained],
        explained=explained,
        drained=drained,
        drain_seconds=drain_seconds,
        dead_revokes=outbox_backlog(daemon.state)[1],
        persons=len(persons),
        expected_active=sum(1 for tags in expected.values() if tags is not None),
        jobs=job_updates(daemon.state, accepted_later),
        timeline_judged=judged,
    )


@dataclass
class World:
    """What a campaign runs in: the sandbox, the simulator, the stories and the daemon (not
    started), with its state in `state`."""

    sandbox: SandboxClient
    stories: Stories
    story_list: list[list[Event]]
    state: Path
    daemon: Daemon

    @property
    def events(self) -> int:
        return sum(len(story) for story in self.story_list)

    def settle(self, sent, **options) -> tuple[set[str], Verdict]:
        """The inbox's job ids and the verdict once the outbox has drained."""
        inbox = inbox_jobs(self.state)
        oracle = replay(sent, self.stories.employees, inbox)
        verdict = settle_and_compare(
            self.daemon, self.sandbox, oracle, sent.accepted_later, **options
        )
        return inbox, verdict


@contextlib.contextmanager
def world(work: Path, seed: int, tag: str, events: int, sandbox=None):
    """A World for one campaign; `sandbox`: one already running (else a process is started).
    Everything it started is stopped at the end."""
    own_sandbox = sandbox is None
    sandbox = sandbox or Sandbox(work)
    envoy = EnvoySim(work)
    stories = Stories(seed, tag=f"{tag}{seed}")
    story_list = stories.make(events)
    sandbox.seed_persons(stories.employees)
    state = work / "state"
    prepare_install(state, **CAMPAIGN_CONFIG)
    daemon = Daemon(state, sandbox.url, envoy.url)
    try:
        yield World(sandbox, stories, story_list, state, daemon)
    finally:
        daemon.stop()
        envoy.stop()
        if own_sandbox:
            sandbox.stop()
