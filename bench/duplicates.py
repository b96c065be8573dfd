"""Duplicates and order: every event delivered 1-6 times, shuffled within a window.

Envoy may deliver a job more than once (retries, replays) and deliveries may overtake each
other (a sign-out before its sign-in). Some copies are sent at the same moment from two
connections. Proxy must end up as the oracle computes from the order the daemon first saw
each job; the inbox holds each job once; no person is duplicated; a job answered 202 (to any
of its copies) is told its final outcome by exactly one job update.

    python -m bench.duplicates [--events 1000] [--seed 2] [--window 12]
"""

import argparse
import random
import sys
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
    print_header,
    workdir,
)


@dataclass
class DuplicateResult:
    events: int
    deliveries: int
    together: int
    answered_jobs: int
    inbox: int
    verdict: Verdict
    seconds: float
    statuses: dict

    @property
    def ok(self) -> bool:
        return self.verdict.ok and self.inbox == self.answered_jobs == self.events

    def describe(self) -> str:
        return (
            f"{self.events} events as {self.deliveries} deliveries ({self.together} sent twice "
            f"at once), {self.seconds:.0f} s; answers "
            f"{self.statuses}; {self.answered_jobs} jobs answered, {self.inbox} in the inbox; "
            f"{self.verdict.describe()}"
        )


def shuffled_lane(events, rng: random.Random, window: int) -> list[Delivery]:
    deliveries = []
    for event in events:
        copies = rng.randint(1, 6)
        together = copies > 1 and rng.random() < 0.2
        deliveries += [Delivery(event, together=together and i == 0) for i in range(copies)]
    for start in range(0, len(deliveries), window):
        chunk = deliveries[start : start + window]
        rng.shuffle(chunk)
        deliveries[start : start + window] = chunk
    return deliveries


def run(
    work: Path,
    events: int,
    seed: int,
    window: int = 12,
    lanes: int = 16,
    sandbox: SandboxClient | None = None,
) -> DuplicateResult:
    rng = random.Random(seed)
    with world(work, seed, "dup", events, sandbox) as w:
        began = time.monotonic()
        w.daemon.start().wait_ready()
        lane_list = [
            shuffled_lane(lane, rng, window) for lane in lanes_of(w.story_list, lanes, rng)
        ]
        sent = Envoy(w.daemon.url).send(lane_list)
        inbox, verdict = w.settle(sent)
    return DuplicateResult(
        events=w.events,
        deliveries=sum(len(lane) for lane in lane_list),
        together=sum(d.together for lane in lane_list for d in lane),
        answered_jobs=len(sent.answered_jobs),
        inbox=len(inbox),
        verdict=verdict,
        seconds=time.monotonic() - began,
        statuses=dict(sent.statuses),
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.duplicates", description=__doc__)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--window", type=int, default=12)
    args = parser.parse_args(argv)
    print_header(f"duplicates and order: {args.events} events, 1-6 copies, window {args.window}")
    verdicts = Verdicts()
    with workdir("duplicates") as work:
        result = run(work, args.events, args.seed, args.window)
    print(f"   {result.describe()}")
    verdicts.check("converges to the oracle, each job once", result.ok, result.describe())
    return verdicts.exit_code()


if __name__ == "__main__":
    sys.exit(main())
