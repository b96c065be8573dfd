"""Accepted sign-ins per second with 1, 2 and 3 daemons on one PostgreSQL database.

Signed walk-in sign-ins sent flat out from 16 keep-alive clients, request i to instance
i mod N (a round-robin balancer), while the instances issue each credential in Proxy (the
sandbox answers every call 120 ms late) and update its Envoy job. Each row is a site of its
own: its sandbox, a fresh database and N daemons started on it, a warm-up first. SQLite's
single instance is the reference row. PostgreSQL is bench/engines.py's server (a throwaway
cluster with fsync and synchronous commit on, or ENVOY_PROXY_TEST_PG_URL's).

Every process shares the machine's cores: the instances, PostgreSQL, the sandbox and this
load generator (with the Envoy simulator in a thread).

    python -m bench.instances [--events 3000] [--instances 1,2,3] [--latency-ms 120]
                              [--no-durable]
"""

import argparse
import sys
import time

from bench.common import (
    Verdicts,
    add_daemon_args,
    cpu_seconds,
    percentile,
    print_header,
    run_load,
    sign_ins,
    workdir,
)
from bench.engines import add_durability_arg, postgres_server
from bench.site import Site, TimedEnvoy


def measure(work, envoy, args, name: str, database: str | None, instances: int):
    """One row of the table: the accept rate and latency of `instances` daemons on
    `database`, their CPU per event, how long the issuing went on after the last answer; and
    whether every sign-in was answered 202 and its due work done."""
    site = Site(work, name, envoy, args, database, instances)
    try:
        run_load(site.urls, sign_ins(args.warmup, f"{name}-warm", site.config), args.clients)
        site.settle()
        cpu = sum(cpu_seconds(daemon.pid) for daemon in site.daemons)
        load = run_load(site.urls, sign_ins(args.events, name, site.config), args.clients)
        cpu = sum(cpu_seconds(daemon.pid) for daemon in site.daemons) - cpu
        answered = time.monotonic()
        settled = site.settle()
        drained = time.monotonic() - answered
    finally:
        site.close()
    row = (
        f"| {name} | {instances} | {load.rate:.0f} | {percentile(load.latencies, 50) * 1000:.1f}"
        f" ms | {percentile(load.latencies, 99) * 1000:.1f} ms | "
        f"{load.statuses.get(202, 0)}/{args.events} | {cpu / args.events * 1000:.1f} ms | "
        f"{drained:.1f} s{'' if settled else ' (not drained)'} |"
    )
    print(f"   {name}, {instances} instance(s): {load.describe()}; daemons' CPU {cpu:.1f} s; "
          f"due work drained {drained:.1f} s after the last answer", flush=True)  # fmt: skip
    return row, load.statuses.get(202, 0) == args.events and settled


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instances",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=3000, help="sign-ins per row")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--instances", default="1,2,3", help="PostgreSQL rows: instance counts")
    parser.add_argument("--latency-ms", type=int, default=120)
    add_daemon_args(parser)
    add_durability_arg(parser)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.instances.split(",")]
    print_header(f"instances: {args.events} sign-ins flat out from {args.clients} clients, "
                 f"round robin; Proxy {args.latency_ms} ms a call")  # fmt: skip
    verdicts = Verdicts()
    rows = []
    envoy = TimedEnvoy().start()
    try:
        with workdir("instances") as work, postgres_server(args.durable) as server:
            print(f"   PostgreSQL: {server.describe()}", flush=True)
            rows.append(measure(work, envoy, args, "sqlite", None, 1))
            for n in counts:
                name = f"postgres_{n}"
                rows.append(measure(work, envoy, args, name, server.new_database(name), n))
    finally:
        envoy.stop()
    print("| database | instances | accepted/s | p50 | p99 | answered 202 | daemons' CPU per "
          "event | due work drained after |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(row for row, _ in rows))
    verdicts.check(
        "every sign-in answered 202 and its due work done",
        all(ok for _, ok in rows),
        f"{sum(ok for _, ok in rows)} of {len(rows)} rows",
    )
    return verdicts.exit_code()


if __name__ == "__main__":
    sys.exit(main())
