"""`envoy-proxy migrate-db --from SQLITE_PATH --to postgresql://…`: the upgrade path from one
daemon on SQLite to several on PostgreSQL (README, "Availability").

Stop the daemon, migrate, start the instances on the URL with the same key file. The daemon's
instance lock on the file is taken for the copy, so a daemon still serving it is a refusal;
so is a target that already holds rows. Every table is copied in one transaction and each
table's row count checked on both sides: nothing, or everything with its due times.
"""

import peewee
from peewee import Table

import db
from daemon import startup
from db.transfer import TargetNotEmpty, copy_sqlite_to


def _migrate(args) -> int:
    if db.is_postgres_url(args.source) or not db.is_postgres_url(args.target):
        raise startup.StartupRefused(
            "migrate-db copies a SQLite file (--from PATH) into PostgreSQL (--to postgresql://…)"
        )
    target = db.describe_location(args.target)
    startup.open_existing(args.source)  # never a missing or empty file
    db.close_database()
    lock = startup.InstanceLock.acquire(args.source)  # refused while a daemon serves it
    try:
        copied = copy_sqlite_to(args.source, args.target)
        counts = _counts(copied)
        db.open_database(args.source, create=False)
        if _counts(copied) != counts:
            raise startup.StartupRefused(f"the copy in {target} does not match {args.source}")
    except TargetNotEmpty:
        raise startup.StartupRefused(
            f"{target} already holds envoy-proxy rows: migrate-db only fills an empty database"
        ) from None
    except peewee.OperationalError as error:
        raise startup.StartupRefused(f"cannot copy into {target}: {str(error).strip()}") from None
    finally:
        db.close_database()
        lock.release()
    total = sum(copied.values())
    print(f"copied {total} rows of {len(copied)} tables from {args.source} into {target}:")
    for table, count in copied.items():
        print(f"  {table}: {count}")
    print("start the daemons on the new URL with the same key file; keep the old file as a backup")
    return 0


def _counts(tables: dict[str, int]) -> dict[str, int]:
    """Each table's rows in the open database."""
    with db.database.connection_context():
        return {table: Table(table).bind(db.database).select().count() for table in tables}


def register(commands) -> None:
    """Add `migrate-db` to the top-level `envoy-proxy` subparsers."""
    parser = commands.add_parser(
        "migrate-db",
        help="copy a stopped daemon's SQLite database into an empty PostgreSQL database",
        description="Copy every row of the SQLite database at --from (its daemon stopped) into "
        "the empty PostgreSQL database at --to, in one transaction, then check each table's "
        "count. Encrypted secrets are copied as they are: every instance needs the same key.",
    )
    parser.add_argument("--from", dest="source", required=True, metavar="SQLITE_PATH")
    parser.add_argument("--to", dest="target", required=True, metavar="POSTGRESQL_URL")
    parser.set_defaults(run=_migrate)
