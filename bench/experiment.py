"""Measure a proposed fix before it lands: run the daemon with named patches applied.

    python -m bench.experiment inbox_only serve
    python -m bench.intake --daemon-args "-m bench.experiment inbox_only serve"

The shipped code is never changed by this module; each patch here is the smallest version of a
change proposed in BENCHMARKS.md for a file the benchmarks may not edit, so that the proposal
comes with measured numbers. Patches are applied in the daemon process only. (The patches that
measured F1, F2 and F4 were dropped once those fixes landed in db/ and daemon/.)
"""

import sys


def inbox_only() -> None:
    """A ceiling, not a fix as such: the accept path reduced to one inbox INSERT and commit.

    With ENVOY_PROXY_INLINE_BUDGET=0 Envoy gets 202 whatever the plan is, so the event could
    be stored raw (signature checked, job id unique) and planned by the outbox worker in
    batches, its 400/412 outcomes sent as Envoy job updates. This patch measures what such an
    accept path costs in this stack (Bottle, Waitress, peewee's connection, one fsync); the
    stored events are not processed further.
    """
    import daemon.events
    from daemon.envoy_request import BadRequest
    from db import database, now_epoch

    def handle_event(ctx, request):
        if not request.event or not request.job_id:
            raise BadRequest("`meta.event` and `meta.job.id` are required")
        with database.atomic():
            database.execute_sql(
                "INSERT OR IGNORE INTO event (job_id, event, install_id, received_at, status,"
                " answer) VALUES (?, ?, ?, ?, 202, '{}')",
                (request.job_id, request.event, request.install_id, now_epoch()),
            )
        return daemon.events.PENDING

    daemon.events.handle_event = handle_event


def no_fast_path_at_budget_0() -> None:
    """daemon/events.py `_run_fast_path`: with ENVOY_PROXY_INLINE_BUDGET=0 the answer is 202
    whatever happens, yet the handler still runs 5 queries (the due actions, then
    `_final_answer`'s grant, install, dead-action and due-work lookups) to compute it. Part of
    proposal F3: answer PENDING at once (the handler's second transaction, which rewrites the
    inbox answer with the same 202, remains here; F3 also drops it)."""
    import daemon.events

    run_fast_path = daemon.events._run_fast_path

    def _run_fast_path(ctx, grant, now):
        if ctx.config.inline_budget <= 0:
            return daemon.events.PENDING
        return run_fast_path(ctx, grant, now)

    daemon.events._run_fast_path = _run_fast_path


def nodelay() -> None:
    """sandbox/proxy.py `_Handler` and sandbox/envoy.py `_QuietHandler`: set
    `disable_nagle_algorithm = True` (TCP_NODELAY).

    `BaseHTTPRequestHandler` writes the headers, then the body, in two sends; with Nagle's
    algorithm on, the body waits for the client's delayed ACK: every sandbox answer takes
    ~44 ms on loopback whatever the work. Every issue (4 Proxy calls) and revoke (3) pays it.
    (Landed in 3d9db4b; kept so that the commands quoted in BENCHMARKS.md still run.)
    """
    import sandbox.envoy
    import sandbox.proxy

    sandbox.proxy._Handler.disable_nagle_algorithm = True
    sandbox.envoy._QuietHandler.disable_nagle_algorithm = True


PATCHES = {
    "nodelay": nodelay,
    "no_fast_path_at_budget_0": no_fast_path_at_budget_0,
    "inbox_only": inbox_only,
}


def main(argv: list[str]) -> int:
    """`PATCHES ARGS…`: ARGS as for `python -m daemon` (serve, sandbox proxy, simulate…)."""
    names = argv[0].split(",") if argv else []
    for name in names:
        PATCHES[name]()
    from daemon.__main__ import main as daemon_main

    return daemon_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
