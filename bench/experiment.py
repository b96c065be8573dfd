"""Measure a proposed fix before it lands: run the daemon with named patches applied.

    python -m bench.experiment switch_interval serve
    python -m bench.intake --daemon-args "-m bench.experiment switch_interval serve"

The shipped code is never changed by this module; each patch here is the smallest version of a
change proposed in BENCHMARKS.md for a file the benchmarks may not edit, so that the proposal
comes with measured numbers. Patches are applied in the daemon process only. (The patches that
measured F1-F5 and the sandbox's `nodelay` were dropped once those fixes landed.)
"""

import sys


def switch_interval() -> None:
    """CPython's GIL switch interval at 1 ms instead of 5 ms: a webhook thread waiting for the
    GIL behind a busy outbox or planner thread gets it sooner, at some cost in switching."""
    sys.setswitchinterval(0.001)


def accept_only() -> None:
    """A ceiling: the accept path with every background step switched off (nothing planned,
    nothing issued). What the webhook itself can do in this stack on this machine."""
    import daemon.access.runner

    daemon.access.runner.run_due = lambda ctx, now=None: None
    daemon.access.runner.dispatch_due = lambda ctx: None


def urllib3_client() -> None:
    """Outbound calls through urllib3 directly instead of requests (requests' own transport):
    what a lighter HTTP client would give end to end. The design card names requests, so this
    is a decision above code (BENCHMARKS.md §1, 1b); the clients are unchanged."""
    import json as json_module
    from urllib.parse import urlencode

    import requests
    import urllib3

    from daemon import http_session

    pool = urllib3.PoolManager(maxsize=http_session.POOL_SIZE, retries=False)

    class Response:
        def __init__(self, answer):
            self.status_code, self.reason = answer.status, answer.reason
            self.headers, self.content = answer.headers, answer.data
            self.ok = self.status_code < 400

        def json(self):
            return json_module.loads(self.content)

    def request(self, method, url, params=None, data=None, headers=None, json=None,
                auth=None, timeout=None, **options):  # fmt: skip
        headers = dict(headers or {})
        if params:
            url += "?" + urlencode(params)
        if json is not None:
            data = json_module.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        elif isinstance(data, dict):
            data = urlencode(data)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if auth is not None:
            basic = f"{auth.username}:{auth.password}"
            headers.update(urllib3.util.make_headers(basic_auth=basic))
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        try:
            answer = pool.request(method, url, body=data, headers=headers, redirect=False,
                                  timeout=urllib3.Timeout(connect=connect, read=read))  # fmt: skip
        except urllib3.exceptions.HTTPError as error:
            raise requests.ConnectionError(str(error)) from None
        return Response(answer)

    http_session._NoRedirects.request = request


def no_heartbeat_poll() -> None:
    """The heartbeat leaves the alarm alone (issue 18): what an instance's lateness for work
    another instance committed would be without the poll (bench/wakeup.py)."""
    from daemon.ops import instances

    plain = instances.Heartbeat.__init__
    instances.Heartbeat.__init__ = lambda self, claimer, started_at=None, rearm=None: plain(
        self, claimer, started_at
    )


def format_outside_lock() -> None:
    """Log lines formatted (and masked) before the handler's lock is taken, so that a thread
    holding it only writes: a thread descheduled while holding it stalls every thread that
    logs (issue 18, webhooks waiting in `Handler.acquire`)."""
    import logging

    def handle(self, record):
        if not self.filter(record):
            return False
        line = self.format(record) + self.terminator
        with self.lock:
            self.stream.write(line)
            self.stream.flush()
        return True

    logging.StreamHandler.handle = handle


def runner_keeps_connection() -> None:
    """Each runner thread keeps its database connection for its life instead of checking one
    out of the pool per group: fewer turns on peewee's one connect/close lock."""
    import daemon.access.runner as module
    from db import database

    class Kept:
        def __enter__(self):
            database.connect(reuse_if_open=True)

        def __exit__(self, *exc):
            return False

    class KeepsConnection:
        def __getattr__(self, name):
            return getattr(database, name)

        def connection_context(self):
            return Kept()

    module.database = KeepsConnection()


def workers_16() -> None:
    """The runner with 16 workers instead of 64."""
    from daemon.access import runner

    runner.WORKERS = 16
    runner.Runner.__init__.__defaults__ = (16,)


PATCHES = {
    "workers_16": workers_16,
    "format_outside_lock": format_outside_lock,
    "runner_keeps_connection": runner_keeps_connection,
    "accept_only": accept_only,
    "urllib3_client": urllib3_client,
    "switch_interval": switch_interval,
    "no_heartbeat_poll": no_heartbeat_poll,
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
