"""Steering SQLite's query planner where its statistics cannot be trusted.

The daemon's tables start empty and grow for months between two restarts (when statistics are
refreshed), so the planner cannot be left to guess which index finds a person's grants or a
batch's actions: with a wrong guess it walks every grant of the install, or every pending
action, for each lookup. The lookups say which index drives them by hiding the others.
"""

from peewee import SQL, ColumnBase, NodeList


def unindexed(column: ColumnBase) -> NodeList:
    """The column as an expression no index serves: SQLite's documented unary `+`, a no-op on
    the value, so that a condition on it filters the rows another index found."""
    return NodeList((SQL("+"), column), glue="")
