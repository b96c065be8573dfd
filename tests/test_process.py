"""The real daemon process: starts, answers, and stops cleanly on SIGTERM and SIGINT."""

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from sandbox.envoy import EnvoySimulator, entry_event
from tests.fixtures.daemon import SITE_CONFIG
from tests.fixtures.daemon_process import ADMIN_PASSWORD, CLIENT_SECRET, prepare_install


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_daemon_serves_then_exits_0_on_signal(start_daemon, tmp_path, signum):
    daemon = start_daemon()
    assert daemon.wait_healthy()["status"] == "ok"
    daemon.process.send_signal(signum)
    assert daemon.process.wait(timeout=10) == 0
    log = daemon.log()
    assert "stopped" in log
    assert CLIENT_SECRET not in log and ADMIN_PASSWORD not in log
    assert (tmp_path / "state" / "daemon.sqlite3").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state" / "secret.key").stat().st_mode & 0o777 == 0o600


def test_in_flight_request_finishes_during_shutdown(start_daemon, tmp_path, proxy_sandbox):
    prepare_install(tmp_path / "state")
    daemon = start_daemon(PROXY_API_URL=proxy_sandbox.url, ENVOY_PROXY_INLINE_BUDGET="10")
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
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(simulator.post, daemon.url, "/envoy/events", body)
        time.sleep(0.5)  # the request is now waiting on the slowed Proxy call
        daemon.process.send_signal(signal.SIGTERM)
        answer = pending.result(timeout=15)
    assert answer.status_code == 200, answer.text
    assert daemon.process.wait(timeout=10) == 0
    assert proxy_sandbox.persons("ada@example.com")[0]["status"] == "active"
