"""Burst: 10,000 active grants ending at the same instant T (about 10 s after the start).

The grants are written before the daemon starts (issue done, revoke pending at T) and the
sandbox holds their 10,000 persons. Target: every one suspended in Proxy within 60 s of T and
ended in the database; none missed. The scheduler holds one timer, not 10,000 jobs (see
BENCHMARKS.md for why APScheduler's defaults would drop most of them).

    python -m bench.burst [--grants 10000] [--proxy-latency-ms 120]

`--proxy-latency-ms`: every Proxy API call answered that much later (a sandbox latency fault),
as a real tenant over the internet would (issue 15: 120 ms).
"""

import argparse
import sys
import time

from bench.common import (
    Daemon,
    Sandbox,
    Verdicts,
    add_daemon_args,
    cpu_seconds,
    daemon_db,
    fill_active_grants,
    open_db,
    percentile,
    prepare_install,
    print_header,
    scale_person,
    wait_for,
    workdir,
)

DELAY = 10  # seconds from the start to T
WITHIN = 60.0


def apscheduler_defaults(jobs: int = 2000, work_ms: float = 20) -> tuple[int, int]:
    """What one date job per grant would do with APScheduler's defaults (misfire_grace_time
    1 s, a pool of 10 threads): `jobs` jobs due at the same instant, each `work_ms` long (a
    Proxy call). Returns (ran, dropped as missed)."""
    import logging
    from datetime import UTC, datetime, timedelta

    from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
    from apscheduler.schedulers.background import BackgroundScheduler

    logging.getLogger("apscheduler").setLevel(logging.ERROR)  # one "missed" line per job
    outcome = {EVENT_JOB_EXECUTED: 0, EVENT_JOB_MISSED: 0}
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.add_listener(
        lambda event: outcome.__setitem__(event.code, outcome[event.code] + 1),
        EVENT_JOB_EXECUTED | EVENT_JOB_MISSED,
    )
    at = datetime.now(UTC) + timedelta(seconds=2)
    for i in range(jobs):
        scheduler.add_job(time.sleep, "date", run_date=at, args=[work_ms / 1000], id=str(i))
    scheduler.start()
    wait_for(lambda: sum(outcome.values()) >= jobs, 60 + jobs * work_ms / 1000 / 10, 0.1)
    scheduler.shutdown(wait=False)
    return outcome[EVENT_JOB_EXECUTED], outcome[EVENT_JOB_MISSED]


def counts(state) -> tuple[int, int]:
    """(grants ended, revoke actions not done) in the daemon's database."""
    with daemon_db(state) as db:
        ended = db.Grant.select().where(db.Grant.state == "ended").count()
        pending = (
            db.Action.select()
            .where((db.Action.kind == "revoke") & (db.Action.done == False))  # noqa: E712
            .count()
        )
        return ended, pending


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.burst", description=__doc__)
    parser.add_argument("--grants", type=int, default=10_000)
    parser.add_argument("--proxy-latency-ms", type=int, default=0,
                        help="latency of every Proxy API call (default 0: none)")  # fmt: skip
    add_daemon_args(parser)
    args = parser.parse_args(argv)
    n = args.grants
    print_header(f"burst: {n:,} grants ending at the same instant, "
                 f"Proxy latency {args.proxy_latency_ms} ms")  # fmt: skip
    verdicts = Verdicts()
    with workdir("burst") as work:
        sandbox = Sandbox(work)
        state = work / "state"
        prepare_install(state)
        db = open_db(state)
        sandbox.seed_persons([scale_person(i) for i in range(n)])
        if args.proxy_latency_ms:
            sandbox.add_fault(latency_ms=args.proxy_latency_ms)
        fill_active_grants(db, [int(time.time()) + 3600] * n, int(time.time()))
        # The fill takes a while; T is set just before the start, DELAY seconds ahead.
        at = int(time.time()) + DELAY
        with db.database.connection_context(), db.database.atomic():
            db.Grant.update(ends_at=at).execute()
            db.Action.update(due_at=at, next_attempt_at=at).where(
                db.Action.kind == "revoke"
            ).execute()
        db.close_database()
        daemon = Daemon(state, sandbox.url).start(args.daemon_args.split())
        try:
            ready = daemon.wait_ready()
            print(f"   daemon ready in {ready:.2f} s; T is {at - time.time():.1f} s ahead")
            wait_for(lambda: time.time() >= at, 60, 0.2)
            cpu_at_t = cpu_seconds(daemon.pid)
            sandbox_at_t = cpu_seconds(sandbox.service.pid)
            finished = wait_for(lambda: counts(state)[1] == 0, WITHIN + 60, 0.5)
            drained = time.time() - at
            cpu = cpu_seconds(daemon.pid) - cpu_at_t
            sandbox_cpu = cpu_seconds(sandbox.service.pid) - sandbox_at_t
            world = sandbox.state()
            memory = daemon.memory()
        finally:
            daemon.stop()
            sandbox.stop()
        ended, pending = counts(state)
    received = {}
    for call in world["calls"]:
        parts = call["path"].split("/")
        if call["method"] == "POST" and parts[-1] == "scheduled-statuses":
            received.setdefault(parts[3], call["at"])
    delays = [t - at for t in received.values()]
    suspended = sum(
        1
        for p in world["persons"]
        if p["id"].startswith("pp-")
        and p["scheduledStatuses"]
        and p["scheduledStatuses"][-1]["status"] == "suspended"
    )
    last = max(delays, default=float("nan"))
    print(
        f"   {len(received)} suspensions received by Proxy, last at T+{last:.1f} s "
        f"(p50 T+{percentile(delays, 50):.1f} s, p99 T+{percentile(delays, 99):.1f} s) = "
        f"{len(received) / max(last, 1e-9):.0f} revocations/s; outbox drained at T+{drained:.1f} s;"
        f" {suspended} persons whose latest status is suspended; {ended} grants ended, "
        f"{pending} revokes pending; daemon CPU {cpu:.1f} s "
        f"({cpu / max(len(received), 1) * 1000:.1f} ms/revocation), Proxy sandbox CPU "
        f"{sandbox_cpu:.1f} s, "
        f"VmHWM {memory.get('VmHWM', 0):.0f} MiB",
        flush=True,
    )
    ran, dropped = apscheduler_defaults()
    print(
        f"   for comparison, one APScheduler date job per grant with its defaults: of 2,000 "
        f"jobs due at once (20 ms each), {ran} ran and {dropped} were dropped as missed"
    )
    verdicts.check(
        f"all {n:,} suspended within 60 s of T, none missed",
        finished and suspended == n and ended == n and last <= WITHIN,
        f"{suspended}/{n} suspended, {ended}/{n} ended, last at T+{last:.1f} s",
    )
    return verdicts.exit_code()


if __name__ == "__main__":
    sys.exit(main())
