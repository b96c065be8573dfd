"""Intake: signed `entry_sign_in` events from 16 keep-alive clients, against a bare baseline.

(a) accept path: verified, planned, committed, answered 202 (the credential is issued after
    the answer, and Envoy's job updated), as events/s and p50/p99, next to a bare
    Bottle+Waitress hello-world (same threads, same generator);
(b) end to end: from the first send until every visitor's grant is active and the sandbox
    holds an active person with the flow's tag, as credentials/s.
(a) is measured as it happens, with the outbox issuing the same visitors' credentials in the
same process, and again "alone" on a fresh daemon whose Proxy is unreachable (its outbox
workers sleep in backoff), which isolates the webhook's own cost.

    python -m bench.intake [--events 3000] [--clients 16]
"""

import argparse
import re
import sys
import time
from collections import Counter

from bench.common import (
    DAEMON_THREADS,
    BareServer,
    Daemon,
    EnvoySim,
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
    sign_ins,
    wait_for,
    workdir,
)

ACCEPT_SHARE_TARGET = 0.30
ACCEPT_P99_TARGET = 0.050
E2E_TARGET = 200.0
STATUS_MARGIN = 10  # seconds: Proxy applies a scheduled status at least 5 s after it is sent


def active_grants(db) -> int:
    with db.database.connection_context():
        return db.Grant.select().where(db.Grant.state == "active").count()


def wait_progress(count, total: int, stall: float = 30, limit: float = 300) -> bool:
    """Wait until `count()` reaches `total`; give up after `stall` s without progress."""
    began = last_change = time.monotonic()
    seen = -1
    while time.monotonic() - began < limit:
        now_seen = count()
        if now_seen >= total:
            return True
        if now_seen != seen:
            seen, last_change = now_seen, time.monotonic()
        elif time.monotonic() - last_change > stall:
            return False
        time.sleep(0.05)
    return False


def effective_status(person: dict, at: float) -> str:
    """The person's status at `at` from its scheduled statuses (later entries win ties)."""
    from datetime import datetime

    due = [
        (datetime.fromisoformat(s["scheduledDate"].replace("Z", "+00:00")).timestamp(), i, s)
        for i, s in enumerate(person["scheduledStatuses"])
    ]
    due = [(t, i, s["status"]) for t, i, s in due if t <= at]
    return max(due)[2] if due else "active"


def accept_alone(work, args, config: dict):
    """The accept path on a fresh daemon whose outbox finds Proxy unreachable: its workers
    sleep in backoff instead of issuing, so the webhooks have the process to themselves."""
    state = work / "alone"
    prepare_install(state)
    daemon = Daemon(state, "http://127.0.0.1:9")
    daemon.start(args.daemon_args.split())
    try:
        daemon.wait_ready()
        run_load(daemon.url, sign_ins(args.warmup, "alone-warm", config), args.clients)
        return run_load(daemon.url, sign_ins(args.events, "alone", config), args.clients)
    finally:
        daemon.kill()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.intake", description=__doc__)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=200)
    add_daemon_args(parser)
    parser.add_argument("--profile", action="store_true",
                        help="record the daemon with py-spy during the accept run")  # fmt: skip
    parser.add_argument("--profile-idle", action="store_true",
                        help="with --profile: also sample waiting threads")  # fmt: skip
    args = parser.parse_args(argv)
    print_header(f"intake: {args.events} entry_sign_in, {args.clients} clients")
    verdicts = Verdicts()
    with workdir("intake") as work:
        sandbox, envoy = Sandbox(work), EnvoySim(work)
        state = work / "state"
        config = prepare_install(state)
        daemon = Daemon(state, sandbox.url, envoy.url)
        daemon.start(args.daemon_args.split())
        try:
            daemon.wait_ready()
            db = open_db(state)

            bare = BareServer(work, threads=DAEMON_THREADS)
            run_load(bare.url, sign_ins(args.warmup, "bare-warm", config), args.clients)
            baseline = run_load(bare.url, sign_ins(args.events, "bare", config), args.clients)
            bare.stop()
            print(f"   bare Bottle+Waitress ({DAEMON_THREADS} threads): {baseline.describe()}")

            warm = run_load(daemon.url, sign_ins(args.warmup, "warm", config), args.clients)
            wait_for(lambda: active_grants(db) >= warm.answered, 120, 0.2)

            before = active_grants(db)
            events = sign_ins(args.events, "load", config)
            profiler = None
            if args.profile:
                profiler = Profiler(daemon.pid, work / "intake.pyspy", idle=args.profile_idle)
            cpu_before = cpu_seconds(daemon.pid)
            sandbox_before = cpu_seconds(sandbox.service.pid)
            accept = run_load(daemon.url, events, args.clients)
            accept_cpu = cpu_seconds(daemon.pid) - cpu_before
            if profiler:
                print(profiler.finish())
            print(f"   accept path: {accept.describe()}")
            done = wait_progress(lambda: active_grants(db) - before, args.events)
            e2e_seconds = time.time() - accept.first_sent
            e2e_cpu = cpu_seconds(daemon.pid) - cpu_before
            sandbox_cpu = cpu_seconds(sandbox.service.pid) - sandbox_before
            memory = daemon.memory()

            world = sandbox.state()
            mine = {p["email"]: p for p in world["persons"] if p["email"].startswith("load-")}
            check_at = time.time() + STATUS_MARGIN
            good = [
                p
                for p in mine.values()
                if effective_status(p, check_at) == "active" and p["tags"] == ["visitor-lobby"]
            ]
            last_call = max(
                (c["at"] for c in world["calls"] if c["path"].startswith("/mobile-access")),
                default=float("nan"),
            )
            e2e_rate = args.events / e2e_seconds
            routes = Counter(
                f"{c['method']} {re.sub(r'/p_[^/]+', '/{id}', c['path'])}"
                for c in world["calls"]
                if c["at"] >= accept.first_sent
            )
            print(
                "   Proxy calls per credential: "
                + ", ".join(f"{route} {n / args.events:.2f}" for route, n in routes.most_common())
            )
            print(
                f"   end to end: {'all' if done else 'NOT all'} {args.events} grants active after "
                f"{e2e_seconds:.2f} s = {e2e_rate:.0f} credentials/s; sandbox: {len(mine)} "
                f"persons, {len(good)} active with the flow's tag; last Proxy call at "
                f"+{last_call - accept.first_sent:.2f} s"
            )
            print(
                f"   daemon CPU: {accept_cpu:.1f} s during the accept run "
                f"({accept_cpu / max(accept.elapsed, 1e-9):.0%} of one core), "
                f"{e2e_cpu:.1f} s until all active = "
                f"{e2e_cpu / args.events * 1000:.1f} ms/credential; Proxy sandbox CPU "
                f"{sandbox_cpu:.1f} s = {sandbox_cpu / args.events * 1000:.1f} ms/credential"
            )
            print(
                f"   daemon memory: VmHWM {memory.get('VmHWM', 0):.0f} MiB, "
                f"VmRSS {memory.get('VmRSS', 0):.0f} MiB"
            )
        finally:
            daemon.stop()
            sandbox.stop()
            envoy.stop()
        alone = accept_alone(work, args, config)
        print(f"   accept path alone (Proxy unreachable, so no issuing competes): "
              f"{alone.describe()}")  # fmt: skip

    _check_accept(verdicts, accept, alone, baseline, args.events)
    verdicts.check(
        "end to end >= 200 credentials/s",
        done and len(good) == args.events and e2e_rate >= E2E_TARGET,
        f"{e2e_rate:.0f} credentials/s ({len(good)}/{args.events} active with tag in Proxy)",
    )
    return verdicts.exit_code()


def _check_accept(verdicts, accept, alone, baseline, events: int) -> None:
    share = accept.rate / baseline.rate if baseline.rate else 0.0
    all_accepted = accept.statuses.get(202, 0) == events
    verdicts.check(
        "accept >= 30% of bare req/s",
        share >= ACCEPT_SHARE_TARGET and all_accepted,
        f"{accept.rate:.0f} events/s vs bare {baseline.rate:.0f} req/s = {share:.0%}"
        f" ({accept.statuses.get(202, 0)}/{events} answered 202)",
    )
    verdicts.check(
        "accept alone >= 30% of bare req/s",
        alone.rate >= ACCEPT_SHARE_TARGET * baseline.rate,
        f"{alone.rate:.0f} events/s = {alone.rate / baseline.rate:.0%} of bare",
    )
    p99 = percentile(accept.latencies, 99)
    verdicts.check("accept p99 < 50 ms", p99 < ACCEPT_P99_TARGET, f"p99 {p99 * 1000:.1f} ms")
    p99 = percentile(alone.latencies, 99)
    verdicts.check("accept alone p99 < 50 ms", p99 < ACCEPT_P99_TARGET, f"p99 {p99 * 1000:.1f} ms")


if __name__ == "__main__":
    sys.exit(main())
