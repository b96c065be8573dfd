"""Retention: a time-travelled pass erases what is older than ENVOY_PROXY_RETENTION_DAYS and
no longer needed for access, in the database (the raw file and WAL included) and in Proxy."""

import time

import pytest
import time_machine

import db
from daemon.access import proxy_persons, retention
from tests.fixtures.postgres import file_backed

FLOW = "flow-visitor"
DAY = 86400


def _visit(daemon, entry_id, email, full_name, **kwargs):
    """A walk-in that signs in and out at the current (travelled) time."""
    common = dict(entry_id=entry_id, email=email, full_name=full_name, flow_id=FLOW, **kwargs)
    now = time.time()
    assert daemon.deliver(daemon.entry(signed_in_at=now - 600, **common)).status_code == 200
    out = daemon.entry("entry_sign_out", signed_in_at=now - 600, signed_out_at=now, **common)
    assert daemon.deliver(out).status_code == 200


def _run_passes(daemon):
    """Pass after pass until retention has nothing left to do now."""
    for _ in range(50):
        if retention.run_pass(daemon.ctx) is None:
            return
    raise AssertionError("retention never finished")


def _raw_bytes(path: str) -> bytes:
    data = b""
    for name in (path, f"{path}-wal"):
        try:
            with open(name, "rb") as handle:
                data += handle.read()
        except FileNotFoundError:
            pass
    return data.lower()


def _row(grant_id):
    with db.database.connection_context():
        return db.Grant.get_by_id(grant_id).__data__


def test_a_pass_erases_old_visits_here_and_in_proxy_and_leaves_live_ones_alone(daemon):
    daemon.install(created_by_envoy=True)
    t0 = int(time.time())
    _visit(daemon, "e-ada", "ada@example.com", "Ada Lovelace", phone="+15550100")
    # Sam existed in Proxy before us (an employee visiting): never removed.
    _visit(daemon, "e-sam", "sam@example.com", "Sam Visiting")
    _visit(daemon, "e-gus", "gus@example.com", "Gus Twice")
    invite = daemon.invite(
        invite_id="i-dave",
        email="dave@example.com",
        full_name="Dave Later",
        flow_id=FLOW,
        expected_arrival=t0 + 40 * DAY,
    )
    assert daemon.deliver(invite).status_code == 200
    with time_machine.travel(t0 + 29 * DAY, tick=False):
        _visit(daemon, "e-carol", "carol@example.com", "Carol Recent")
        _visit(daemon, "e-gus-2", "gus@example.com", "Gus Twice")
    with time_machine.travel(t0 + 31 * DAY, tick=False):
        now = time.time()
        signed_in = daemon.entry(
            entry_id="e-fay", email="fay@example.com", full_name="Fay Here", flow_id=FLOW,
            signed_in_at=now,
        )  # fmt: skip
        assert daemon.deliver(signed_in).status_code == 200
        kept = {g.email: g.__data__ for g in daemon.grants() if g.email in (
            "carol@example.com", "dave@example.com", "fay@example.com")}  # fmt: skip
        _run_passes(daemon)

        by_subject = {g.subject: g for g in daemon.grants()}
        for subject in ("entries:e-ada", "entries:e-sam", "entries:e-gus"):
            old = by_subject[subject]
            assert (old.email, old.full_name, old.phone, old.photo_url) == (None,) * 4
            assert old.state == "ended" and old.ends_at and old.proxy_person_id  # stats survive
        for email, before in kept.items():  # live, pending, or ended within the retention
            assert _row(before["id"]) == before, email

        assert daemon.persons("ada@example.com") == []  # ours, every grant past retention
        [sam] = daemon.persons("sam@example.com")
        assert sam["name"] == "Sam Staff"
        assert daemon.persons("gus@example.com"), "a visit within the retention still needs it"
        assert daemon.persons("carol@example.com") and daemon.persons("fay@example.com")

        if file_backed(daemon.ctx.config.db):  # PostgreSQL: README, "Privacy and retention"
            raw = _raw_bytes(daemon.ctx.config.db)
            for text in (b"ada@example.com", b"ada lovelace", b"+15550100", b"sam@example.com",
                         b"sam visiting"):  # fmt: skip
                assert text not in raw, text
            assert b"carol@example.com" in raw  # the check can see what is there

    with time_machine.travel(t0 + 61 * DAY, tick=False):
        daemon.run_due()  # Dave's visit came and went: endings go before retention
        _run_passes(daemon)
        assert daemon.persons("gus@example.com") == []
        if file_backed(daemon.ctx.config.db):
            assert b"gus@example.com" not in _raw_bytes(daemon.ctx.config.db)


def test_a_tenant_that_cannot_delete_gets_the_person_anonymised_and_this_is_learnt(daemon):
    daemon.install()
    t0 = int(time.time())
    _visit(daemon, "e-1", "ada@example.com", "Ada Lovelace", phone="+15550100")
    _visit(daemon, "e-2", "bob@example.com", "Bob Builder")
    [ada] = daemon.persons("ada@example.com")
    daemon.proxy.add_fault(status=404, path_prefix=f"/manage/persons/{ada['id']}", count=1)
    with time_machine.travel(t0 + 31 * DAY, tick=False):
        _run_passes(daemon)
    state = {p["id"]: p for p in daemon.proxy.state()["persons"]}
    erased = state[ada["id"]]
    assert erased["name"] == "Erased visitor"
    assert "ada" not in erased["email"] and "photo" not in erased
    assert erased["details"] == {"envoyId": "entries:e-1"}  # still recognisably ours
    assert not daemon.persons("bob@example.com")
    deletes = [c for c in daemon.proxy.state()["calls"] if c["method"] == "DELETE"
               and c["path"].startswith("/manage/persons/")]  # fmt: skip
    assert len(deletes) == 1, "the missing endpoint is learnt: Bob's person is not DELETEd"


def test_a_person_without_our_marker_is_never_removed_even_if_the_grant_thinks_it_ours(daemon):
    daemon.install()
    t0 = int(time.time())
    _visit(daemon, "e-1", "erin@example.com", "Erin Visiting")
    with db.database.connection_context(), db.database.atomic():
        db.Grant.update(person_ours=None).execute()  # recorded before ownership was known
    with time_machine.travel(t0 + 31 * DAY, tick=False):
        _run_passes(daemon)
    [erin] = daemon.persons("erin@example.com")
    assert erin["name"] == "Erin Employee"
    changes = [c for c in daemon.proxy.state()["calls"] if c["method"] in ("DELETE", "PATCH")]
    assert [c for c in changes if c["path"].startswith("/manage/persons/")] == []
    [grant] = daemon.grants()
    assert grant.email is None


def test_proxy_down_keeps_the_data_for_the_next_pass_and_never_loses_the_person(daemon):
    daemon.install()
    t0 = int(time.time())
    _visit(daemon, "e-1", "ada@example.com", "Ada Lovelace")
    with time_machine.travel(t0 + 31 * DAY, tick=False):
        daemon.proxy.add_fault(status=503)
        assert retention.run_pass(daemon.ctx) is None  # not again soon: the hourly sweep
        [grant] = daemon.grants()
        assert grant.email == "ada@example.com"  # still the way to find the person
        daemon.proxy.clear_faults()
        _run_passes(daemon)
    assert daemon.persons("ada@example.com") == []
    assert daemon.grants()[0].email is None


def test_a_visit_that_starts_while_its_person_is_removed_gets_a_person_again(daemon, monkeypatch):
    daemon.install()
    t0 = int(time.time())
    _visit(daemon, "e-1", "ada@example.com", "Ada Lovelace")
    remove = proxy_persons.remove_ours

    def signing_in_meanwhile(client, grant):
        # Ada is back between the check that no visit needs her person and its removal.
        body = daemon.entry(entry_id="e-2", email="ada@example.com", full_name="Ada Lovelace",
                            flow_id=FLOW, signed_in_at=time.time())  # fmt: skip
        assert daemon.deliver(body).status_code == 200
        return remove(client, grant)

    monkeypatch.setattr(proxy_persons, "remove_ours", signing_in_meanwhile)
    with time_machine.travel(t0 + 31 * DAY, tick=False):
        _run_passes(daemon)
        daemon.run_due()
        [person] = daemon.persons("ada@example.com")
        assert person["status"] == "active" and person["tags"] == ["visitor-lobby"]
        [live] = [g for g in daemon.grants() if g.state == "active"]
        assert live.proxy_person_id == person["id"] and live.email == "ada@example.com"


def test_no_proxy_call_while_endings_are_due(daemon):
    daemon.install()
    t0 = int(time.time())
    _visit(daemon, "e-1", "ada@example.com", "Ada Lovelace")
    with time_machine.travel(t0 + 31 * DAY, tick=False):
        due = int(time.time()) - 1
        with db.database.connection_context(), db.database.atomic():
            db.Action.create(install_id="install-1", kind="revoke", payload={}, due_at=due,
                             next_attempt_at=due)  # fmt: skip
        calls = len(daemon.proxy.state()["calls"])
        assert retention.run_pass(daemon.ctx) is not None
        assert len(daemon.proxy.state()["calls"]) == calls
        assert daemon.grants()[0].email == "ada@example.com"


def test_zero_days_keeps_everything(daemon):
    daemon.install()
    t0 = int(time.time())
    _visit(daemon, "e-1", "ada@example.com", "Ada Lovelace")
    daemon.ctx.config = daemon.ctx.config.replace(retention_days=0)
    with time_machine.travel(t0 + 3650 * DAY, tick=False):
        assert retention.run_pass(daemon.ctx) is None
    assert daemon.grants()[0].email == "ada@example.com"
    assert daemon.persons("ada@example.com")


@pytest.mark.sqlite_only
def test_every_connection_zeroes_deleted_text(database):
    assert database.execute_sql("PRAGMA secure_delete").fetchone()[0] == 1
