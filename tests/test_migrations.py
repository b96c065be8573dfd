"""Each schema step applies on its own, leaves the version behind, and matches the models."""

import itertools

import pytest
from peewee import Table

import db
from db.engines import record_schema_version
from db.migrations import STEPS
from tests.fixtures.postgres import fresh_location


@pytest.fixture
def empty_db(tmp_path):
    db.open_database(fresh_location(tmp_path, "m.sqlite3"))
    yield db.database
    db.close_database()


@pytest.mark.parametrize(
    ("previous", "version"), list(itertools.pairwise([0] + [step[0] for step in STEPS]))
)
def test_each_step_upgrades_from_the_previous_version(empty_db, previous, version):
    db.migrate(previous)
    assert db.schema_version() == previous
    assert db.migrate(version) == version
    assert db.schema_version() == version


def test_migrating_twice_is_harmless(empty_db):
    assert db.migrate() == db.SCHEMA_VERSION
    assert db.migrate() == db.SCHEMA_VERSION


def test_a_newer_database_is_refused(empty_db):
    db.migrate()
    with empty_db.atomic():
        record_schema_version(db.SCHEMA_VERSION + 1)
    with pytest.raises(RuntimeError, match="newer than this program"):
        db.migrate()


def test_the_migrated_schema_has_every_column_of_the_models(empty_db):
    db.migrate()
    models = (db.Install, db.Event, db.Grant, db.Action, db.WatchlistEntry,
              db.Verification, db.PlacedStatus, db.ProxyAccount, db.AuditEntry)  # fmt: skip
    for model in models:
        table = model._meta.table_name
        columns = {c.name for c in empty_db.get_columns(table)}
        fields = {f.column_name for f in model._meta.sorted_fields}
        assert fields == columns, table


@pytest.mark.sqlite_only
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


def test_jobs_kept_in_action_payloads_end_up_waiting_in_their_inbox_rows(empty_db):
    """Versions 5 and 10: an older database's Envoy jobs, kept as lists in the payload, become
    job waits, then the inbox row of each job names the grant it waits on."""
    db.migrate(4)
    empty_db.execute_sql(
        """INSERT INTO "grant" (id, install_id, kind, subject, group_ids, added_group_ids,
           starts_at, state, version, created_at, updated_at)
           VALUES (1, 'i-1', 'visitor', 'entries:1', '[]', '[]', 0, 'pending', 0, 0, 0)"""
    )
    empty_db.execute_sql(
        """INSERT INTO action (grant_id, install_id, kind, payload, due_at, next_attempt_at,
           attempts, done, created_at) VALUES (1, 'i-1', 'issue', '{"jobs": ["j-1", "j-2"]}',
           0, 0, 0, 0, 0)"""
    )
    event = Table("event").bind(empty_db)  # as it was at version 4, not as the model is now
    for job_id in ("j-1", "j-2", "j-3"):
        event.insert(job_id=job_id, event="entry_sign_in", install_id="i-1", received_at=0,
                     status=202, answer="{}").execute()  # fmt: skip
    db.migrate(5)
    waits = empty_db.execute_sql("SELECT job_id, grant_id FROM job_wait ORDER BY job_id")
    assert waits.fetchall() == [("j-1", 1), ("j-2", 1)]
    db.migrate(10)
    waits = empty_db.execute_sql("SELECT job_id, waits_on FROM event ORDER BY job_id")
    assert waits.fetchall() == [("j-1", 1), ("j-2", 1), ("j-3", None)]


def test_grants_learn_their_installs_proxy_org(empty_db):
    """Version 7: a person's grants are found across installs by org."""
    db.migrate(6)
    empty_db.execute_sql(
        """INSERT INTO install (install_id, config, created_at, updated_at)
           VALUES ('i-1', '{"proxy_org_id": "org-9"}', 0, 0)"""
    )
    empty_db.execute_sql(
        """INSERT INTO "grant" (install_id, kind, subject, group_ids, added_group_ids,
           starts_at, state, version, created_at, updated_at)
           VALUES ('i-1', 'visitor', 'entries:1', '[]', '[]', 0, 'active', 0, 0, 0)"""
    )
    db.migrate(7)
    assert empty_db.execute_sql('SELECT proxy_org_id FROM "grant"').fetchone() == ("org-9",)
