"""`envoy-proxy forget --email`: one person's data erased at once, here and in Proxy."""

import time

import db
from daemon.__main__ import main
from daemon.access import watchlist
from tests.fixtures.postgres import file_backed

FLOW = "flow-visitor"


def _forget(daemon, capsys, *extra):
    cfg = daemon.ctx.config
    code = main(["forget", *extra, "--db", cfg.db, "--key-file", cfg.key_file,
                 "--proxy-api-url", cfg.proxy_api_url])  # fmt: skip
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _sign_in(daemon, entry_id, email, full_name):
    body = daemon.entry(
        entry_id=entry_id, email=email, full_name=full_name, flow_id=FLOW,
        signed_in_at=time.time() - 60, phone="+15550100",
    )  # fmt: skip
    assert daemon.deliver(body).status_code == 200


def _sign_out(daemon, entry_id, email, full_name):
    now = time.time()
    body = daemon.entry("entry_sign_out", entry_id=entry_id, email=email, full_name=full_name,
                        flow_id=FLOW, signed_in_at=now - 60, signed_out_at=now)  # fmt: skip
    assert daemon.deliver(body).status_code == 200


def _grant(daemon, email):
    return next(g for g in daemon.grants() if g.subject.startswith(f"entries:{email[:3]}"))


def _raw(daemon) -> bytes:
    path = daemon.ctx.config.db
    with open(path, "rb") as main_file, open(f"{path}-wal", "rb") as wal:
        return (main_file.read() + wal.read()).lower()


def test_someone_on_site_is_refused_without_end_access_and_nothing_is_erased(daemon, capsys):
    daemon.install()
    _sign_in(daemon, "ada-1", "ada@example.com", "Ada Lovelace")
    code, out, err = _forget(daemon, capsys, "--email", "ada@example.com")
    assert code == 1 and out == ""
    assert "door access now" in err and "--end-access" in err and "nothing was erased" in err
    assert _grant(daemon, "ada@example.com").email == "ada@example.com"
    assert daemon.persons("ada@example.com")


def test_end_access_ends_it_in_proxy_then_erases_everywhere_and_spares_others(daemon, capsys):
    daemon.install()
    _sign_in(daemon, "ada-1", "ada@example.com", "Ada Lovelace")
    _sign_in(daemon, "bob-1", "bob@example.com", "Bob Builder")
    with db.database.connection_context(), db.database.atomic():
        # Texts of other rows that quote her: scrubbed, the rows themselves kept.
        db.Grant.update(last_error="asked about ADA@example.com by Ada Lovelace").where(
            db.Grant.email == "bob@example.com"
        ).execute()
        db.Event.update(answer={"message": "no Proxy person has the email ada@example.com"}).where(
            db.Event.job_id == db.Event.select(db.Event.job_id).limit(1)
        ).execute()
    code, out, err = _forget(daemon, capsys, "--email", "Ada@Example.com", "--end-access")
    assert code == 0, err
    assert "forgot Ada@Example.com" in out and "1 deleted" in out
    ada, bob = _grant(daemon, "ada@example.com"), _grant(daemon, "bob@example.com")
    assert ada.state == "ended" and (ada.email, ada.full_name, ada.phone) == (None, None, None)
    assert daemon.persons("ada@example.com") == []
    assert bob.email == "bob@example.com" and bob.full_name == "Bob Builder"
    assert bob.last_error == "asked about [erased] by [erased]"
    assert daemon.persons("bob@example.com")
    if file_backed(daemon.ctx.config.db):  # PostgreSQL: README, "Privacy and retention"
        raw = _raw(daemon)
        assert b"ada@example.com" not in raw and b"ada lovelace" not in raw
        assert b"bob@example.com" in raw


def test_a_person_who_left_is_forgotten_but_the_watchlist_is_the_admins(daemon, capsys):
    daemon.install()
    _sign_in(daemon, "ada-1", "ada@example.com", "Ada Lovelace")
    _sign_out(daemon, "ada-1", "ada@example.com", "Ada Lovelace")
    with db.database.connection_context():
        entry, _ = watchlist.add(email="ada@example.com", reason="tailgating")
    code, out, err = _forget(daemon, capsys, "--email", "ada@example.com")
    assert code == 0, err
    assert f"kept: watchlist entry {entry.id}" in out
    assert daemon.persons("ada@example.com") == []
    with db.database.connection_context():
        assert watchlist.match("ada@example.com", None) is not None


def test_a_person_who_existed_before_us_stays_in_proxy(daemon, capsys):
    daemon.install()
    _sign_in(daemon, "sam-1", "sam@example.com", "Sam Visiting")
    _sign_out(daemon, "sam-1", "sam@example.com", "Sam Visiting")
    code, out, err = _forget(daemon, capsys, "--email", "sam@example.com")
    assert code == 0, err
    assert "Proxy persons: none" in out
    calls = daemon.proxy.state()["calls"]
    assert not [c for c in calls if c["path"].startswith("/manage/persons/p_")
                and c["method"] != "GET"]  # fmt: skip
    [sam] = daemon.persons("sam@example.com")
    assert sam["name"] == "Sam Staff"
    assert _grant(daemon, "sam@example.com").email is None


def test_proxy_down_erases_nothing_and_says_to_run_again(daemon, capsys):
    daemon.install()
    _sign_in(daemon, "ada-1", "ada@example.com", "Ada Lovelace")
    _sign_out(daemon, "ada-1", "ada@example.com", "Ada Lovelace")
    daemon.proxy.add_fault(status=503)
    code, _, err = _forget(daemon, capsys, "--email", "ada@example.com")
    assert code == 1 and "run forget again" in err
    assert _grant(daemon, "ada@example.com").email == "ada@example.com"


def test_a_delivery_waiting_to_be_planned_is_kept_and_reported(daemon, capsys):
    daemon.install()
    with db.database.connection_context(), db.database.atomic():
        db.Event.create(job_id="job-q", event="entry_sign_out", install_id="install-1",
                        status=202, answer={}, body='{"email": "ada@example.com"}',
                        next_attempt_at=db.now_epoch() + 60)  # fmt: skip
    code, out, _ = _forget(daemon, capsys, "--email", "ada@example.com")
    assert code == 75
    assert "1 delivery(ies) naming ada@example.com still waiting" in out


def test_the_request_is_in_the_audit_trail_without_the_person(daemon, capsys):
    daemon.install()
    _sign_in(daemon, "ada-1", "ada@example.com", "Ada Lovelace")
    _sign_out(daemon, "ada-1", "ada@example.com", "Ada Lovelace")
    code, out, _ = _forget(daemon, capsys, "--email", "ada@example.com")
    assert code == 0, out
    with db.database.connection_context():
        entries = list(db.AuditEntry.select().order_by(db.AuditEntry.id))
    [request] = [e for e in entries if (e.reason or "").startswith("forget:")]
    assert request.actor.startswith("cli:") and request.email is None
    assert request.details["rows"]["grant"] >= 1
    assert not any("ada" in str((e.email, e.full_name, e.reason, e.details)).lower()
                   for e in entries), "the trail keeps no trace of her"  # fmt: skip
