"""Crash campaign: mixed events while the daemon is SIGKILLed at random moments and restarted.

Envoy resends what got no answer (up to 5 times). After a last restart and a drained outbox,
Proxy must hold exactly what the oracle computes from the events: zero lost (every answered
event is in the inbox, every due change made), zero duplicated persons.

    python -m bench.crash_campaign [--events 1000] [--seed 1]
"""

import argparse
import random
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.campaign import (
    CAMPAIGN_CONFIG,
    Delivery,
    Envoy,
    Stories,
    Verdict,
    inbox_jobs,
    lanes_of,
    replay,
    settle_and_compare,
)
from bench.common import (
    Daemon,
    EnvoySim,
    Sandbox,
    SandboxClient,
    Verdicts,
    prepare_install,
    print_header,
    workdir,
)


@dataclass
class CrashResult:
    events: int
    kills: int
    given_up: int  # deliveries Envoy stopped retrying (the daemon was down at every try)
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
            f"{self.events} events, {self.kills} SIGKILLs, {self.seconds:.0f} s; "
            f"{self.answered} answered, {self.given_up} given up by Envoy after 6 tries, "
            f"{self.inbox} in the inbox, {self.lost} answered but lost; {self.verdict.describe()}"
        )


def run(
    work: Path,
    events: int,
    seed: int,
    kill_every: tuple[float, float] = (1.0, 3.0),
    lanes: int = 16,
    sandbox: SandboxClient | None = None,
) -> CrashResult:
    """One campaign in `work`; `sandbox`: an already running one (else a process is started)."""
    rng = random.Random(seed)
    own_sandbox = sandbox is None
    sandbox = sandbox or Sandbox(work)
    envoy = EnvoySim(work)
    stories = Stories(seed, tag=f"crash{seed}")
    story_list = stories.make(events)
    sandbox.seed_persons(stories.employees)
    state = work / "state"
    prepare_install(state, **CAMPAIGN_CONFIG)
    daemon = Daemon(state, sandbox.url, envoy.url, ENVOY_PROXY_INLINE_BUDGET=3)
    stop = threading.Event()
    kills = 0

    def killer() -> None:
        nonlocal kills
        while not stop.wait(rng.uniform(*kill_every)):
            daemon.kill()
            kills += 1
            daemon.start()

    began = time.monotonic()
    try:
        daemon.start().wait_ready()
        chaos = threading.Thread(target=killer, daemon=True)
        chaos.start()
        lane_list = [[Delivery(e) for e in lane] for lane in lanes_of(story_list, lanes, rng)]
        sent = Envoy(daemon.url).send(lane_list)
        stop.set()
        chaos.join()
        daemon.kill()  # the last crash, then a clean start that must finish everything
        daemon.start().wait_ready()
        inbox = inbox_jobs(state)
        oracle = replay(sent, stories.employees, inbox)
        verdict = settle_and_compare(daemon, sandbox, oracle)
    finally:
        stop.set()
        daemon.stop()
        envoy.stop()
        if own_sandbox:
            sandbox.stop()
    return CrashResult(
        events=sum(len(s) for s in story_list),
        kills=kills,
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
    args = parser.parse_args(argv)
    print_header(f"crash campaign: {args.events} events, SIGKILL every 1-3 s")
    verdicts = Verdicts()
    with workdir("crash") as work:
        result = run(work, args.events, args.seed)
    print(f"   {result.describe()}")
    verdicts.check(
        "converges to the oracle: zero lost, zero duplicated", result.ok, result.describe()
    )
    return verdicts.exit_code()


if __name__ == "__main__":
    sys.exit(main())
