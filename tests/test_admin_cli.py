"""The admin commands, called in-process on a database in tmp_path (and, for revoke, with the
Proxy sandbox answering): status, grants, revoke, retry, backup, watchlist."""

import json
import os
import sqlite3
import stat
import time

import pytest
import time_machine

import db
from daemon.__main__ import main
from daemon.access import watchlist

FLOW = "flow-visitor"


@pytest.fixture
def store(tmp_path):
    """The daemon's database as the CLI finds it: a migrated file."""
    path = str(tmp_path / "admin.sqlite3")
    db.open_database(path)
    with db.database.connection_context():
        db.migrate()
    yield path
    db.close_database()


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _grant(state, name, email=None, subject=None, starts=0, ends=None, **extra):
    now = db.now_epoch()
    with db.database.connection_context(), db.database.atomic():
        return db.Grant.create(
            install_id="install-1",
            kind="visitor",
            subject=subject or f"entries:{name}",
            full_name=name,
            email=email,
            starts_at=starts or now,
            ends_at=ends,
            state=state,
            created_at=now,
            updated_at=now,
            **extra,
        )


def _action(grant=None, kind="issue", attempts=0, done=False, outcome=None, due=None):
    due = due if due is not None else db.now_epoch() + 3600
    with db.database.connection_context(), db.database.atomic():
        return db.Action.create(
            grant=grant,
            install_id="install-1",
            kind=kind,
            payload={},
            due_at=due,
            next_attempt_at=due,
            attempts=attempts,
            done=done,
            outcome=outcome,
            last_error="Proxy answered 500" if attempts else None,
        )


def _seed():
    now = db.now_epoch()
    with db.database.connection_context(), db.database.atomic():
        db.Install.create(
            install_id="install-1",
            company_name="Acme",
            location_name="Lobby",
            timezone="Europe/Paris",
            config={"proxy_site_name": "HQ", "visitor_mapping": {FLOW: ["g"]}},
            proxy_secret="gAAAA-ciphertext",
            created_at=now,
            updated_at=now,
        )
    grants = {
        "active": _grant("active", "Ada Lovelace", "ada@example.com", ends=now + 3600),
        "pending": _grant("pending", "Grace Hopper", "grace@example.com", starts=now + 7200),
        "ended": _grant("ended", "Alan Turing", "alan@example.com", ends=now - 60),
        "failing": _grant("pending", "Bob Builder", "bob@example.com", starts=now - 600),
    }
    _action(grants["active"], "revoke", due=now + 3600)
    _action(grants["pending"], "issue", due=now + 7200)
    failing = _action(grants["failing"], "issue", attempts=6, due=now - 600)
    dead = _action(None, "job_update", attempts=20, done=True, outcome="dead", due=now - 900)
    return grants, failing, dead


# ---------------------------------------------------------------------------- status


def test_status_prints_the_facts_of_the_page(store, capsys):
    _seed()
    code, out, err = run(capsys, "status", "--db", store)
    assert code == 0, err
    assert "Active grants (1)" in out and "Ada Lovelace" in out
    assert "Upcoming activations (2)" in out and "Grace Hopper" in out
    assert "Failing actions (1)" in out and "Proxy answered 500" in out
    assert "Dead actions (1)" in out
    assert "not visible from the CLI" in out  # no scheduler in this process
    assert "CET" in out or "CEST" in out  # the install's zone, for people
    assert "gAAAA-ciphertext" not in out

    code, out, err = run(capsys, "status", "--json", "--db", store)
    assert code == 0, err
    facts = json.loads(out)
    assert facts["counts"]["grants_active"] == 1
    assert facts["counts"]["actions_dead"] == 1
    assert facts["scheduler"]["alive"] is None
    assert facts["installs"][0]["site_name"] == "HQ"
    assert "gAAAA-ciphertext" not in out


def test_commands_refuse_a_database_that_does_not_exist(tmp_path, capsys):
    missing = tmp_path / "nope.sqlite3"
    code, _, err = run(capsys, "status", "--db", str(missing))
    assert code == 2
    assert "no database at" in err and str(missing) in err
    assert not missing.exists()


def test_terminal_control_characters_in_names_are_not_printed(store, capsys):
    _grant("active", "Evil \x1b[2J\x1b]0;pwned\x07 \u202eName")
    code, out, _ = run(capsys, "grants", "--db", store)
    assert code == 0
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "Evil ?[2J?]0;pwned? ?Name" in out


# ---------------------------------------------------------------------------- grants


def _ids(out: str) -> list[int]:
    return [int(line.split()[0]) for line in out.splitlines()[1:] if line[:1].isdigit()]


def test_grants_lists_and_filters(store, capsys):
    grants, _, _ = _seed()
    code, out, _ = run(capsys, "grants", "--db", store)
    assert code == 0
    assert _ids(out) == sorted((g.id for g in grants.values()), reverse=True)
    assert "ID" in out.splitlines()[0] and "STATE" in out.splitlines()[0]

    _, out, _ = run(capsys, "grants", "--active", "--db", store)
    assert _ids(out) == [grants["active"].id]
    _, out, _ = run(capsys, "grants", "--pending", "--db", store)
    assert _ids(out) == [grants["failing"].id, grants["pending"].id]  # soonest start first
    _, out, _ = run(capsys, "grants", "--failed", "--db", store)
    assert _ids(out) == [grants["failing"].id]
    _, out, _ = run(capsys, "grants", "--limit", "1", "--db", store)
    assert len(_ids(out)) == 1 and "--limit" in out


def test_grants_filters_are_exclusive_and_the_limit_positive(store, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["grants", "--active", "--pending", "--db", store])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit):
        main(["grants", "--limit", "0", "--db", store])
    assert "at least 1" in capsys.readouterr().err


# ---------------------------------------------------------------------------- revoke


def _cli_settings(daemon):
    cfg = daemon.ctx.config
    return [
        "--db",
        cfg.db,
        "--key-file",
        cfg.key_file,
        "--proxy-api-url",
        cfg.proxy_api_url,
    ]


def _sign_in(daemon, entry_id="e-1", email="ada@example.com"):
    answer = daemon.deliver(
        daemon.entry(
            entry_id=entry_id,
            email=email,
            full_name="Ada Lovelace",
            flow_id=FLOW,
            signed_in_at=time.time(),
        )
    )
    assert answer.status_code == 200, answer.text
    [grant] = daemon.grants()
    assert grant.state == "active"
    return grant


def _last_status(person) -> str:
    return sorted(person["scheduledStatuses"], key=lambda s: s["scheduledDate"])[-1]["status"]


def test_revoke_of_an_unknown_grant_fails_with_a_message(store, capsys):
    code, out, err = run(capsys, "revoke", "999", "--db", store)
    assert code == 1
    assert "no grant 999" in err and out == ""


def test_revoke_suspends_the_person_in_proxy_now(daemon, capsys):
    daemon.install()
    grant = _sign_in(daemon)
    code, out, err = run(capsys, "revoke", str(grant.id), *_cli_settings(daemon))
    assert code == 0, err
    assert "access ended" in out
    [person] = daemon.persons("ada@example.com")
    assert _last_status(person) == "suspended"
    assert person["tags"] == []
    assert daemon.grants()[0].state == "ended"
    # Again: nothing left to do, and it says so.
    code, out, _ = run(capsys, "revoke", str(grant.id), *_cli_settings(daemon))
    assert code == 0 and "already ended" in out


def test_revoke_while_proxy_is_down_is_recorded_and_finished_by_the_daemon(daemon, capsys):
    daemon.install()
    grant = _sign_in(daemon)
    daemon.proxy.add_fault(status=503)
    code, _, err = run(capsys, "revoke", str(grant.id), *_cli_settings(daemon))
    assert code == 75
    assert "sweep will finish it" in err
    assert daemon.grants()[0].state == "active"
    [revoke] = [a for a in daemon.actions() if a.kind == "revoke" and not a.done]
    assert revoke.attempts == 1
    daemon.proxy.clear_faults()
    with time_machine.travel(revoke.next_attempt_at + 1, tick=False):
        daemon.run_due()
    assert daemon.grants()[0].state == "ended"
    assert _last_status(daemon.persons("ada@example.com")[0]) == "suspended"


def test_revoke_of_a_grant_not_yet_issued_cancels_it_without_proxy(store, capsys):
    grants, _, _ = _seed()
    code, out, err = run(capsys, "revoke", str(grants["pending"].id), "--db", store)
    assert code == 0, err
    assert "cancelled" in out
    with db.database.connection_context():
        assert db.Grant.get_by_id(grants["pending"].id).state == "cancelled"


# ---------------------------------------------------------------------------- retry


def test_retry_one_action_or_all_failed(store, capsys):
    _, failing, dead = _seed()
    before = db.now_epoch()
    code, out, err = run(capsys, "retry", str(dead.id), "--db", store)
    assert code == 0, err
    assert "1 action will run again" in out
    with db.database.connection_context():
        again = db.Action.get_by_id(dead.id)
    assert not again.done and again.outcome is None and again.next_attempt_at >= before

    code, out, _ = run(capsys, "retry", "--all-failed", "--db", store)
    assert code == 0
    assert "2 actions" in out  # the failing one, and the former dead one (still failing)
    with db.database.connection_context():
        assert db.Action.get_by_id(failing.id).next_attempt_at <= db.now_epoch()


def test_retry_refuses_unknown_and_finished_actions(store, capsys):
    grants, _, _ = _seed()
    code, _, err = run(capsys, "retry", "4242", "--db", store)
    assert code == 1 and "no action 4242" in err
    finished = _action(grants["ended"], "revoke", done=True, outcome="done")
    code, _, err = run(capsys, "retry", str(finished.id), "--db", store)
    assert code == 1 and "already finished" in err
    with pytest.raises(SystemExit):
        main(["retry", "--db", store])  # an id or --all-failed is required


# ---------------------------------------------------------------------------- backup


def test_backup_is_a_private_restorable_copy_and_never_overwrites_by_accident(
    store, tmp_path, capsys
):
    _seed()
    target = tmp_path / "backups" / "copy.sqlite3"
    target.parent.mkdir()
    code, out, err = run(capsys, "backup", str(target), "--db", store)
    assert code == 0, err
    assert str(target) in out
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    copy = sqlite3.connect(target)
    try:
        assert copy.execute('SELECT COUNT(*) FROM "grant"').fetchone()[0] == 4
        assert copy.execute("SELECT COUNT(*) FROM action").fetchone()[0] == 4
        assert copy.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION
    finally:
        copy.close()
    assert [p.name for p in target.parent.iterdir()] == ["copy.sqlite3"]  # no leftovers

    code, _, err = run(capsys, "backup", str(target), "--db", store)
    assert code == 1 and "--force" in err
    _grant("active", "Late Arrival")
    code, _, err = run(capsys, "backup", str(target), "--force", "--db", store)
    assert code == 0, err
    with sqlite3.connect(target) as copy:
        assert copy.execute('SELECT COUNT(*) FROM "grant"').fetchone()[0] == 5


def test_backup_works_while_another_connection_is_writing(store, tmp_path, capsys):
    _seed()
    writer = sqlite3.connect(store, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM action")  # not committed while the backup runs
        code, _, err = run(capsys, "backup", str(tmp_path / "live.sqlite3"), "--db", store)
        assert code == 0, err
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    with sqlite3.connect(tmp_path / "live.sqlite3") as copy:
        assert copy.execute("SELECT COUNT(*) FROM action").fetchone()[0] == 4


def test_backup_refuses_to_write_over_the_database_itself(store, capsys):
    code, _, err = run(capsys, "backup", store, "--force", "--db", store)
    assert code == 1 and "database itself" in err


# ---------------------------------------------------------------------------- watchlist


def test_name_and_email_normalisation():
    assert watchlist.normalise_email("  Ada@Example.COM ") == "ada@example.com"
    assert watchlist.normalise_email("   ") is None
    assert watchlist.name_key("  ADA \t  lovelace\n") == "ada lovelace"
    assert watchlist.name_key("José") == watchlist.name_key("Jose\u0301")  # composed or not
    assert watchlist.name_key("Straße") == watchlist.name_key("STRASSE")
    assert watchlist.name_key("") is None and watchlist.name_key(None) is None


def test_watchlist_add_list_match_remove(store, capsys):
    base = ["--db", store]
    code, out, err = run(
        capsys, "watchlist", "add", "--email", " Mallory@Example.COM ", "--reason", "banned", *base
    )
    assert code == 0, err
    code, out, err = run(
        capsys, "watchlist", "add", "--name", "  ADA   Lovelace ", "--reason", "review", *base
    )
    assert code == 0, err
    code, out, _ = run(
        capsys, "watchlist", "add", "--name", "ada lovelace", "--reason", "again", *base
    )
    assert code == 0 and "already on the watchlist" in out

    code, out, _ = run(capsys, "watchlist", "list", *base)
    assert code == 0
    assert "mallory@example.com" in out and "ADA   Lovelace" in out and "banned" in out
    code, out, _ = run(capsys, "watchlist", "list", "--json", *base)
    entries = json.loads(out)
    assert [e["email"] for e in entries] == ["mallory@example.com", None]
    assert entries[1]["name_key"] == "ada lovelace"

    with db.database.connection_context():
        assert watchlist.match("MALLORY@example.com", "Someone Else").reason == "banned"
        assert watchlist.match("ada@example.com", "Ada  LOVELACE").reason == "review"
        assert watchlist.match("ada@example.com", "Ada Byron") is None
        assert watchlist.match(None, None) is None

    code, out, _ = run(capsys, "watchlist", "remove", "--name", "ada LOVELACE", *base)
    assert code == 0 and "removed 1" in out
    code, out, _ = run(capsys, "watchlist", "remove", "--email", "mallory@EXAMPLE.com", *base)
    assert code == 0 and "removed 1" in out
    code, _, err = run(capsys, "watchlist", "remove", "--id", "1", *base)
    assert code == 1 and "no matching" in err
    code, out, _ = run(capsys, "watchlist", "list", *base)
    assert "empty" in out


def test_watchlist_rejects_bad_input(store, capsys):
    base = ["--db", store]
    code, _, err = run(
        capsys, "watchlist", "add", "--email", "not-an-address", "--reason", "x", *base
    )
    assert code == 1 and "not an email address" in err
    code, _, err = run(capsys, "watchlist", "add", "--name", "Eve", "--reason", "  ", *base)
    assert code == 1 and "reason" in err
    with pytest.raises(SystemExit):
        main(["watchlist", "add", "--email", "a@b.c", "--name", "Eve", "--reason", "x", *base])
    with pytest.raises(SystemExit):
        main(["watchlist", "add", "--email", "a@b.c", *base])  # --reason is required
    with db.database.connection_context():
        assert watchlist.entries() == []
