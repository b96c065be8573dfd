"""Proxy outage: 503 for two minutes, then 429 storms with Retry-After, then recovery.

Visits keep coming during the outage (Envoy gets 202, never a 5xx, and the outbox retries).
After recovery everything converges to the oracle, no ending is given up (no revoke action is
`dead`), and every job answered 202 is told its final outcome by exactly one job update.
Also measured: how long after recovery the outbox needs to drain, which backoff decides.

    python -m bench.outage [--events 600] [--outage 120] [--storms 3]
"""

import argparse
import random
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.campaign import (
    Delivery,
    Envoy,
    Verdict,
    lanes_of,
    world,
)
from bench.common import (
    SandboxClient,
    Verdicts,
    daemon_db,
    print_header,
    workdir,
)

LEAD_IN = 2.0  # seconds of healthy Proxy before the outage


@dataclass
class OutageResult:
    events: int
    answered_jobs: int
    inbox: int
    statuses: dict
    verdict: Verdict
    faults_seconds: float
    seconds: float
    backlog: int  # actions due, not done, at recovery
    longest_wait: float  # seconds from recovery until the last of them is retried

    @property
    def server_errors(self) -> int:
        """Answers of 5xx or none: the webhook never waits for Proxy, so Proxy's outage must
        not show in them."""
        return sum(n for status, n in self.statuses.items() if not isinstance(status, int)
                   or status >= 500)  # fmt: skip

    @property
    def ok(self) -> bool:
        return (
            self.verdict.ok
            and self.inbox == self.answered_jobs == self.events
            and self.server_errors == 0
        )

    def describe(self) -> str:
        return (
            f"{self.events} events during {self.faults_seconds:.0f} s of faults, answers "
            f"{self.statuses}; {self.inbox} in the inbox; at recovery {self.backlog} actions "
            f"waited, the last retry due in {self.longest_wait:.0f} s; after recovery: "
            f"{self.verdict.describe()}"
        )


def waiting(state: Path) -> tuple[int, float]:
    """(actions due and not done, seconds until the last of them is tried again)."""
    with daemon_db(state) as db:
        now = time.time()
        due = db.Action.select(db.Action.next_attempt_at).where(
            (db.Action.done == False) & (db.Action.due_at <= now)  # noqa: E712
        )
        retries = [a.next_attempt_at for a in due]
    return len(retries), max((t - now for t in retries), default=0.0)


def run(
    work: Path,
    events: int,
    seed: int,
    outage: float = 120,
    storms: int = 3,
    storm_seconds: float = 20,
    retry_after: int = 5,
    lanes: int = 16,
    drain_timeout: float = 900,
    sandbox: SandboxClient | None = None,
) -> OutageResult:
    rng = random.Random(seed)
    faults_seconds = outage + storms * storm_seconds * 2 - storm_seconds
    with world(work, seed, "out", events, sandbox) as w:
        lane_list = [[Delivery(e) for e in lane] for lane in lanes_of(w.story_list, lanes, rng)]
        longest = max(len(lane) for lane in lane_list)
        pace = (LEAD_IN + faults_seconds) / max(longest, 1)

        faults_began = [float("inf")]

        def weather() -> None:
            time.sleep(LEAD_IN)
            faults_began[0] = time.time()
            w.sandbox.add_fault(status=503, seconds=outage)
            time.sleep(outage)
            for i in range(storms):
                if i:
                    time.sleep(storm_seconds)  # a calm between storms
                w.sandbox.add_fault(
                    status=429, retry_after=retry_after, share=0.7, seconds=storm_seconds
                )
                time.sleep(storm_seconds)

        began = time.monotonic()
        w.daemon.start().wait_ready()
        storm = threading.Thread(target=weather, daemon=True)
        storm.start()
        sent = Envoy(w.daemon.url, pace=pace).send(lane_list)
        storm.join()
        w.sandbox.clear_faults()
        quiet = ((faults_began[0], time.time()),)  # while Proxy failed, nothing could change
        backlog, longest_wait = waiting(w.state)
        inbox, verdict = w.settle(sent, drain_timeout=drain_timeout, quiet=quiet)
    return OutageResult(
        events=w.events,
        answered_jobs=len(sent.answered_jobs),
        inbox=len(inbox),
        statuses=dict(sent.statuses),
        verdict=verdict,
        faults_seconds=faults_seconds,
        seconds=time.monotonic() - began,
        backlog=backlog,
        longest_wait=longest_wait,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.outage", description=__doc__)
    parser.add_argument("--events", type=int, default=600)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--outage", type=float, default=120)
    parser.add_argument("--storms", type=int, default=3)
    args = parser.parse_args(argv)
    print_header(
        f"Proxy outage: {args.events} events, 503 for {args.outage:g} s, "
        f"{args.storms} 429 storms of 20 s"
    )
    verdicts = Verdicts()
    with workdir("outage") as work:
        result = run(
            work,
            args.events,
            args.seed,
            outage=args.outage,
            storms=args.storms,
        )
    print(f"   {result.describe()}")
    verdicts.check("converges after recovery, no ending given up", result.ok, result.describe())
    return verdicts.exit_code()


if __name__ == "__main__":
    sys.exit(main())
