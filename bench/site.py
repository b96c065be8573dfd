"""What a site feels: a lobby's load on the daemon while Proxy answers every call in 120 ms.

Issue 15's performance targets, as a real tenant over the internet would see them. The Proxy
sandbox (a permanent 120 ms latency fault on every API call) and the daemon are processes of
their own; this process is the load generator and Envoy (the simulator in a thread, which
notes when each job update arrives).

(d) Proxy calls per visitor lifecycle, one visitor at a time, from the sandbox's call log: a
    new visitor (sign-in, sign-out, all settled), then the same email again; the calls of the
    new visitor's sign-in are "the round trips an issue needs" (RT) for (c) and (e).
(a) accept latency: signed sign-ins paced at 50/s from 16 clients for 20 s; p99 <= 100 ms.
(c) sign-in -> credential: paced 20/s for 30 s, each visitor's time from the send to the
    arrival of its job's "done" update (sent after the issue's last Proxy call); p99 <= RT x
    120 ms + 150 ms. At 50/s for 30 s the backlog (actions due and not done, read from the
    daemon's database every second) must not grow.
(b) sustained accept: 16 clients flat out against a bare Bottle+Waitress hello-world measured
    in the same run, while the runner issues, and alone (a daemon whose Proxy is unreachable);
    >= 0.10 of bare.
(e) identity hook with verification_require_credential (a site of its own): 8 clients call it
    back to back for 30 s while sign-ins flow at 20/s; p99 <= RT x 120 ms + 150 ms, no 412.

A site's database is its SQLite file, or a PostgreSQL URL (bench/engines.py runs a, c, d
and e on both engines; bench/instances.py serves one database from several instances).
`--seconds` shortens the paced phases of a, c and e (a quick check, not the targets' lengths).

    python -m bench.site [--parts dacbe] [--latency-ms 120] [--profile c50] [--seconds S]
"""

import argparse
import contextlib
import dataclasses
import json
import math
import re
import sys
import threading
import time
from argparse import Namespace
from collections import Counter
from collections.abc import Callable

import requests
from peewee import fn

from bench.common import (
    CLIENT_ID,
    CLIENT_SECRET,
    DATABASE_URL_FILE,
    INSTALL_ID,
    BareServer,
    Daemon,
    LoadResult,
    Profiler,
    Sandbox,
    Verdicts,
    add_daemon_args,
    cpu_seconds,
    open_db,
    percentile,
    prepare_install,
    print_header,
    run_load,
    run_paced,
    sign_ins,
    signed,
    wait_for,
    workdir,
)
from bench.intake import accept_alone
from bench.verify import hook_calls, print_refusals
from sandbox.envoy import EnvoySimulator, entry_event

ACCEPT_P99 = 0.100
SUSTAINED_SHARE = 0.10
SLACK = 0.150  # seconds on top of the Proxy round trips
TODAY_CALLS = {"new": 5, "returning": 7}  # Proxy calls per lifecycle, as issue 15 measured
SETTLE_LIMIT = 300  # seconds to wait for due work to drain between phases


class TimedEnvoy(EnvoySimulator):
    """The Envoy simulator in this process, noting the instant each job update arrives."""

    def __init__(self) -> None:
        super().__init__(CLIENT_ID, CLIENT_SECRET)
        self.arrivals: dict[str, list[tuple[str, float]]] = {}

    def _update_job(self, job_id: str):
        at = time.time()
        answer = super()._update_job(job_id)
        with self._lock:
            status = self.jobs[job_id][-1]["status"]
            self.arrivals.setdefault(job_id, []).append((status, at))
        return answer

    def final(self, job_id: str) -> tuple[str, float] | None:
        """(status, arrival) of the job's first update other than "ongoing", if any yet."""
        with self._lock:
            updates = list(self.arrivals.get(job_id, ()))
        return next(((s, at) for s, at in updates if s != "ongoing"), None)


class Site:
    """One daemon and its own Proxy sandbox, with `latency_ms` on every Proxy API call.

    `database`: a PostgreSQL URL (else the daemon's SQLite file in its state directory), which
    `instances` daemons may share; `daemon` is the first of them."""

    def __init__(self, work, name: str, envoy: TimedEnvoy, args, database: str | None = None,
                 instances: int = 1, **install):  # fmt: skip
        if instances > 1 and not database:
            raise ValueError("several instances need a PostgreSQL database")
        base = work / name
        base.mkdir()
        self.sandbox = Sandbox(base)
        if args.latency_ms:
            self.sandbox.add_fault(latency_ms=args.latency_ms)
        self.state = base / "state"
        if database:
            self.state.mkdir()
            (self.state / DATABASE_URL_FILE).write_text(database)
        self.config = prepare_install(self.state, **install)
        self.daemons = [Daemon(self.state, self.sandbox.url, envoy.url)]
        if instances > 1:
            from bench.failover import _instance  # imports psycopg: PostgreSQL runs only

            self.daemons += [_instance(base, self.state, n, self.sandbox.url, envoy.url)
                             for n in range(2, instances + 1)]  # fmt: skip
        for daemon in self.daemons:
            daemon.start(args.daemon_args.split())
        for daemon in self.daemons:
            daemon.wait_ready()
        self.daemon = self.daemons[0]
        self.db = open_db(self.state)

    @property
    def urls(self) -> list[str]:
        return [daemon.url for daemon in self.daemons]

    def close(self) -> None:
        self.db.close_database()
        for daemon in self.daemons:
            daemon.stop()
        self.sandbox.stop()

    def backlog(self) -> Counter:
        """Actions due and not done (claimed ones included) by kind, read beside the daemon."""
        db = self.db
        with db.database.connection_context():
            rows = (
                db.Action.select(db.Action.kind, fn.COUNT(db.Action.id))
                .where((db.Action.done == False) & (db.Action.due_at <= time.time()))  # noqa: E712
                .group_by(db.Action.kind)
                .tuples()
            )
            return Counter(dict(rows))

    def settle(self) -> bool:
        # The database is the process's one: a phase with a site of its own (part b's
        # "alone" and "ceiling") pointed it elsewhere, and this waited for a backlog that
        # an accept-only daemon never drains, SETTLE_LIMIT seconds each round.
        self.db = open_db(self.state)
        return wait_for(lambda: not self.backlog(), SETTLE_LIMIT, 0.2)

    def calls_since(self, at: float) -> list[dict]:
        return [c for c in self.sandbox.state()["calls"] if c["at"] >= at]

    def last_calls(self, emails: set[str]) -> dict[str, float]:
        """Email -> when Proxy answered the last call naming its person (the sandbox's log):
        the instant the credential became active, for visitors that only signed in."""
        world = self.sandbox.state()
        ids = {p["id"]: p["email"] for p in world["persons"] if p["email"] in emails}
        last: dict[str, float] = {}
        for call in world["calls"]:
            for part in call["path"].split("/"):
                if part in ids:
                    last[ids[part]] = max(last.get(ids[part], 0.0), call["at"])
        return last


def job_of(raw: bytes) -> str:
    return json.loads(raw)["meta"]["job"]["id"]


def routes(calls: list[dict]) -> str:
    shapes = Counter(f"{c['method']} {re.sub(r'/p_[^/]+', '/{id}', c['path'])}" for c in calls)
    return ", ".join(f"{route} x{n}" if n > 1 else route for route, n in shapes.items())


def send_and_wait(site: Site, envoy: TimedEnvoy, body: dict) -> float:
    """Send one signed event; wait for its final job update (if answered 202) and for due
    work to drain. Seconds from the send to the final answer or job update."""
    raw, headers = signed(body)
    sent = time.time()
    answer = requests.post(site.daemon.url + "/envoy/events", data=raw, headers=headers, timeout=30)
    done = time.time()
    if answer.status_code == 202:
        job = job_of(raw)
        wait_for(lambda: envoy.final(job) is not None, 60, 0.01)
        done = (envoy.final(job) or ("", float("nan")))[1]
    elif answer.status_code >= 300:
        raise RuntimeError(f"event answered {answer.status_code}: {answer.text}")
    site.settle()
    time.sleep(0.3)  # a call answered after the last action's outcome is still counted
    return done - sent


def visitor_event(site: Site, kind: str, entry: str, email: str, signed_in_at: float) -> dict:
    return entry_event(
        kind,
        entry_id=entry,
        full_name=f"Visitor {entry}",
        email=email,
        flow_id="flow-visitor",
        signed_in_at=signed_in_at,
        signed_out_at=time.time() if kind == "entry_sign_out" else None,
        config=site.config,
        install_id=INSTALL_ID,
        job_id=f"job-{kind}-{entry}",
    )


def lifecycle(site: Site, envoy: TimedEnvoy, tag: str) -> dict:
    """Proxy calls of one email's two visits, one after the other, each phase settled."""
    email = f"{tag}@example.com"
    found = {}
    for visit in ("new", "returning"):
        entry, began = f"{tag}-{visit}", time.time()
        signed_in = time.time()
        seconds = send_and_wait(site, envoy, visitor_event(site, "entry_sign_in", entry, email,
                                                           signed_in))  # fmt: skip
        issue = site.calls_since(began)
        send_and_wait(site, envoy, visitor_event(site, "entry_sign_out", entry, email, signed_in))
        found[visit] = {"issue": issue, "all": site.calls_since(began), "seconds": seconds}
    return found


def part_d(site, envoy, verdicts) -> int:
    """Proxy calls per lifecycle; returns the round trips of a new visitor's issue."""
    warm = lifecycle(site, envoy, "warm")
    print(f"   first lifecycle of the daemon (caches cold): new {len(warm['new']['all'])} calls, "
          f"returning {len(warm['returning']['all'])}")  # fmt: skip
    found = lifecycle(site, envoy, "calls")
    for visit, calls in found.items():
        print(
            f"   {visit} visitor: {len(calls['all'])} Proxy calls ({routes(calls['all'])}); "
            f"the sign-in's issue {len(calls['issue'])} calls, done after "
            f"{calls['seconds'] * 1000:.0f} ms"
        )
        verdicts.check(
            f"Proxy calls per {visit} visitor <= {TODAY_CALLS[visit]}",
            len(calls["all"]) <= TODAY_CALLS[visit],
            f"{len(calls['all'])} calls",
        )
    return len(found["new"]["issue"])


@contextlib.contextmanager
def profiled(args, phase: str, pid: int, work, seconds: float):
    """py-spy on the daemon during `phase` when --profile names it."""
    if args.profile != phase:
        yield
        return
    profiler = Profiler(
        pid, work / f"{phase}.pyspy", seconds=int(seconds) + 10, idle=args.profile_idle
    )
    try:
        yield
    finally:
        print(profiler.finish())


class BacklogSampler:
    """The site's backlog every second, in a thread, for the length of a block."""

    def __init__(self, site: Site):
        self.site, self.samples, self.issues = site, [], []  # all kinds; issues only
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            by_kind = self.site.backlog()
            self.samples.append(sum(by_kind.values()))
            self.issues.append(by_kind.get("issue", 0))

    def __enter__(self) -> "BacklogSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def growing(self, rate: float) -> bool:
        """Whether the last third's mean exceeds the first third's by a second of arrivals."""
        third = max(1, len(self.samples) // 3)
        first, last = self.samples[:third], self.samples[-third:]
        return sum(last) / len(last) > sum(first) / len(first) + rate

    def describe(self) -> str:
        s, i = self.samples, self.issues
        return (
            f"backlog first {s[0]}, last {s[-1]}, max {max(s)} over {len(s)} samples "
            f"(issues alone: first {i[0]}, last {i[-1]}, max {max(i)})"
        )


@dataclasses.dataclass
class Paced:
    """A paced run: the load, each visitor's send -> job "done" and send -> active in Proxy
    (seconds), the final job statuses and the backlog samples."""

    load: LoadResult
    told: list[float]
    active: list[float]
    finals: Counter
    backlog: "BacklogSampler"


def paced_sign_ins(site, envoy, rate: int, seconds: int, tag: str) -> Paced:
    events = sign_ins(rate * seconds, tag, site.config)
    with BacklogSampler(site) as backlog:  # while the load lasts
        load = run_paced(site.daemon.url, events, rate, clients=16)
    jobs = {i: job_of(raw) for i, (_, _, raw, _) in enumerate(events)}
    wait_for(lambda: all(envoy.final(j) for j in jobs.values()), SETTLE_LIMIT, 0.2)
    activated = site.last_calls({f"{tag}-{i}@example.com" for i in jobs})
    run = Paced(load, [], [], Counter(), backlog)
    for i, job in jobs.items():
        final = envoy.final(job)
        run.finals[final[0] if final else "none"] += 1
        if final and final[0] == "done" and i in load.sent:
            run.told.append(final[1] - load.sent[i])
        if f"{tag}-{i}@example.com" in activated and i in load.sent:
            run.active.append(activated[f"{tag}-{i}@example.com"] - load.sent[i])
    return run


def phase_seconds(args, issue_seconds: int) -> int:
    """A paced phase's length: the issue's, unless `--seconds` caps it for a quick check."""
    return min(issue_seconds, args.seconds) if args.seconds else issue_seconds


def part_a(site, envoy, args, verdicts, work) -> None:
    seconds = phase_seconds(args, 20)
    with profiled(args, "accept", site.daemon.pid, work, seconds):
        load = paced_sign_ins(site, envoy, 50, seconds, "accept").load
    print(f"   accept, paced 50/s from 16 clients for {seconds} s: {load.describe()}")
    p99 = percentile(load.latencies, 99)
    verdicts.check(
        "accept p99 <= 100 ms at 50/s, 16 clients",
        p99 <= ACCEPT_P99 and load.statuses.get(202, 0) == len(load.latencies),
        f"p50 {percentile(load.latencies, 50) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"statuses {dict(load.statuses)}",
    )
    site.settle()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def part_c(site, envoy, args, verdicts, work, trips: int) -> None:
    target = trips * args.latency_ms / 1000 + SLACK
    seconds = phase_seconds(args, 30)
    for rate in (20, 50):
        with profiled(args, f"c{rate}", site.daemon.pid, work, seconds):
            run = paced_sign_ins(site, envoy, rate, seconds, f"c{rate}")
        count, done = rate * seconds, run.finals.get("done", 0)
        print(
            f"   {rate} sign-ins/s for {seconds} s: accept p99 "
            f"{ms(percentile(run.load.latencies, 99))}; send -> active in Proxy (its last "
            f"call answered) p50 "
            f"{ms(percentile(run.active, 50))}, p99 {ms(percentile(run.active, 99))}, max "
            f"{ms(max(run.active, default=math.nan))} over {len(run.active)}; send -> job "
            f"update done p50 {ms(percentile(run.told, 50))}, p99 {ms(percentile(run.told, 99))},"
            f" max {ms(max(run.told, default=math.nan))}; final updates {dict(run.finals)}; "
            f"{run.backlog.describe()}"
        )
        if rate == 20:
            for label, values in (("person active in Proxy", run.active),
                                  ("Envoy job told done", run.told)):  # fmt: skip
                p99 = percentile(values, 99)
                verdicts.check(
                    f"sign-in -> {label} p99 <= {trips} x {args.latency_ms} ms + 150 ms = "
                    f"{ms(target)} at 20/s",
                    p99 <= target and len(values) == done == count,
                    f"p99 {ms(p99)}; {len(values)}/{count} measured, {done}/{count} done",
                )
        else:
            verdicts.check(
                "backlog does not grow at 50/s",
                not run.backlog.growing(rate) and done == count,
                f"{run.backlog.describe()}; {done}/{count} done",
            )
        site.settle()


def part_b(site, args, verdicts, work) -> None:
    """Sustained accept against the bare server, in `--rounds` rounds (the machine's speed
    drifts within seconds when it is shared): each verdict divides the daemon's best rate by
    the bare server's best, so a slow bare round never flatters the daemon."""
    rounds = [_round_b(site, args, work / f"round-{n}", n) for n in range(1, args.rounds + 1)]
    baseline = max((r["bare"] for r in rounds), key=lambda load: load.rate)
    for label in ("while the runner issues", "alone"):
        result = max((r[label] for r in rounds), key=lambda load: load.rate)
        share = result.rate / baseline.rate if baseline.rate else 0.0
        rates = ", ".join(f"{r[label].rate:.0f}/s vs {r['bare'].rate:.0f}/s" for r in rounds)
        verdicts.check(
            f"sustained accept >= 0.10 of bare, {label}",
            share >= SUSTAINED_SHARE and result.statuses.get(202, 0) == args.events,
            f"best {result.rate:.0f}/s vs best bare {baseline.rate:.0f}/s = {share:.2f} "
            f"(rounds: {rates}); {result.statuses.get(202, 0)}/{args.events} answered 202",
        )


def _round_b(site, args, work, number: int) -> dict:
    work.mkdir(parents=True)
    print(f"   round {number}:")
    bare = BareServer(work)
    run_load(bare.url, sign_ins(args.warmup, f"bare-warm-{number}", site.config), args.clients)
    baseline = run_load(bare.url, sign_ins(args.events, f"bare-{number}", site.config),
                        args.clients)  # fmt: skip
    bare.stop()
    print(f"   bare Bottle+Waitress: {baseline.describe()}")
    events = sign_ins(args.events, f"flat-{number}", site.config)
    cpu = cpu_seconds(site.daemon.pid)
    with profiled(args, "sustained", site.daemon.pid, work, 20):
        load = run_load(site.daemon.url, events, args.clients)
    cpu = cpu_seconds(site.daemon.pid) - cpu
    print(f"   daemon flat out, the runner issuing at {args.latency_ms} ms a call: "
          f"{load.describe()}; daemon CPU {cpu:.1f} s = {cpu / args.events * 1000:.1f} ms "
          f"per event, {cpu / max(load.elapsed, 1e-9):.0%} of a core")  # fmt: skip
    site.settle()  # the flood's issues done: the runs below have the machine to themselves
    alone = accept_alone(work, Namespace(**vars(args)), site.config)
    print(f"   daemon flat out alone (Proxy unreachable; the runner still tries each issue "
          f"once): {alone.describe()}")  # fmt: skip
    (work / "ceiling").mkdir()
    ceiling = Namespace(**{**vars(args), "daemon_args": "-m bench.experiment accept_only serve"})
    ceiling = accept_alone(work / "ceiling", ceiling, site.config)
    print(f"   ceiling: the accept path with no due work run at all (experiment accept_only): "
          f"{ceiling.describe()} = {ceiling.rate / baseline.rate:.2f} of bare")  # fmt: skip
    return {"bare": baseline, "while the runner issues": load, "alone": alone}


def part_e(work, envoy, args, verdicts, database: str | None = None) -> None:
    site = Site(work, "verify", envoy, args, database, verification_require_credential=True)
    seconds = phase_seconds(args, 30)
    try:
        run_load(site.daemon.url, hook_calls(3, "warm", site.config), clients=1)
        site.settle()
        began = time.time()
        run_load(site.daemon.url, hook_calls(1, "one", site.config), clients=1)
        trips = len(site.calls_since(began))
        target = trips * args.latency_ms / 1000 + SLACK
        site.settle()
        flow = threading.Thread(target=paced_sign_ins, args=(site, envoy, 20, seconds + 2, "flow"))
        flow.start()
        time.sleep(1)
        with profiled(args, "hook", site.daemon.pid, work, seconds):
            hooks = run_load(site.daemon.url, hook_calls(5000, "hook", site.config), clients=8,
                             time_limit=seconds, keep_answers=True)  # fmt: skip
        flow.join()
    finally:
        site.close()
    print(f"   one hook call alone: {trips} Proxy calls; 8 clients back to back for {seconds} s "
          f"while 20 sign-ins/s flow: {hooks.describe()}")  # fmt: skip
    print_refusals(hooks)
    p99 = percentile(hooks.latencies, 99)
    verdicts.check(
        f"hook p99 <= {trips} x {args.latency_ms} ms + 150 ms = {target * 1000:.0f} ms",
        p99 <= target,
        f"p50 {percentile(hooks.latencies, 50) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms",
    )
    verdicts.check(
        "no manual review (412) with a healthy Proxy",
        hooks.statuses.get(412, 0) == 0 and hooks.statuses.get(200, 0) == hooks.answered,
        f"statuses {dict(hooks.statuses)}",
    )


def run_parts(work, args, verdicts, database: Callable[[str], str | None] = lambda site: None):
    """The parts `args.parts` names, each site's database given by `database(site name)`
    (None: its SQLite file); an Envoy simulator of their own."""
    envoy = TimedEnvoy().start()
    try:
        site = Site(work, "site", envoy, args, database("site"))
        try:
            if "d" in args.parts or "c" in args.parts:
                trips = part_d(site, envoy, verdicts)
            if "a" in args.parts:
                part_a(site, envoy, args, verdicts, work)
            if "c" in args.parts:
                part_c(site, envoy, args, verdicts, work, trips)
            if "b" in args.parts:
                part_b(site, args, verdicts, work)
        finally:
            site.close()
        if "e" in args.parts:
            part_e(work, envoy, args, verdicts, database("verify"))
    finally:
        envoy.stop()


def add_site_args(parser, parts: str) -> None:
    """The options of a site's run (shared with bench/engines.py)."""
    parser.add_argument("--parts", default=parts, help="which parts to run (c runs d too)")
    parser.add_argument("--latency-ms", type=int, default=120)
    parser.add_argument("--seconds", type=int,
                        help="cap the paced phases of a, c and e (a quick check)")  # fmt: skip
    parser.add_argument("--profile", choices=("accept", "c20", "c50", "sustained", "hook"),
                        help="record the daemon with py-spy (CPU) during this phase")  # fmt: skip
    parser.add_argument("--profile-idle", action="store_true",
                        help="with --profile: also sample waiting threads")  # fmt: skip
    add_daemon_args(parser)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.site",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_site_args(parser, "dacbe")
    parser.add_argument("--events", type=int, default=3000, help="sign-ins of (b)")
    parser.add_argument("--clients", type=int, default=16, help="clients of (b)")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (b); the best counts")
    args = parser.parse_args(argv)
    print_header(f"site: Proxy {args.latency_ms} ms a call, parts {args.parts}")
    verdicts = Verdicts()
    with workdir("site") as work:
        run_parts(work, args, verdicts)
    return verdicts.exit_code()


if __name__ == "__main__":
    sys.exit(main())
