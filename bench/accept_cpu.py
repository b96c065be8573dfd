"""CPU cost of one accepted event, in-process: the app called as WSGI, no HTTP, no contention
(verified, planned and stored in one transaction, answered 202); then of issuing their
credentials and updating their Envoy jobs (the runner, against the Proxy sandbox and the
Envoy simulator running as processes of their own, so not counted here).

Separates the webhook's own CPU from everything the intake benchmark mixes in (Waitress,
the load generator, the outbox). `--profile` adds cProfile's top functions and counts the SQL
statements per event, for each phase.

    python -m bench.accept_cpu [--events 1000] [--profile] [--postgres]
"""

import argparse
import contextlib
import cProfile
import io
import logging
import pstats
import sys
import time

from bench.common import (
    CLIENT_ID,
    CLIENT_SECRET,
    DATABASE_URL_FILE,
    EnvoySim,
    Sandbox,
    database_location,
    prepare_install,
    print_header,
    sign_ins,
    workdir,
)
from bench.engines import postgres_server
from bench.experiment import PATCHES


def call(app, request) -> str:
    _, path, body, headers = request
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": path, "SERVER_NAME": "bench", "SERVER_PORT": "80",
        "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": headers["Content-Type"],
        "HTTP_X_ENVOY_SIGNATURE": headers["X-Envoy-Signature"], "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
    }  # fmt: skip
    status = []
    b"".join(app(environ, lambda line, headers, exc_info=None: status.append(line)))
    return status[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.accept_cpu", description=__doc__)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--patches", default="", help="bench/experiment.py patches to apply")
    parser.add_argument(
        "--postgres", action="store_true", help="the database on a throwaway PostgreSQL cluster"
    )
    args = parser.parse_args(argv)
    print_header(f"accept path CPU, in-process, {args.events} entry_sign_in {args.patches}")
    for name in filter(None, args.patches.split(",")):
        PATCHES[name]()
    import db
    from daemon import config
    from daemon.access.runner import run_due
    from daemon.context import Context
    from daemon.secretbox import SecretBox
    from web.app import create_app

    with workdir("accept-cpu") as work, contextlib.ExitStack() as stack:
        if args.postgres:
            url = stack.enter_context(postgres_server()).new_database("accept_cpu")
            (work / DATABASE_URL_FILE).write_text(url)
        sandbox, envoy = Sandbox(work), EnvoySim(work)
        settings = prepare_install(work)
        cfg = config.load(
            environ={
                "ENVOY_CLIENT_SECRET": CLIENT_SECRET,
                "ENVOY_PROXY_DB": database_location(work),
                "ENVOY_PROXY_KEY_FILE": str(work / "secret.key"),
                "PROXY_API_URL": sandbox.url,
                "ENVOY_CLIENT_ID": CLIENT_ID,
                "ENVOY_BASE_URL": envoy.url,
            }
        )
        db.open_database(cfg.db)
        ctx = Context.build(cfg, SecretBox.from_key_file(cfg.key_file))
        app = create_app(ctx)
        logging.disable(logging.INFO)  # the daemon logs one line per event; not measured here
        for request in sign_ins(100, "warm", settings):
            call(app, request)
        requests = sign_ins(args.events, "cpu", settings)
        counter = _count_statements(db.database.obj) if args.profile else None
        accept = _measure(lambda: {call(app, r) for r in requests}, args, counter)
        with db.database.connection_context():
            issue = _measure(lambda: _run_until_done(run_due, ctx), args, counter)
        db.close_database()
        sandbox.stop()
        envoy.stop()
    _report("accepted event", accept, args)
    _report("credential issued, its job updated", issue, args)
    return 0


def _run_until_done(run_due, ctx) -> list:
    """The outbox until nothing is due (issues, then the job updates they queue)."""
    from db import Action, now_epoch

    while (
        Action.select()
        .where(
            (Action.done == False) & (Action.next_attempt_at <= now_epoch())  # noqa: E712
        )
        .exists()
    ):
        run_due(ctx)
    return list(Action.select().where(Action.kind == "job_update"))


def _count_statements(database) -> list[int]:
    counter = [0]
    execute = database.execute_sql

    def counted(*a, **kw):
        counter[0] += 1
        return execute(*a, **kw)

    database.execute_sql = counted
    return counter


def _measure(work, args, counter) -> tuple:
    """(CPU seconds, result, statements, profile text) of one phase."""
    profile = cProfile.Profile()
    if counter:
        counter[0] = 0
    began = time.process_time()
    if args.profile:
        profile.enable()
    result = work()
    profile.disable()
    spent = time.process_time() - began
    text = ""
    if args.profile:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(25)
        text = out.getvalue()
    return spent, result, counter[0] if counter else 0, text


def _report(what: str, measured: tuple, args) -> None:
    spent, result, statements, text = measured
    outcome = sorted(result) if isinstance(result, set) else f"{len(result)} done"
    print(
        f"   {spent / args.events * 1000:.2f} ms of CPU per {what} "
        f"({args.events / spent:.0f}/s on one core): {outcome}"
        + (" (under cProfile)" if args.profile else "")
    )
    if args.profile:
        print(f"   {statements / args.events:.1f} SQL statements per {what}")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
