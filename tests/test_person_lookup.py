"""Finding a person's grants reads that person's rows, not every grant of the org: it runs at
every issue and every ending (daemon/access/issuing.py, `_same_person`)."""

import pytest

import db
from daemon.access import issuing
from db import Grant, GrantState


@pytest.fixture
def sqlite_db(tmp_path):
    """SQLite whatever the run's engine: the regression is its query planner's."""
    db.open_database(str(tmp_path / "lookup.sqlite3"))
    db.migrate()
    yield db.database.obj
    db.close_database()


def _grants(count: int, start: int = 0) -> None:
    rows = [
        {
            "install_id": "i",
            "proxy_org_id": "org",
            "kind": "visitor",
            "subject": f"s-{n}",
            "email": f"p{n}@example.com",
            "proxy_person_id": f"p_{n}",
            "state": GrantState.ACTIVE,
            "starts_at": 0,
            "group_ids": [],
        }
        for n in range(start, start + count)
    ]
    for batch in range(0, len(rows), 500):
        Grant.insert_many(rows[batch : batch + 500]).execute()


def _steps(database, work) -> int:
    """SQLite virtual-machine steps (in hundreds) that `work()` costs: rows visited, not time."""
    steps = [0]

    def count():
        steps[0] += 1
        return 0

    connection = database.connection()
    connection.set_progress_handler(count, 100)
    try:
        work()
    finally:
        connection.set_progress_handler(None, 100)
    return steps[0]


def test_a_persons_grants_cost_the_same_however_many_others_the_org_has(sqlite_db):
    with db.database.atomic():
        _grants(20)
        mine = Grant.create(install_id="i", proxy_org_id="org", kind="visitor", subject="mine",
                            email="ada@example.com", proxy_person_id="p_ada", starts_at=0,
                            state=GrantState.ACTIVE)  # fmt: skip
        other_visit = Grant.create(install_id="j", proxy_org_id="org", kind="visitor",
                                   subject="again", email="ada@example.com", starts_at=0,
                                   state=GrantState.ACTIVE)  # fmt: skip
        by_person = Grant.create(install_id="j", proxy_org_id="org", kind="visitor",
                                 subject="renamed", email="ada.new@example.com",
                                 proxy_person_id="p_ada", starts_at=0,
                                 state=GrantState.ACTIVE)  # fmt: skip

    def lookup():
        fresh, others = issuing._person_grants(mine, now=1)
        assert fresh.id == mine.id
        assert sorted(g.id for g in others) == sorted([other_visit.id, by_person.id])

    few = _steps(sqlite_db, lookup)
    with db.database.atomic():
        _grants(5000, start=20)
    many = _steps(sqlite_db, lookup)
    # Searching the org's every grant visited each of the 5,000 (~40x the steps).
    assert many <= 2 * few + 5, (few, many)
