"""Identity-verification hook: answer time with `verification_require_credential` on.

Healthy sandbox: each call issues the visitor's credential before answering (target p99 <=
250 ms), sequentially and from 4 clients (several lobby iPads). Hanging sandbox (every Proxy
call held until the fault is cleared) with ENVOY_PROXY_VERIFY_DEADLINE=2: every answer must
leave within the deadline + 1 s.

    python -m bench.verify [--calls 300]
"""

import argparse
import json
import sys
from collections import Counter

from bench.common import (
    Daemon,
    Sandbox,
    Verdicts,
    add_daemon_args,
    percentile,
    prepare_install,
    print_header,
    run_load,
    sign_ins,
    workdir,
)

HOOK = "/envoy/hooks/identity-verification"
DEADLINE = 2.0
HEALTHY_P99 = 0.250


def hook_calls(count: int, tag: str, config: dict) -> list:
    return sign_ins(count, tag, config, path=HOOK)


def print_refusals(result) -> None:
    """The distinct messages of the 412 answers (manual review), with their counts."""
    reasons = Counter(
        json.loads(body).get("message", "?") for status, body in result.answers.values()
        if status == 412
    )  # fmt: skip
    for reason, count in reasons.most_common():
        print(f"     412 x{count}: {reason}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.verify", description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--hanging-calls", type=int, default=24)
    parser.add_argument("--sweep-seconds", type=int, default=30,
                        help="the daemon's ENVOY_PROXY_SWEEP_SECONDS")  # fmt: skip
    add_daemon_args(parser)
    args = parser.parse_args(argv)
    print_header("identity-verification hook, verification_require_credential on")
    verdicts = Verdicts()
    with workdir("verify") as work:
        sandbox = Sandbox(work)
        state = work / "state"
        config = prepare_install(state, verification_require_credential=True)
        daemon = Daemon(
            state,
            sandbox.url,
            ENVOY_PROXY_VERIFY_DEADLINE=DEADLINE,
            ENVOY_PROXY_SWEEP_SECONDS=args.sweep_seconds,
        )
        daemon.start(args.daemon_args.split())
        try:
            daemon.wait_ready()
            run_load(daemon.url, hook_calls(20, "warm", config), clients=1)
            healthy = {}
            for clients in (1, 4):
                calls = hook_calls(args.calls, f"c{clients}", config)
                healthy[clients] = run_load(daemon.url, calls, clients=clients, keep_answers=True)
                print(f"   healthy, {clients} client(s): {healthy[clients].describe()}")
                print_refusals(healthy[clients])
            sandbox.add_fault(hang=True)
            hanging = run_load(
                daemon.url, hook_calls(args.hanging_calls, "hang", config), clients=4
            )
            print(f"   hanging Proxy, deadline {DEADLINE:g} s, 4 clients: {hanging.describe()}")
            sandbox.clear_faults()
        finally:
            daemon.stop()
            sandbox.stop()
    for clients, result in healthy.items():
        p99 = percentile(result.latencies, 99)
        verdicts.check(
            f"healthy p99 <= 250 ms ({clients} client{'s' if clients > 1 else ''})",
            p99 <= HEALTHY_P99 and result.statuses.get(200, 0) == args.calls,
            f"p50 {percentile(result.latencies, 50) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
            f"{result.statuses.get(200, 0)}/{args.calls} approved",
        )
    worst = max(hanging.latencies, default=float("inf"))
    verdicts.check(
        f"hanging Proxy: every answer <= deadline + 1 s = {DEADLINE + 1:g} s",
        worst <= DEADLINE + 1 and hanging.answered == args.hanging_calls,
        f"p50 {percentile(hanging.latencies, 50):.2f} s, "
        f"p99 {percentile(hanging.latencies, 99):.2f} s, max {worst:.2f} s, "
        f"statuses {dict(hanging.statuses)}",
    )
    return verdicts.exit_code()


if __name__ == "__main__":
    sys.exit(main())
