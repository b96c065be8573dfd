"""`envoy-proxy migrate-db`: a site's SQLite state moved into PostgreSQL, every row and every
due time, or nothing (issue 18's upgrade path)."""

import pytest

import db
from daemon import config, startup
from daemon.__main__ import main
from daemon.access import outbox
from daemon.secretbox import SecretBox

NOW = 1_800_000_000


def _site(path: str, key_file: str) -> None:
    """A site's state with a row in every table: an install with its sealed secret, a grant
    on site with its ending due, a failed job update, the inbox, audit, watchlist, …"""
    db.open_database(path)
    try:
        db.migrate()
        box = SecretBox.from_key_file(key_file)
        secret = box.encrypt("app-secret")
        db.Install.create(install_id="install-1", config={"proxy_site_id": "s-1"},
                          proxy_secret=secret, timezone="Europe/Paris")  # fmt: skip
        grant = db.Grant.create(install_id="install-1", kind="visitor", subject="entries:1",
                                email="ada@example.com", full_name="Ada\\", starts_at=NOW - 60,
                                ends_at=NOW + 3600, state="active", twins_possible=True,
                                group_ids=["g-1"])  # fmt: skip
        with db.database.atomic():
            outbox.enqueue("revoke", "install-1", NOW + 3600, grant=grant, lock_key="org:ada")
            outbox.enqueue("job_update", "install-1", NOW, payload={"job_id": "job-1"})
        db.Action.update(attempts=3, last_error="Envoy 503").where(
            db.Action.kind == "job_update"
        ).execute()
        db.Event.create(job_id="job-1", event="entry_sign_in", install_id="install-1",
                        status=202, answer={"grant": grant.id})  # fmt: skip
        db.ProxyAccount.create(install_id="install-1", org_id="o-0", app_key="k",
                               secret=box.encrypt("old-secret"))  # fmt: skip
        entry = db.WatchlistEntry.create(email="eve@example.com", reason="banned")
        db.Verification.create(install_id="install-1", decision="review",
                               watchlist_entry=entry, duration_ms=12)  # fmt: skip
        db.AuditEntry.create(at=NOW, install_id="install-1", grant_id=grant.id, kind="issued",
                             actor="daemon", details={"groups": ["g-1"]})  # fmt: skip
        db.PlacedStatus.create(lock_key="org:ada", person_id="p-1", status="suspended",
                               at=NOW + 3600)  # fmt: skip
    finally:
        db.close_database()


def _rows(location: str) -> dict:
    """Every copied table's rows, as the models read them, in key order."""
    db.open_database(location, create=False)
    try:
        return {
            model.__name__: [
                row for row in model.select().order_by(model._meta.primary_key).dicts()
            ]
            for model in (db.Install, db.Grant, db.Action, db.Event, db.ProxyAccount,
                          db.WatchlistEntry, db.Verification, db.AuditEntry, db.PlacedStatus)
        }  # fmt: skip
    finally:
        db.close_database()


@pytest.fixture
def sqlite_site(tmp_path):
    path = str(tmp_path / "site.sqlite3")
    _site(path, str(tmp_path / "secret.key"))
    return path


def test_every_row_and_due_time_is_moved_and_new_rows_get_new_ids(
    sqlite_site, postgres_server, tmp_path, capsys
):
    target = postgres_server.new_database(migrated=False)
    assert main(["migrate-db", "--from", sqlite_site, "--to", target]) == 0
    assert "copied" in capsys.readouterr().out
    before, after = _rows(sqlite_site), _rows(target)
    assert after == before and all(after.values())
    db.open_database(target)
    try:
        assert outbox.next_due(NOW) == NOW  # the failed job update, then the ending at its time
        assert db.Action.get(db.Action.kind == "revoke").due_at == NOW + 3600
        later = db.Grant.create(install_id="install-1", kind="visitor", subject="entries:2",
                                starts_at=NOW)  # fmt: skip
        assert later.id > max(g["id"] for g in before["Grant"])
    finally:
        db.close_database()
    # The instances start on the copy with the site's key: its secrets read back.
    environ = {"ENVOY_PROXY_DB": target, "ENVOY_PROXY_KEY_FILE": str(tmp_path / "secret.key")}
    cfg = config.load(None, environ, require=False)
    box = startup.open_state(cfg)
    try:
        with db.database.connection_context():
            assert box.decrypt(db.install_by_id("install-1").proxy_secret) == "app-secret"
    finally:
        db.close_database()


def test_a_target_holding_rows_is_refused_and_left_as_it_was(sqlite_site, postgres_server, capsys):
    target = postgres_server.new_database(migrated=False)
    assert main(["migrate-db", "--from", sqlite_site, "--to", target]) == 0
    before = _rows(target)
    assert main(["migrate-db", "--from", sqlite_site, "--to", target]) == 2
    assert "already holds envoy-proxy rows" in capsys.readouterr().err
    assert _rows(target) == before


def test_an_empty_migrated_target_is_filled(sqlite_site, postgres_server):
    target = postgres_server.new_database(migrated=True)  # what `envoy-proxy init` leaves
    assert main(["migrate-db", "--from", sqlite_site, "--to", target]) == 0
    assert _rows(target) == _rows(sqlite_site)


def test_a_file_a_daemon_still_serves_is_refused(sqlite_site, postgres_server, capsys):
    target = postgres_server.new_database(migrated=False)
    lock = startup.InstanceLock.acquire(sqlite_site)
    try:
        assert main(["migrate-db", "--from", sqlite_site, "--to", target]) == 2
    finally:
        lock.release()
    assert "already serving" in capsys.readouterr().err
    db.open_database(target)
    try:
        with db.database.connection_context():
            assert db.schema_version() == 0
    finally:
        db.close_database()


def test_a_missing_file_or_a_sqlite_target_is_refused(tmp_path, capsys):
    missing = str(tmp_path / "gone.sqlite3")
    assert main(["migrate-db", "--from", missing, "--to", "postgresql://u@/x"]) == 2
    assert "no database at" in capsys.readouterr().err
    assert main(["migrate-db", "--from", missing, "--to", str(tmp_path / "b.sqlite3")]) == 2
    assert "into PostgreSQL" in capsys.readouterr().err
