"""Crash campaign: mixed events while the daemon is SIGKILLed at random moments and restarted.

Envoy resends what got no answer (up to 5 times). The SIGKILLs go on after the last answer
while the daemon still has background work (deliveries to plan, due actions), for at most
`chaos_after` seconds. After a last restart and a drained outbox, Proxy must hold exactly what
the oracle computes from the events: zero lost (every answered event is in the inbox, every
due change made), zero duplicated persons, and every job answered 202 told its final outcome
by exactly one job update (crashes also fall between a 202 and its job update). `pace`:
seconds a lane waits between deliveries (unpaced, the events are all answered within a
second or two: the SIGKILLs would fall mostly after them).

    python -m bench.crash_campaign [--events 1000] [--seed 1] [--pace S]
"""

import argparse
import random
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import peewee

from bench.campaign import (
    Delivery,
    Envoy,
    Verdict,
    jobs_waiting,
    lanes_of,
    work_left,
    world,
)
from bench.common import (
    SandboxClient,
    Verdicts,
    print_header,
    wait_for,
    workdir,
)


@dataclass
class CrashResult:
    events: int
    kills: int
    given_up: int  # deliveries Envoy stopped retrying (the daemon was down at every try)
    kills_after_send: int  # of `kills`: during the background work after the last answer
    kills_waiting: int  # of `kills`: with jobs answered 202 still owed their job update
    answered: int
    lost: int  # answered, yet not in the inbox
    inbox: int
    strays: int  # in the inbox, yet never sent
    verdict: Verdict
    seconds: float

    @property
    def ok(self) -> bool:
        return self.verdict.ok and self.lost == 0 and self.strays == 0 and self.kills > 0

    def describe(self) -> str:
        return (
            f"{self.events} events, {self.kills} SIGKILLs ({self.kills_after_send} after the "
            f"last answer, {self.kills_waiting} with jobs owed a job update), "
            f"{self.seconds:.0f} s; "
            f"{self.answered} answered, {self.given_up} given up by Envoy after 6 tries, "
            f"{self.inbox} in the inbox, {self.lost} answered but lost; {self.verdict.describe()}"
        )


def _read(count, state: Path) -> int:
    """`count(state)`, read while the daemon may be killed and restarted under the reader."""
    try:
        return count(state)
    except peewee.DatabaseError:  # e.g. locked while the restarted daemon migrates: try again
        return -1


def run(
    work: Path,
    events: int,
    seed: int,
    kill_every: tuple[float, float] = (1.0, 3.0),
    lanes: int = 16,
    sandbox: SandboxClient | None = None,
    chaos_after: float = 60,
    pace: float = 0.0,
) -> CrashResult:
    """One campaign in `work`; `sandbox`: an already running one (else a process is started)."""
    rng = random.Random(seed)
    stop = threading.Event()
    kills = kills_waiting = 0
    with world(work, seed, "crash", events, sandbox) as w:
        daemon = w.daemon

        def killer() -> None:
            nonlocal kills, kills_waiting
            while not stop.wait(rng.uniform(*kill_every)):
                daemon.kill()
                kills += 1
                kills_waiting += _read(jobs_waiting, w.state) > 0  # as the crash left them
                daemon.start()

        began = time.monotonic()
        try:
            daemon.start().wait_ready()
            chaos = threading.Thread(target=killer, daemon=True)
            chaos.start()
            lane_list = [[Delivery(e) for e in lane] for lane in lanes_of(w.story_list, lanes, rng)]
            sent = Envoy(daemon.url, pace=pace).send(lane_list)
            kills_at_last_answer = kills
            # The due work and the job updates go on after the last answer.
            wait_for(lambda: _read(work_left, w.state) == 0, chaos_after, 0.1)
            stop.set()
            chaos.join()
            daemon.kill()  # the last crash, then a clean start that must finish everything
            daemon.start().wait_ready()
            inbox, verdict = w.settle(sent)
        finally:
            stop.set()
    return CrashResult(
        events=w.events,
        kills=kills,
        kills_after_send=kills - kills_at_last_answer,
        kills_waiting=kills_waiting,
        given_up=len(sent.given_up),
        answered=len(sent.answered_jobs),
        lost=len(sent.answered_jobs - inbox),
        inbox=len(inbox),
        strays=len(inbox - sent.jobs),
        verdict=verdict,
        seconds=time.monotonic() - began,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.crash_campaign", description=__doc__)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--pace",
        type=float,
        default=0.5,
        help="seconds between a lane's deliveries (default 0.5: the deliveries span 30-40 s "
        "and some 20 SIGKILLs fall among them)",
    )
    args = parser.parse_args(argv)
    print_header(f"crash campaign: {args.events} events, SIGKILL every 1-3 s, pace {args.pace:g} s")
    verdicts = Verdicts()
    with workdir("crash") as work:
        result = run(work, args.events, args.seed, pace=args.pace)
    print(f"   {result.describe()}")
    verdicts.check(
        "converges to the oracle: zero lost, zero duplicated", result.ok, result.describe()
    )
    return verdicts.exit_code()


if __name__ == "__main__":
    sys.exit(main())
