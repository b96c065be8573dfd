"""Pending scale: N active grants waiting for their end, 1,000 of them ending within a minute.

For each N the database is filled before the daemon starts (peewee insert_many in chunks):
N active grants with their issue action done and their revoke action pending, ends spread
over the next 30 days, except 1,000 that end between +15 s and +60 s after the start. The
sandbox holds the persons of those 1,000 (the others never run within the minute). Measured:
start to /healthz (ready), the daemon's memory, and the lateness of the 1,000 ends: from the
due second to Proxy receiving the suspension (the sandbox's call log). Once those ends are
done, the admin's views are timed with N pending: GET /metrics, /healthz, /status and
/status.json, each 5 times (the first is the cold one), /status with the admin's password.

    python -m bench.pending_scale [--quick]      # --quick: N = 10k and 100k only
"""

import argparse
import random
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

import requests

from bench.common import (
    Daemon,
    Sandbox,
    Verdicts,
    add_daemon_args,
    daemon_db,
    fill_active_grants,
    open_db,
    percentile,
    person_id,
    prepare_install,
    print_header,
    scale_person,
    set_ends,
    wait_for,
    workdir,
)

SOON = 1000
FIRST_END, LAST_END = 15, 60  # seconds after the daemon starts
READY_TARGET, RSS_TARGET_MIB, LATENESS_TARGET = 3.0, 150.0, 1.0
VIEW_TARGET = 0.200
VIEWS = ("/metrics", "/healthz", "/status", "/status.json")
VIEW_TRIES = 5
ADMIN_PASSWORD = "bench-admin"
TARGET_N = 1_000_000
DAY = 86400
CACHE_SECONDS = 3000


def bring_ends_near(db, start: float) -> dict[int, int]:
    """Move the ends of grants 1..1000 into the minute after `start`; grant id -> due epoch."""
    due = {
        i + 1: int(start) + FIRST_END + (i * (LAST_END - FIRST_END)) // SOON for i in range(SOON)
    }
    set_ends(db, due)
    return due


def time_views(url: str) -> dict[str, list[float]]:
    """Seconds of each of VIEW_TRIES GETs of each admin view, in order; one must answer 200."""
    auth = ("admin", ADMIN_PASSWORD)
    times: dict[str, list[float]] = {}
    for view in VIEWS:
        for _ in range(VIEW_TRIES):
            began = time.monotonic()
            answer = requests.get(url + view, auth=auth, timeout=120)
            times.setdefault(view, []).append(time.monotonic() - began)
            if answer.status_code != 200:
                raise RuntimeError(f"GET {view} answered {answer.status_code}: {answer.text[:300]}")
    return times


def run_one(n: int, verdicts: Verdicts, final: bool, daemon_args: str, cache: Path | None):
    with workdir(f"scale-{n}") as work:
        sandbox = Sandbox(work)
        state = work / "state"
        prepare_install(state)
        db = open_db(state)
        began = time.monotonic()
        cached = cache / f"scale-{n}" if cache else None
        # Far ends lie an hour or more after the fill: a copy younger than that still holds.
        if cached and cached.exists() and time.time() - cached.stat().st_mtime < CACHE_SECONDS:
            db.close_database()
            for name in ("daemon.sqlite3", "secret.key"):
                shutil.copyfile(cached / name, state / name)
            db.open_database(str(state / "daemon.sqlite3"))
        else:
            now = int(time.time())
            rng = random.Random(n)
            fill_active_grants(db, [now + rng.randint(3600, 30 * DAY) for _ in range(n)], now)
            if cached:
                cached.mkdir(parents=True, exist_ok=True)
                for name in ("daemon.sqlite3", "secret.key"):
                    shutil.copyfile(state / name, cached / name)
        filled = time.monotonic() - began
        size = (state / "daemon.sqlite3").stat().st_size / 2**20
        sandbox.seed_persons([scale_person(i) for i in range(SOON)])
        daemon = Daemon(state, sandbox.url, ENVOY_PROXY_ADMIN_PASSWORD=ADMIN_PASSWORD)
        # Ends are placed relative to the start; 0.2 s of slack keeps the first one ahead.
        due = bring_ends_near(db, time.time() + 0.2)
        db.close_database()
        daemon.start(daemon_args.split())
        try:
            ready = daemon.wait_ready()
            at_ready = daemon.memory()
            last_due = max(due.values())
            wait_for(lambda: time.time() > last_due + 2, LAST_END + 30, 0.5)
            wait_for(lambda: ended(state) >= SOON, 60, 0.5)
            memory = daemon.memory()
            world = sandbox.state()
            views = time_views(daemon.url)
        finally:
            daemon.stop()
            sandbox.stop()
        done = ended(state)
    calls = {}
    for call in world["calls"]:
        parts = call["path"].split("/")
        if call["method"] == "POST" and parts[-1] == "scheduled-statuses":
            calls.setdefault(parts[3], call["at"])
    lateness = [calls[person_id(g - 1)] - at for g, at in due.items() if person_id(g - 1) in calls]
    effective = []  # the instant Proxy applies the suspension, which must lie in the future
    for person in world["persons"]:
        if person["id"].startswith("pp-") and person["scheduledStatuses"]:
            last = person["scheduledStatuses"][-1]
            if last["status"] == "suspended":
                effective.append(epoch(last["scheduledDate"]) - due[int(person["id"][3:]) + 1])
    suspended = len(effective)
    print(
        f"   N={n:,}: filled in {filled:.0f} s ({size:.0f} MiB); ready {ready:.2f} s after start; "
        f"RSS at ready {at_ready.get('VmRSS', 0):.0f} MiB, peak {memory.get('VmHWM', 0):.0f} MiB; "
        f"{done}/{SOON} ended in the db, {len(lateness)} suspensions received, {suspended} persons "
        f"suspended; lateness p50 {percentile(lateness, 50):.2f} s, "
        f"p99 {percentile(lateness, 99):.2f} s, max {max(lateness, default=float('nan')):.2f} s; "
        f"suspension effective in Proxy p50 {percentile(effective, 50):.2f} s, "
        f"p99 {percentile(effective, 99):.2f} s after due",
        flush=True,
    )
    print("   " + "; ".join(
        f"GET {view} first {times[0] * 1000:.0f} ms, then max {max(times[1:]) * 1000:.0f} ms"
        for view, times in views.items()
    ), flush=True)  # fmt: skip
    label = f"N={n:,}"
    if final:
        for view in VIEWS[:3]:
            worst = max(views[view])
            verdicts.check(f"{label} GET {view} <= 200 ms", worst <= VIEW_TARGET,
                           f"max {worst * 1000:.0f} ms of {VIEW_TRIES}")  # fmt: skip
        verdicts.check(f"{label} ready <= 3 s", ready <= READY_TARGET, f"{ready:.2f} s")
        peak = memory.get("VmHWM", 0)
        verdicts.check(f"{label} RSS <= 150 MB", peak <= RSS_TARGET_MIB, f"VmHWM {peak:.0f} MiB")
    p99 = percentile(lateness, 99)
    verdicts.check(
        f"{label} lateness p99 <= 1 s, none missed",
        len(lateness) == SOON and done == SOON and p99 <= LATENESS_TARGET,
        f"p99 {p99:.2f} s over {len(lateness)}/{SOON}; {done} ended",
    )


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def ended(state) -> int:
    with daemon_db(state) as db:
        return db.Grant.select().where((db.Grant.id <= SOON) & (db.Grant.state == "ended")).count()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pending_scale", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="N = 10k and 100k only")
    parser.add_argument("--sizes", help="comma-separated N values (overrides --quick)")
    parser.add_argument("--fill-cache", type=Path,
                        help="keep each filled database here, reused for 50 minutes")  # fmt: skip
    add_daemon_args(parser)
    args = parser.parse_args(argv)
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, TARGET_N]
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    print_header(f"pending scale: N = {', '.join(f'{n:,}' for n in sizes)}")
    verdicts = Verdicts()
    for n in sizes:
        run_one(n, verdicts, n == max(sizes), args.daemon_args, args.fill_cache)
    return verdicts.exit_code()


if __name__ == "__main__":
    sys.exit(main())
