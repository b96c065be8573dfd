"""The statements every event and every action runs, rendered by peewee once per engine.

peewee renders a query's SQL anew each time it runs, walking every column: 150-240 µs for a
select of a whole grant or install, against 6 µs for SQLite to run it, and about half of an
accepted sign-in's CPU (BENCHMARKS.md, "Issue 15: the flood target met"). Here peewee
still writes the SQL, once per statement shape and database engine, and later calls bind
their own values to it: the SQL is peewee's own portable output, and the values go through
each field's `db_value` as peewee would send them.

Only shapes whose parameters are exactly the given values in order are kept (equalities
and plain rows); the first rendering checks it, so a shape that does not fit fails at once.
"""

from peewee import Model

from db.connection import database

_rendered: dict[tuple, str] = {}


def first(model: type[Model], **equal) -> Model | None:
    """The first row of `model` whose fields equal these values (none may be None), or None."""
    fields = [model._meta.fields[name] for name in equal]
    values = [field.db_value(value) for field, value in zip(fields, equal.values(), strict=True)]
    key = ("select", model, tuple(equal), type(database.obj))
    sql = _rendered.get(key)
    if sql is None:
        query = model.select().where(
            *(field == value for field, value in zip(fields, equal.values(), strict=True))
        )
        sql = _keep(key, query, values)
    for row in model.raw(sql, *values):
        return row
    return None


def insert(model: type[Model], **row):
    """Insert one row (defaults filled in as peewee would) and return its primary key."""
    returning = bool(database.returning_clause and model._meta.auto_increment)
    cursor = _insert(model, [row], returning)
    return cursor.fetchone()[0] if returning else cursor.lastrowid


def insert_rows(model: type[Model], rows: list[dict]) -> None:
    """Insert several rows that name the same fields, in one statement."""
    _insert(model, rows, returning=False)


def _insert(model: type[Model], rows: list[dict], returning: bool):
    filled = [_with_defaults(model, row) for row in rows]
    names = tuple(filled[0])
    if any(tuple(row) != names for row in filled):
        raise ValueError("rows inserted together must name the same fields, in one order")
    fields = [model._meta.fields[name] for name in names]
    values = [field.db_value(row[field.name]) for row in filled for field in fields]
    key = ("insert", model, names, len(rows), returning, type(database.obj))
    sql = _rendered.get(key)
    if sql is None:
        query = model.insert_many(filled, fields=fields)
        sql = _keep(key, query.returning(model._meta.primary_key) if returning else query, values)
    return database.execute_sql(sql, values)


def _with_defaults(model: type[Model], row: dict) -> dict:
    missing = {
        field.name: default() if callable(default) else default
        for field, default in model._meta.defaults.items()
        if field.name not in row
    }
    return {**row, **missing}


def _keep(key: tuple, query, values: list) -> str:
    sql, params = query.sql()
    if params != values:
        raise TypeError(f"{key[:3]} binds other parameters than its values: not cached")
    _rendered[key] = sql
    return sql
