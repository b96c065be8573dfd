"""The real daemon process: starts, answers, and stops cleanly on SIGTERM and SIGINT."""

import signal
import time

import pytest

from sandbox.envoy import EnvoySimulator, entry_event
from tests.fixtures.daemon import SITE_CONFIG
from tests.fixtures.daemon_process import (
    ADMIN_PASSWORD,
    CLIENT_SECRET,
    prepare_install,
    state_database,
)
from tests.fixtures.postgres import file_backed


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_daemon_serves_then_exits_0_on_signal(start_daemon, tmp_path, signum):
    daemon = start_daemon()
    assert daemon.wait_healthy()["status"] == "ok"
    daemon.process.send_signal(signum)
    assert daemon.process.wait(timeout=10) == 0
    log = daemon.log()
    assert "stopped" in log
    assert CLIENT_SECRET not in log and ADMIN_PASSWORD not in log
    if file_backed(state_database(tmp_path / "state")):
        assert (tmp_path / "state" / "daemon.sqlite3").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state" / "secret.key").stat().st_mode & 0o777 == 0o600


def test_in_flight_work_finishes_during_shutdown(start_daemon, tmp_path, proxy_sandbox):
    """SIGTERM while the runner waits on Proxy: the credential is finished, then exit 0."""
    prepare_install(tmp_path / "state")
    daemon = start_daemon(PROXY_API_URL=proxy_sandbox.url)
    daemon.wait_healthy()
    proxy_sandbox.add_fault(latency_ms=1500, path_prefix="/manage/persons")
    body = entry_event(
        entry_id="e-1",
        full_name="Ada",
        email="ada@example.com",
        flow_id="flow-visitor",
        signed_in_at=time.time(),
        config=SITE_CONFIG,
    )
    simulator = EnvoySimulator(client_secret=CLIENT_SECRET)
    answer = simulator.post(daemon.url, "/envoy/events", body)
    assert answer.status_code == 202, answer.text
    time.sleep(0.5)  # the runner is now waiting on the slowed Proxy call
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=15) == 0
    assert proxy_sandbox.persons("ada@example.com")[0]["status"] == "active"
