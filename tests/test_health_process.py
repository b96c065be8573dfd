"""The real daemon whose start-up catch-up raises: it serves, says 503 and why, and does not
exit (it used to exit 1 into a systemd restart loop); once the cause is gone it is healthy."""

import contextlib
import signal
import socket
import sqlite3
import tempfile
import time
from pathlib import Path

import pytest
import requests

import db
from sandbox.envoy import EnvoySimulator, entry_event
from tests.fixtures.daemon import SITE_CONFIG
from tests.fixtures.daemon_process import CLIENT_SECRET, prepare_install

pytestmark = pytest.mark.sqlite_only  # it poisons and repairs the database file by hand


def _poison(path) -> int:
    """A due action that the database refuses to claim (as a damaged index page would):
    every run fails, while webhooks, which only insert, are still stored."""
    now = int(time.time())
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TRIGGER damaged BEFORE UPDATE OF claimed_until ON action"
            " BEGIN SELECT RAISE(ABORT, 'database disk image is malformed'); END"
        )
        return connection.execute(
            "INSERT INTO action (install_id, kind, payload, due_at, next_attempt_at, attempts,"
            " done, created_at) VALUES ('install-1', 'job_update', '{}', ?, ?, 0, 0, ?)",
            (now - 60, now - 60, now),
        ).lastrowid


def _healthz_until(daemon, status: int, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        assert daemon.process.poll() is None, f"the daemon exited: {daemon.log()}"
        answer = requests.get(daemon.url + "/healthz", timeout=5)
        if answer.status_code == status or time.monotonic() > deadline:
            assert answer.status_code == status, answer.text
            return answer.json()
        time.sleep(0.1)


class _Systemd:
    """The notify socket systemd would give the daemon; collects what it is told."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="sd-")) / "notify"  # short: sun_path limit
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.1)

    def messages(self, seconds: float) -> list[str]:
        """Everything received within `seconds`."""
        received, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                received.append(self.sock.recv(4096).decode())
        return received

    def close(self) -> None:
        self.sock.close()
        self.path.unlink()
        self.path.parent.rmdir()


def _pings(messages: list[str]) -> int:
    return sum("WATCHDOG=1" in m.split("\n") for m in messages)


def test_a_daemon_whose_catch_up_fails_serves_unhealthy_and_recovers(
    start_daemon, tmp_path, proxy_sandbox
):
    state = tmp_path / "state"
    prepare_install(state)
    path = state / "daemon.sqlite3"
    poison = _poison(path)
    systemd = _Systemd()
    try:
        _serves_unhealthy_and_recovers(start_daemon, proxy_sandbox, path, poison, systemd)
    finally:
        systemd.close()


def _serves_unhealthy_and_recovers(start_daemon, proxy_sandbox, path, poison, systemd):
    daemon = start_daemon(
        PROXY_API_URL=proxy_sandbox.url,
        ENVOY_PROXY_SWEEP_SECONDS="1",
        NOTIFY_SOCKET=str(systemd.path),
        WATCHDOG_USEC="1000000",  # a ping every 0.5 s while healthy
    )
    daemon.wait_healthy()
    body = _healthz_until(daemon, 503)
    # The watchdog says the same as /healthz: no ping while the runs fail.
    systemd.messages(0.6)  # whatever was sent before the first failed run was seen
    assert _pings(systemd.messages(2.0)) == 0, "the watchdog must not ping while unhealthy"
    assert body["status"] == "unhealthy"
    assert "the last run of due work failed" in body["reasons"][0]
    assert "running due work failed" in daemon.log()
    # Webhooks are still taken: the delivery is stored.
    event = entry_event(
        entry_id="e-1",
        full_name="Ada",
        email="ada@example.com",
        flow_id="flow-visitor",
        signed_in_at=time.time(),
        config=SITE_CONFIG,
    )
    answer = EnvoySimulator(client_secret=CLIENT_SECRET).post(daemon.url, "/envoy/events", event)
    assert answer.status_code < 300, answer.text
    db.open_database(str(path))
    try:
        with db.database.connection_context():
            assert db.Event.select().where(db.Event.event == "entry_sign_in").count() == 1
    finally:
        db.close_database()
    # Sweeps later (one a second): still failing, still serving.
    deadline = time.monotonic() + 15
    while daemon.log().count("running due work failed") < 3:
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.1)
    assert _healthz_until(daemon, 503)["reasons"][0].startswith("the last run of due work failed")
    # The admin removes the cause; the next sweep succeeds and the daemon says so.
    with sqlite3.connect(path) as connection:
        connection.execute("DROP TRIGGER damaged")
        connection.execute("UPDATE action SET done = 1 WHERE id = ?", (poison,))
    assert _healthz_until(daemon, 200)["status"] == "ok"
    assert _pings(systemd.messages(2.0)) >= 2, "healthy again: the pings resume"
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=15) == 0
