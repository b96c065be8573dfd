"""SQLite finds a person's grants and a batch's actions by their keys, even with statistics
taken while the database was empty (as a new install's are until the daemon restarts).

Every statement a visitor's lifecycle runs is recorded and explained: none may walk the
grants of the whole install, and none given ids may walk the pending actions.
"""

import time

import db

FLOW = "flow-visitor"


def _visit(daemon, event: str, entry_id: str, **times):
    body = daemon.entry(
        event,
        entry_id=entry_id,
        email="ada@example.com",
        full_name="Ada Lovelace",
        flow_id=FLOW,
        signed_in_at=time.time() - 600,
        **times,
    )
    assert daemon.send(body).status_code in (200, 202)


def _recorded_statements(daemon, monkeypatch) -> dict[str, list]:
    statements = {}
    execute = db.database.execute_sql

    def recording(sql, params=None, *args, **kwargs):
        statements.setdefault(sql, list(params or ()))
        return execute(sql, params, *args, **kwargs)

    monkeypatch.setattr(db.database, "execute_sql", recording)
    # Two visits of one person (the second finds the first's person and grant), then their
    # sign-outs: the first keeps access for the second, the second takes it away.
    _visit(daemon, "entry_sign_in", "e-1")
    _visit(daemon, "entry_sign_in", "e-2")
    _visit(daemon, "entry_sign_out", "e-1", signed_out_at=time.time())
    _visit(daemon, "entry_sign_out", "e-2", signed_out_at=time.time())
    daemon.run_due()
    monkeypatch.undo()
    return statements


def _plan(sql: str, params: list) -> str:
    with db.database.connection_context():
        rows = db.database.execute_sql(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
    return " | ".join(row[-1] for row in rows)


def test_person_and_batch_lookups_use_their_indexes(daemon, monkeypatch):
    daemon.install()
    with db.database.connection_context():
        db.refresh_statistics()  # as at start: the tables are still empty
    statements = _recorded_statements(daemon, monkeypatch)
    plans = {
        sql: _plan(sql, params)
        for sql, params in statements.items()
        if sql.startswith(("SELECT", "UPDATE", "DELETE"))
    }
    by_person = [plan for sql, plan in plans.items() if '"email" = ?' in sql and "grant" in sql]
    assert len(by_person) >= 2  # the read of the person's grants, and the revoke's
    assert all("grant_email (email=?)" in plan for plan in by_person), by_person
    on_grants = {sql: plan for sql, plan in plans.items() if '"grant"' in sql}
    walks = {sql: plan for sql, plan in on_grants.items() if "(install_id=?)" in plan}
    assert walks == {}
    given_ids = {sql: plan for sql, plan in plans.items() if "json_each" in sql and "action" in sql}
    assert given_ids
    assert all("action_pending" not in plan for plan in given_ids.values()), given_ids
    [person] = daemon.persons("ada@example.com")
    assert person["tags"] == []  # the lifecycle ran to its end: the last revoke untagged
