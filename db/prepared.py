"""Statements that peewee builds once and the daemon runs many times with new values.

Peewee renders a query's SQL anew on every execution by walking its expression tree: reading
a grant by id costs ~0.4 ms of CPU, of which SQLite's work is 0.01 ms. The statements that run
for every event and every credential are written as peewee queries with `Slot`s where the
values go; `Prepared` renders one the first time it runs and then only binds the values
(BENCHMARKS.md §1, "prepared statements").

    GRANT_BY_ID = Prepared(lambda: Grant.select().where(Grant.id == Slot("id")))
    grant = GRANT_BY_ID.first(id=7)

A slot compared with a field converts its value as that field does (`Grant.group_ids ==
Slot(...)` dumps JSON); a slot in an insert or update names its field: `Slot("payload",
Action.payload)`, or `columns(Action.payload, …)` slots each column under its field's name.
A prepared insert fills in no defaults, so it names every column it writes; `NewRows` is the
insert of whole rows, with defaults filled in by the model.
"""

import json
import threading
from collections.abc import Callable, Iterable

from peewee import (
    AutoField,
    CharField,
    ForeignKeyField,
    Insert,
    IntegerField,
    Node,
    Query,
    TextField,
    __exception_wrapper__,
)

from db.connection import database


class _Bound:
    """Where a slot's value goes among a rendered statement's parameters."""

    __slots__ = ("convert", "name")

    def __init__(self, name: str, convert: Callable | None):
        self.name, self.convert = name, convert


class Slot(Node):
    """A value supplied each time a prepared statement runs."""

    def __init__(self, name: str, field=None):
        self.name = name
        self.field = field

    def __sql__(self, ctx):
        convert = self.field.db_value if self.field is not None else ctx.state.converter
        return ctx.value(_Bound(self.name, convert), converter=False)


def columns(*fields) -> dict:
    """`{field: Slot(field.name, field)}`: the columns an insert writes or an update sets,
    each from the value named after its field."""
    return {field: Slot(field.name, field) for field in fields}


class SlotList(Slot):
    """A list of values supplied at each run, for `field.in_(SlotList("ids"))`: bound as one
    JSON parameter and read back by SQLite's `json_each`, so that the statement is the same
    whatever the list's length. Its items are stored as they are (ids, strings)."""

    def __sql__(self, ctx):
        ctx.literal("(SELECT value FROM json_each(")
        ctx.value(_Bound(self.name, json.dumps), converter=False)
        return ctx.literal("))")


class Prepared:
    """A query rendered to SQL at its first run; later runs only bind `Slot` values."""

    def __init__(self, build: Callable[[], Query]):
        self._build = build
        self._lock = threading.Lock()
        self._rendered: tuple | None = None

    def _render(self) -> tuple:
        if self._rendered is None:
            with self._lock:
                if self._rendered is None:
                    query = self._build()
                    sql, params = query.sql()
                    if isinstance(query, Insert) and not all(isinstance(p, _Bound) for p in params):
                        # A default (say `created_at=now_epoch`) would be frozen at first use.
                        raise TypeError(f"a prepared insert must slot every column: {sql}")
                    self._rendered = (query.model, sql, params)
        return self._rendered

    def _params(self, params: list, values: dict) -> list:
        bound = []
        for param in params:
            if isinstance(param, _Bound):
                value = values[param.name]
                bound.append(param.convert(value) if param.convert else value)
            else:
                bound.append(param)
        return bound

    def run(self, **values) -> int:
        """Execute; the number of rows changed (for an insert, the new row's id)."""
        _, sql, params = self._render()
        cursor = database.execute_sql(sql, self._params(params, values))
        return cursor.lastrowid if sql.startswith("INSERT") else cursor.rowcount

    def run_many(self, rows: Iterable[dict]) -> None:
        """Execute once per row of values, in one call into SQLite (inserts of several rows)."""
        _, sql, params = self._render()
        bound = [self._params(params, values) for values in rows]
        if bound:
            with __exception_wrapper__:  # sqlite3's errors as peewee's, as execute_sql raises them
                database.cursor().executemany(sql, bound)

    def rows(self, **values) -> list[tuple]:
        """The selected rows as tuples, in the order of the query's columns."""
        _, sql, params = self._render()
        return database.execute_sql(sql, self._params(params, values)).fetchall()

    def all(self, **values) -> list:
        """The selected rows as model instances (only the selected fields are set)."""
        model, sql, params = self._render()
        cursor = database.execute_sql(sql, self._params(params, values))
        fields = [_field(model, column[0]) for column in cursor.description]
        found = []
        for row in cursor:
            instance = model(__no_default__=1)
            instance.__data__ = {
                name: convert(value) if convert and value is not None else value
                for (name, convert), value in zip(fields, row, strict=True)
            }
            found.append(instance)
        return found

    def scalar(self, **values):
        """The first column of the first selected row, or None."""
        found = self.rows(**values)
        return found[0][0] if found else None

    def first(self, **values):
        """The first selected row as a model instance, or None."""
        found = self.all(**values)
        return found[0] if found else None


class NewRows:
    """Prepared inserts of whole rows of one model: every field but the id, with the model's
    defaults (`created_at=now_epoch`, …) filled in per row."""

    def __init__(self, model):
        self._model = model
        self._fields = [f for f in model._meta.sorted_fields if not isinstance(f, AutoField)]
        self._insert = Prepared(lambda: model.insert(columns(*self._fields)))

    def _values(self, instance) -> dict:
        return {field.name: instance.__data__.get(field.name) for field in self._fields}

    def add(self, **values):
        """Insert one row; the new instance, with its id."""
        instance = self._model(**values)
        instance.id = self._insert.run(**self._values(instance))
        instance._dirty.clear()
        return instance

    def add_many(self, rows: Iterable[dict]) -> None:
        """Insert several rows in one call into SQLite."""
        self._insert.run_many(self._values(self._model(**values)) for values in rows)


def _field(model, column: str) -> tuple[str, Callable | None]:
    field = model._meta.columns[column]
    stored_as_used = type(field) in _STORED_AS_USED or isinstance(field, ForeignKeyField)
    return field.name, None if stored_as_used else field.python_value


# SQLite hands these back as the ints and strings Python uses: no conversion per value.
_STORED_AS_USED = (AutoField, IntegerField, CharField, TextField)
