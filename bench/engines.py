"""Issue 15's targets on SQLite and on PostgreSQL, back to back in one run, side by side.

bench/site.py's parts d (Proxy calls per visitor lifecycle), a (accept p99 at 50/s), c
(sign-in -> active p99 at 20/s, no growing backlog at 50/s) and e (identity hook p99) run
first with each site's database a SQLite file, then with each site's database a fresh
PostgreSQL database. The PostgreSQL server is a throwaway cluster started by this run
(tests/fixtures/pg_cluster.py) with PostgreSQL's own durability: the fixture turns fsync and
synchronous commit off for speed, but SQLite runs with synchronous=FULL, so a comparison must
have both flush their commits. Or the server at ENVOY_PROXY_TEST_PG_URL (an account that may
create databases), as it is configured. One table at the end: each target, each engine's
figure and verdict.

    python -m bench.engines [--parts dace] [--seconds S] [--latency-ms 120] [--no-durable]
"""

import argparse
import contextlib
import os
import sys
import urllib.parse
from collections.abc import Iterator
from unittest import mock

from bench.common import Verdicts, print_header, workdir
from bench.site import add_site_args, run_parts
from tests.fixtures import pg_cluster

PARTS = "dace"
# What the fixture turns off, back to PostgreSQL's defaults; room for three instances' pools.
DURABLE = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "max_connections": "600",
}


class PostgresServer:
    """A server on which this run creates databases; each is dropped when the run ends."""

    def __init__(self, url: str):
        self.url = url
        self.created: list[str] = []

    def _admin(self):
        import psycopg  # the optional driver: only PostgreSQL runs need it

        return psycopg.connect(self.url, autocommit=True)

    def new_database(self, name: str) -> str:
        """The URL of a new, empty database for the site called `name`."""
        database = f"envoy_proxy_bench_{os.getpid()}_{name}"
        with self._admin() as admin:
            admin.execute(f"CREATE DATABASE {database}")
        self.created.append(database)
        return urllib.parse.urlunsplit(
            urllib.parse.urlsplit(self.url)._replace(path=f"/{database}")
        )

    def describe(self) -> str:
        """The server's version and the settings that decide what a commit costs."""
        with self._admin() as admin:
            shown = {
                name: admin.execute(f"SHOW {name}").fetchone()[0]
                for name in ("server_version", "fsync", "synchronous_commit", "max_connections")
            }
        return ", ".join(f"{name} {value}" for name, value in shown.items())

    def drop_all(self) -> None:
        if not self.created:
            return
        with self._admin() as admin:
            for database in self.created:
                admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


@contextlib.contextmanager
def postgres_server(durable: bool = True) -> Iterator[PostgresServer]:
    """ENVOY_PROXY_TEST_PG_URL's server, or a throwaway cluster (removed afterwards): durable,
    or as the test fixture runs it (commits not flushed)."""
    given = os.environ.get("ENVOY_PROXY_TEST_PG_URL")
    directory = None
    if not given:
        settings = DURABLE if durable else {"max_connections": DURABLE["max_connections"]}
        with mock.patch.dict(pg_cluster.SETTINGS, settings):
            directory, given = pg_cluster.start()
    server = PostgresServer(given)
    try:
        yield server
    finally:
        try:
            server.drop_all()
        finally:
            if directory is not None:
                pg_cluster.stop(directory)


def table(results: dict[str, list[tuple[str, bool, str]]]) -> str:
    """Markdown: one row per target, each engine's figure and verdict (in the runs' order)."""
    engines = list(results)
    cells: dict[str, dict[str, str]] = {}
    for engine, rows in results.items():
        for target, ok, measured in rows:
            cells.setdefault(target, {})[engine] = f"{'PASS' if ok else 'FAIL'}: {measured}"
    lines = ["| target | " + " | ".join(engines) + " |", "|---" * (len(engines) + 1) + "|"]
    for target, by_engine in cells.items():
        figures = " | ".join(by_engine.get(engine, "-") for engine in engines)
        lines.append(f"| {target} | {figures} |")
    return "\n".join(lines)


def add_durability_arg(parser) -> None:
    parser.add_argument("--no-durable", dest="durable", action="store_false",
                        help="the throwaway cluster as the tests run it: fsync and synchronous "
                        "commit off (what flushing costs, by difference)")  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.engines",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_site_args(parser, PARTS)
    add_durability_arg(parser)
    args = parser.parse_args(argv)
    if not args.parts or set(args.parts) - set(PARTS):
        parser.error(f"--parts: some of {PARTS!r} (b, the flood, is bench.site's: SQLite only)")
    print_header(f"engines: parts {args.parts} on SQLite, then PostgreSQL; Proxy "
                 f"{args.latency_ms} ms a call")  # fmt: skip
    results = {}
    with workdir("engines") as work, postgres_server(args.durable) as server:
        print(f"   PostgreSQL: {server.describe()}", flush=True)
        for engine, database in (
            ("SQLite", lambda site: None),
            ("PostgreSQL", server.new_database),
        ):
            print(f"== {engine}", flush=True)
            (work / engine).mkdir()
            verdicts = Verdicts()
            run_parts(work / engine, args, verdicts, database)
            results[engine] = verdicts.results
    print(table(results))
    return 0 if all(ok for rows in results.values() for _, ok, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
