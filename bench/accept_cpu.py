"""CPU cost of one accepted event, in-process: the app called as WSGI, no HTTP, no contention.

Separates the webhook's own CPU from everything the intake benchmark mixes in (Waitress,
the load generator, the outbox). `--profile` adds cProfile's top functions and counts the SQL
statements per event.

    python -m bench.accept_cpu [--events 1000] [--profile]
"""

import argparse
import cProfile
import io
import logging
import pstats
import sys
import time

from bench.common import CLIENT_SECRET, prepare_install, print_header, sign_ins, workdir
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
    args = parser.parse_args(argv)
    print_header(f"accept path CPU, in-process, {args.events} entry_sign_in {args.patches}")
    for name in filter(None, args.patches.split(",")):
        PATCHES[name]()
    import db
    from daemon import config
    from daemon.context import Context
    from daemon.secretbox import SecretBox
    from web.app import create_app

    with workdir("accept-cpu") as work:
        settings = prepare_install(work)
        cfg = config.load(
            environ={
                "ENVOY_CLIENT_SECRET": CLIENT_SECRET,
                "ENVOY_PROXY_DB": str(work / "daemon.sqlite3"),
                "ENVOY_PROXY_KEY_FILE": str(work / "secret.key"),
                "ENVOY_PROXY_INLINE_BUDGET": "0",
                "PROXY_API_URL": "http://127.0.0.1:9",
            }
        )
        db.open_database(cfg.db)
        app = create_app(Context.build(cfg, SecretBox.from_key_file(cfg.key_file)))
        logging.disable(logging.INFO)  # the daemon logs one line per event; not measured here
        for request in sign_ins(100, "warm", settings):
            call(app, request)
        requests = sign_ins(args.events, "cpu", settings)
        statements = [0]
        if args.profile:
            execute = db.database.execute_sql

            def counted(*a, **kw):
                statements[0] += 1
                return execute(*a, **kw)

            db.database.execute_sql = counted
        profile = cProfile.Profile()
        began = time.process_time()
        if args.profile:
            profile.enable()
        statuses = {call(app, request) for request in requests}
        profile.disable()
        spent = time.process_time() - began
        db.close_database()
    print(
        f"   {spent / args.events * 1000:.2f} ms of CPU per accepted event "
        f"({args.events / spent:.0f} events/s on one core), answers {sorted(statuses)}"
        + (" (under cProfile)" if args.profile else "")
    )
    if args.profile:
        print(f"   {statements[0] / args.events:.1f} SQL statements per event")
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(30)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
