"""Honest health: /healthz, the watchdog and the status page say 503 / no ping / UNHEALTHY,
with the reasons, whenever due work is not getting done — and 200 again once it is."""

import logging
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
import requests
import time_machine

import db
from daemon.health import Health
from scheduler import Alarm

ADMIN = ("admin", "health-pw")


class ScriptedWork:
    """The alarm's work: raises while `error` is set, else answers nothing due."""

    def __init__(self):
        self.error: Exception | None = None

    def __call__(self):
        if self.error is not None:
            raise self.error
        return None


@pytest.fixture
def watched(daemon):
    """The served app's health watching an alarm whose runs the test scripts (not started:
    its runs are fired by hand, no thread, no sleeps)."""
    work = ScriptedWork()
    alarm = Alarm(work)
    daemon.ctx.health.watch(alarm.state)
    daemon.ctx.config = daemon.ctx.config.replace(admin_password=ADMIN[1])
    return daemon, alarm, work


def _healthz(daemon) -> requests.Response:
    return requests.get(daemon.url + "/healthz", timeout=5)


def _action(**fields) -> db.Action:
    now = db.now_epoch()
    values = {
        "install_id": "install-1",
        "kind": "issue",
        "payload": {},
        "due_at": now,
        "next_attempt_at": now,
        **fields,
    }
    with db.database.connection_context(), db.database.atomic():
        return db.Action.create(**values)


def test_a_failed_run_is_503_with_the_reason_and_a_good_run_is_200_again(watched):
    daemon, alarm, work = watched
    assert _healthz(daemon).status_code == 200
    work.error = UnicodeEncodeError("utf-8", "Acme \ud800", 5, 6, "surrogates not allowed")
    alarm._fire()
    answer = _healthz(daemon)
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "unhealthy"
    assert body["reasons"] == ["the last run of due work failed (1 in a row)"]
    assert body["schema"] == db.SCHEMA_VERSION and body["version"]
    assert "Acme" not in answer.text  # error texts are for the admin, not for /healthz
    work.error = None
    alarm._fire()
    answer = _healthz(daemon)
    assert answer.status_code == 200 and answer.json()["status"] == "ok"


def test_a_dead_or_stalled_scheduler_is_unhealthy(watched):
    daemon, alarm, _ = watched
    alarm.start(next_due=None)
    alarm._scheduler.shutdown(wait=False)  # the thread is gone, whatever `running` says
    assert "the scheduler thread is not running" in _healthz(daemon).json()["reasons"][0]
    stalled = Alarm(ScriptedWork(), sweep_seconds=30)
    stalled.start(next_due=None)
    try:
        daemon.ctx.health.watch(stalled.state)
        assert _healthz(daemon).status_code == 200
        stalled._started_at -= 91  # three sweeps and no run has ended
        [reason] = _healthz(daemon).json()["reasons"]
        assert reason.startswith("no run of due work has ended for 91 s")
    finally:
        stalled.shutdown()


@pytest.mark.sqlite_only
def test_a_locked_database_answers_503_within_about_a_second(daemon):
    holder = sqlite3.connect(daemon.ctx.config.db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        answer = _healthz(daemon)
        took = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert answer.status_code == 503
    assert answer.json()["reasons"] == ["the database cannot be written: database is locked"]
    assert took < 2.5  # the pool's busy timeout is 10 s
    assert _healthz(daemon).status_code == 200


@pytest.mark.sqlite_only
def test_a_database_file_deleted_under_the_daemon_is_503_and_not_recreated(daemon):
    path = daemon.ctx.config.db
    assert _healthz(daemon).status_code == 200
    os.unlink(path)  # the pool's open connections would go on writing to the lost inode
    answer = _healthz(daemon)
    assert answer.status_code == 503
    [reason] = answer.json()["reasons"]
    assert reason == "the database cannot be written: unable to open database file"
    assert not os.path.exists(path)


@contextmanager
def _read_only(path: str):
    """The file as a wrong owner or a read-only mount leaves it; root needs the immutable bit."""
    if os.geteuid() != 0:
        os.chmod(path, 0o444)
        yield
        os.chmod(path, 0o600)
        return
    subprocess.run(["chattr", "+i", path], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", path], check=True)


def test_a_read_only_database_is_unwritable(tmp_path):
    """Seen by a process that opens it read-only (an admin command, the daemon at start).
    Not a test of the daemon: it keeps the descriptors it opened writable."""
    path = tmp_path / "test.sqlite3"
    db.open_database(str(path))
    db.migrate()
    db.close_database()
    probe = f"from daemon.health import write_probe; print(write_probe({str(path)!r}))"
    run = [sys.executable, "-c", probe]
    assert subprocess.run(run, capture_output=True, text=True, check=True).stdout == "None\n"
    with _read_only(str(path)):
        answer = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    assert answer == "attempt to write a readonly database\n"


def test_due_work_left_undone_past_the_threshold_is_503(daemon):
    action = _action()
    with time_machine.travel(time.time() + 299, tick=False):
        assert _healthz(daemon).status_code == 200  # late, not yet overdue
    with time_machine.travel(time.time() + 301, tick=False):
        answer = _healthz(daemon)
        assert answer.status_code == 503
        [reason] = answer.json()["reasons"]
        assert reason.startswith("due work is overdue: the oldest was due 30")
        assert "threshold 300 s" in reason
        # Under a live claim, it is being run: not overdue.
        with db.database.connection_context():
            db.Action.update(claimed_until=db.now_epoch() + 60).where(
                db.Action.id == action.id
            ).execute()
        assert _healthz(daemon).status_code == 200


def test_an_ending_that_keeps_failing_is_503_whatever_its_backoff(daemon):
    now = db.now_epoch()
    # Retried every couple of minutes: never "left undone", but access has not ended.
    _action(
        kind="revoke",
        due_at=now - 400,
        next_attempt_at=now + 90,
        attempts=7,
        last_error="Proxy answered 503 (sim-secret echoed)",
    )
    answer = _healthz(daemon)
    assert answer.status_code == 503
    [reason] = answer.json()["reasons"]
    assert reason.startswith("an ending is overdue: access that should have ended 400 s ago")
    assert "sim-secret" not in answer.text and "Proxy answered" not in answer.text


def test_the_threshold_is_the_configured_one(database):
    now = db.now_epoch()
    _action(next_attempt_at=now - 100, due_at=now - 100)
    assert Health(overdue_seconds=300).check(now).healthy
    assert [r.code for r in Health(overdue_seconds=60).check(now).reasons] == ["work_overdue"]


def test_the_status_page_shows_why_in_red_at_the_top(watched):
    daemon, alarm, work = watched
    work.error = RuntimeError("planning failed with sim-secret in the text")
    alarm._fire()
    page = requests.get(daemon.url + "/status", auth=ADMIN, timeout=5)
    assert page.status_code == 200
    html = page.text
    banner = html.index('<section class="unhealthy"')
    assert banner < html.index("<h2>Health</h2>")  # at the top
    assert "UNHEALTHY" in html[banner:]
    assert "the last run of due work failed (1 in a row)" in html
    assert "RuntimeError: planning failed with *** in the text" in html
    assert "sim-secret" not in html
    facts = requests.get(daemon.url + "/status.json", auth=ADMIN, timeout=5).json()
    health = facts["health"]
    assert health["healthy"] is False
    [reason] = health["reasons"]
    assert reason["code"] == "run_failed"
    assert reason["detail"] == "RuntimeError: planning failed with *** in the text"
    assert health["runs"]["consecutive_failures"] == 1
    assert health["runs"]["last_failure_at"]["iso"].endswith("Z")
    work.error = None
    alarm._fire()
    html = requests.get(daemon.url + "/status", auth=ADMIN, timeout=5).text
    assert 'class="unhealthy"' not in html
    assert requests.get(daemon.url + "/status.json", auth=ADMIN, timeout=5).json()["health"][
        "healthy"
    ]


def test_the_cli_status_prints_the_reasons(database, capsys, monkeypatch, tmp_path):
    from daemon import config
    from daemon.ops import admin

    now = db.now_epoch()
    _action(next_attempt_at=now - 1000, due_at=now - 1000)
    cfg = config.load(
        environ={"ENVOY_CLIENT_SECRET": "cli-secret", "ENVOY_PROXY_DB": str(tmp_path / "x")},
        require=False,
    )
    admin._status(type("Args", (), {"json": False})(), cfg)
    out = capsys.readouterr().out
    assert "health:         UNHEALTHY" in out
    assert "due work is overdue: the oldest was due 1000 s ago" in out
    assert out.index("UNHEALTHY") < out.index("scheduler:")


@pytest.mark.sqlite_only
def test_the_check_reads_the_pending_index_only(database, caplog):
    """Every query of the check walks an index of pending actions (`action_pending` or, for
    the endings, `action_kind_next`), never the whole table: measured at 1,000,000 pending
    actions, a check takes 2-3 ms."""
    caplog.set_level(logging.DEBUG, logger="peewee")
    assert Health().check().healthy
    queries = [r.msg for r in caplog.records if r.name == "peewee" and 'FROM "action"' in r.msg[0]]
    assert len(queries) == 2
    for sql, params in queries:
        plan = str(db.database.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall())
        assert "USING INDEX action_pending" in plan or "USING INDEX action_kind_next" in plan, plan
