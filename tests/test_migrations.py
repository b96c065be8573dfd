"""Each schema step applies on its own, leaves the version behind, and matches the models."""

import pytest

import db
from db.migrations import STEPS


@pytest.fixture
def empty_db(tmp_path):
    db.open_database(str(tmp_path / "m.sqlite3"))
    yield db.database
    db.close_database()


@pytest.mark.parametrize("version", [step[0] for step in STEPS])
def test_each_step_upgrades_from_the_previous_version(empty_db, version):
    db.migrate(version - 1)
    assert db.schema_version() == version - 1
    assert db.migrate(version) == version
    assert db.schema_version() == version


def test_migrating_twice_is_harmless(empty_db):
    assert db.migrate() == db.SCHEMA_VERSION
    assert db.migrate() == db.SCHEMA_VERSION


def test_a_newer_database_is_refused(empty_db):
    db.migrate()
    empty_db.execute_sql(f"PRAGMA user_version = {db.SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer than this program"):
        db.migrate()


def test_the_migrated_schema_has_every_column_of_the_models(empty_db):
    db.migrate()
    for model in (db.Install, db.Event, db.Grant, db.Action, db.WatchlistEntry, db.Verification):
        table = model._meta.table_name
        columns = {c.name for c in empty_db.get_columns(table)}
        fields = {f.column_name for f in model._meta.sorted_fields}
        assert fields == columns, table


def test_database_file_is_private_and_pragmas_are_set(tmp_path):
    path = tmp_path / "p.sqlite3"
    db.open_database(str(path))
    try:
        db.migrate()
        assert path.stat().st_mode & 0o777 == 0o600
        assert db.database.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.database.execute_sql("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert db.database.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        db.close_database()
