"""Failover campaign: three daemons on one PostgreSQL database, instances SIGKILLed.

A round-robin load generator (Envoy with its retries: a delivery that got no answer goes to
the next instance on its next try) sends mixed events to three daemons sharing one database.
At random moments one instance (one holding claimed work, if any does) is SIGKILLed,
restarted a few seconds later, and then another is killed, until the work is done. At each
death the actions the dead instance had claimed are noted, and the time until each was run
(done, or claimed) by another instance measured.
At the end: 0 events lost, 0 duplicate persons, 0 endings missed, every Envoy job finished
(bench/campaign.py's verdict, with its Proxy timeline check), and the longest takeover
(goal ≤ 15 s: the 10 s lease plus the alarm's look at its end).

The database is a throwaway PostgreSQL cluster (tests/fixtures/pg_cluster.py: Debian's
postgresql installed) or the server at ENVOY_PROXY_TEST_PG_URL (an account that may create
databases).

    python -m bench.failover [--events 1000] [--seed 1] [--pace S] [--instances 3]
                             [--proxy-latency-ms 500]
"""

import argparse
import contextlib
import itertools
import os
import random
import shutil
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench.campaign import Delivery, Envoy, Verdict, lanes_of, work_left, world
from bench.common import (
    DATABASE_URL_FILE,
    Daemon,
    KeepAlive,
    Verdicts,
    print_header,
    wait_for,
    workdir,
)
from daemon.access.outbox import SHARED_LEASE_SECONDS
from tests.fixtures import pg_cluster

TAKEOVER_GOAL_SECONDS = 15
# After a death, the work its instance had claimed runs once the lease is out: the timeline
# check does not judge those seconds (as an outage campaign's quiet time), the takeover's own
# lateness is measured and printed instead.
LATE_AFTER_DEATH = SHARED_LEASE_SECONDS + 5
DOWN_SECONDS = (2.0, 5.0)  # a killed instance is restarted after this long


@contextlib.contextmanager
def postgres_database():
    """The URL of a new, empty database: on ENVOY_PROXY_TEST_PG_URL's server, or on a
    throwaway cluster of its own (stopped and removed afterwards)."""
    given = os.environ.get("ENVOY_PROXY_TEST_PG_URL")
    directory = None
    if not given:
        directory, given = pg_cluster.start()
    name = f"envoy_proxy_failover_{os.getpid()}"
    with psycopg.connect(given, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield urllib.parse.urlunsplit(urllib.parse.urlsplit(given)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(given, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if directory is not None:
            pg_cluster.stop(directory)


class RoundRobinEnvoy(Envoy):
    """Envoy behind a round-robin balancer without health checks: each try of a delivery
    goes to the next instance, dead or alive (a refused connection is a retry later)."""

    def __init__(self, urls: list[str], **options):
        super().__init__(urls[0], **options)
        self._next = itertools.cycle(urls)
        self._connections = threading.local()

    def _post(self, conn, event):
        with self._lock:
            url = next(self._next)
        pool = self._connections.__dict__.setdefault("by_url", {})
        if url not in pool:
            pool[url] = KeepAlive(url, timeout=30)
        status = super()._post(pool[url], event)
        if status is None:  # a dead instance's connection: a fresh one next time
            pool.pop(url).close()
        return status


@dataclass
class Takeovers:
    """Each death: how many claimed actions the instance left, and when each ran elsewhere."""

    seconds: list[float] = field(default_factory=list)
    left_behind: int = 0
    never: int = 0  # claimed by the dead instance and still not run elsewhere at the end
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def longest(self) -> float | None:
        return max(self.seconds) if self.seconds else None


def _claims_of(url: str, pid: int) -> tuple[str | None, set[int]]:
    """The instance id of process `pid` and the actions it holds a live claim on. (Its own
    connection: the campaign's other threads use the db layer's.)"""
    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT id FROM instance WHERE pid = %s", (pid,)).fetchone()
        if row is None:
            return None, set()
        held = connection.execute(
            "SELECT id FROM action WHERE claimed_by = %s AND claimed_until >= %s",
            (row[0], int(time.time())),
        ).fetchall()
    return row[0], {action_id for (action_id,) in held}


def _watch_takeover(url: str, dead: str, actions: set[int], died: float, out: Takeovers):
    """Until each action is done or claimed by another instance: the seconds since `died`."""
    left = set(actions)
    deadline = time.monotonic() + 120
    with psycopg.connect(url, autocommit=True) as connection:
        while left and time.monotonic() < deadline:
            rows = connection.execute(
                "SELECT id FROM action WHERE id = ANY(%s) AND (done = 1"
                " OR (claimed_until IS NOT NULL AND claimed_by <> %s))",
                (list(left), dead),
            ).fetchall()
            with out.lock:
                for (action_id,) in rows:
                    left.discard(action_id)
                    out.seconds.append(time.monotonic() - died)
            time.sleep(0.1)
    with out.lock:
        out.never += len(left)


@dataclass
class FailoverResult:
    events: int
    instances: int
    kills: int
    answered: int
    given_up: int
    lost: int
    strays: int
    inbox: int
    takeovers: Takeovers
    verdict: Verdict
    seconds: float

    @property
    def takeover_ok(self) -> bool:
        longest = self.takeovers.longest
        return self.takeovers.never == 0 and (longest is None or longest <= TAKEOVER_GOAL_SECONDS)

    @property
    def ok(self) -> bool:
        return self.verdict.ok and self.lost == 0 and self.strays == 0 and self.kills > 0

    def describe(self) -> str:
        longest = self.takeovers.longest
        return (
            f"{self.events} events on {self.instances} instances, {self.kills} SIGKILLs, "
            f"{self.seconds:.0f} s; {self.answered} answered, {self.given_up} given up by Envoy, "
            f"{self.inbox} in the inbox, {self.lost} answered but lost; "
            f"{self.takeovers.left_behind} claimed actions left by dead instances, taken over "
            f"in at most {'-' if longest is None else f'{longest:.1f}'} s "
            f"({self.takeovers.never} never); {self.verdict.describe()}"
        )


def _instance(work: Path, world_state: Path, n: int, sandbox_url: str, envoy_url: str) -> Daemon:
    """Instance `n`: its own directory for logs, the world's database and the same key."""
    state = work / f"instance-{n}"
    state.mkdir()
    shutil.copy(world_state / DATABASE_URL_FILE, state / DATABASE_URL_FILE)
    shutil.copy(world_state / "secret.key", state / "secret.key")
    os.chmod(state / "secret.key", 0o600)
    return Daemon(state, sandbox_url, envoy_url)


def run(
    work: Path,
    url: str,
    events: int,
    seed: int,
    instances: int = 3,
    kill_every: tuple[float, float] = (3.0, 8.0),
    lanes: int = 16,
    pace: float = 0.5,
    chaos_after: float = 60,
    proxy_latency_ms: int = 0,
    max_kills: int | None = None,
    sandbox=None,
) -> FailoverResult:
    """One campaign in `work` on the empty database at `url`; `sandbox`: an already running
    one (else a process is started)."""
    rng = random.Random(seed)
    stop = threading.Event()
    kills = 0
    deaths: list[float] = []  # epoch seconds
    takeovers = Takeovers()
    watchers: list[threading.Thread] = []
    (work / "state").mkdir()
    (work / "state" / DATABASE_URL_FILE).write_text(url)
    with world(work, seed, "failover", events, sandbox) as w:
        if proxy_latency_ms:  # Proxy calls in flight at every moment: deaths leave claims
            w.sandbox.add_fault(latency_ms=proxy_latency_ms)
        envoy_url = w.daemon.env.get("ENVOY_BASE_URL")
        daemons = [w.daemon] + [
            _instance(work, w.state, n, w.sandbox.url, envoy_url) for n in range(2, instances + 1)
        ]

        def killer() -> None:
            nonlocal kills
            while kills != max_kills and not stop.wait(rng.uniform(*kill_every)):
                # One holding claimed work if any does: its death is what the lease is for.
                claims = {daemon: _claims_of(url, daemon.pid) for daemon in daemons}
                holding = [daemon for daemon in daemons if claims[daemon][1]]
                victim = rng.choice(holding or daemons)
                dead, held = claims[victim]
                victim.kill()
                died = time.monotonic()
                deaths.append(time.time())
                kills += 1
                if dead is not None and held:
                    takeovers.left_behind += len(held)
                    watcher = threading.Thread(
                        target=_watch_takeover, args=(url, dead, held, died, takeovers)
                    )
                    watcher.start()
                    watchers.append(watcher)
                stop.wait(rng.uniform(*DOWN_SECONDS))
                victim.start()

        began = time.monotonic()
        try:
            for daemon in daemons:
                daemon.start().wait_ready()
            chaos = threading.Thread(target=killer, daemon=True)
            chaos.start()
            lane_list = [[Delivery(e) for e in lane] for lane in lanes_of(w.story_list, lanes, rng)]
            sent = RoundRobinEnvoy([d.url for d in daemons], pace=pace).send(lane_list)
            wait_for(lambda: work_left(w.state) == 0, chaos_after, 0.2)
            stop.set()
            chaos.join()
            for watcher in watchers:
                watcher.join()
            for daemon in daemons:
                daemon.wait_ready()
            quiet = tuple((at, at + LATE_AFTER_DEATH + proxy_latency_ms / 500) for at in deaths)
            inbox, verdict = w.settle(sent, quiet=quiet)
        finally:
            stop.set()
            for daemon in daemons[1:]:
                daemon.stop()
    return FailoverResult(
        events=w.events,
        instances=instances,
        kills=kills,
        answered=len(sent.answered_jobs),
        given_up=len(sent.given_up),
        lost=len(sent.answered_jobs - inbox),
        strays=len(inbox - sent.jobs),
        inbox=len(inbox),
        takeovers=takeovers,
        verdict=verdict,
        seconds=time.monotonic() - began,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--pace", type=float, default=0.5, help="seconds between a lane's sends")
    parser.add_argument(
        "--proxy-latency-ms",
        type=int,
        default=500,
        help="latency of every Proxy call (default 500: a death usually leaves claimed work)",
    )
    args = parser.parse_args(argv)
    print_header(
        f"failover campaign: {args.events} events, {args.instances} instances on PostgreSQL, "
        f"one SIGKILLed every 3-8 s and restarted 2-5 s later, Proxy latency "
        f"{args.proxy_latency_ms} ms"
    )
    verdicts = Verdicts()
    with workdir("failover") as work, postgres_database() as url:
        result = run(work, url, args.events, args.seed, args.instances, pace=args.pace,
                     proxy_latency_ms=args.proxy_latency_ms)  # fmt: skip
    print(f"   {result.describe()}")
    verdicts.check(
        "converges to the oracle: zero lost, zero duplicated, every job finished",
        result.ok,
        result.describe(),
    )
    verdicts.check(
        f"a dead instance's claimed work runs elsewhere within {TAKEOVER_GOAL_SECONDS} s",
        result.takeover_ok,
        f"longest {result.takeovers.longest} s over {result.takeovers.left_behind} actions",
    )
    return verdicts.exit_code()


if __name__ == "__main__":
    sys.exit(main())
