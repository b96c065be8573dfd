"""Copying a site's whole state from its SQLite file into an empty PostgreSQL database.

The upgrade from one daemon to several (README, "Availability"): every table, every row,
every column as stored (secrets stay encrypted with the same key; the due work keeps its due
times, so no ending is lost), in one transaction on the target: all of it or nothing. The
registry of instances is not copied (it describes running processes, and none may be running).
"""

import logging
import urllib.parse

from peewee import SQL, Column, SqliteDatabase, Table, chunked, sort_models

from db import models
from db.connection import database, open_database
from db.engines import restart_ids, schema_version
from db.migrations import migrate

log = logging.getLogger("envoy_proxy.db")

BATCH = 1000
_NOT_COPIED = {models.Instance._meta.table_name}


class TargetNotEmpty(RuntimeError):
    """The target already holds a site's rows: copying would mix two sites."""


def _tables_in_order() -> list[str]:
    """Every model's table, a referenced table before the tables referring to it."""
    every = [m for m in vars(models).values() if isinstance(m, type)]
    tables = [m for m in every if issubclass(m, models.BaseModel) and m is not models.BaseModel]
    return [m._meta.table_name for m in sort_models(tables)]


def copy_sqlite_to(source_path: str, target: str) -> dict[str, int]:
    """Copy the (migrated) SQLite database at `source_path` into the empty database at
    `target`; the rows copied per table. Leaves `target` open."""
    open_database(source_path, create=False)
    migrate()  # the same schema on both sides (what this version's daemon would do at start)
    open_database(target)
    with database.connection_context():
        empty = schema_version() == 0 or not any(
            Table(table).bind(database).select(SQL("1")).exists()
            for table in _tables_in_order()
            if table not in _NOT_COPIED
        )
        if not empty:
            raise TargetNotEmpty("the target database already holds rows of envoy-proxy")
        migrate()
    source = SqliteDatabase(f"file:{urllib.parse.quote(source_path)}?mode=ro", uri=True)
    copied = {}
    try:
        with database.connection_context(), database.atomic():
            for table in _tables_in_order():
                if table not in _NOT_COPIED:
                    copied[table] = _copy_table(source, table)
                    restart_ids(table)
    finally:
        source.close()
    return copied


def _copy_table(source: SqliteDatabase, table: str) -> int:
    names = [column.name for column in source.get_columns(table)]
    origin, target = Table(table).bind(source), Table(table).bind(database)
    rows = (
        origin.select(*[Column(origin, name) for name in names])
        .order_by(SQL("rowid"))
        .tuples()
        .iterator()
    )
    count = 0
    for batch in chunked(rows, BATCH):
        target.insert(batch, columns=[Column(target, name) for name in names]).execute()
        count += len(batch)
    log.info("copied %d rows of %s", count, table)
    return count
