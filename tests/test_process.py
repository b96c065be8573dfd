"""The real daemon process: starts, answers, and stops cleanly on SIGTERM and SIGINT."""

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

import db
from daemon.secretbox import SecretBox
from sandbox.envoy import EnvoySimulator, entry_event
from tests.fixtures.daemon import SITE_CONFIG


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, process, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"daemon exited early: {process.stderr.read()}")
        try:
            return requests.get(url + "/healthz", timeout=1).json()
        except requests.ConnectionError:
            time.sleep(0.05)
    raise AssertionError("daemon did not become healthy")


@pytest.fixture
def start_daemon(tmp_path):
    processes = []

    def start(**env_extra):
        port = _free_port()
        env = {
            **os.environ,
            "ENVOY_CLIENT_SECRET": "process-secret-xyz",
            "ENVOY_PROXY_ADMIN_PASSWORD": "admin-pw-xyz",
            "ENVOY_PROXY_LISTEN": f"127.0.0.1:{port}",
            "ENVOY_PROXY_DB": str(tmp_path / "state" / "daemon.sqlite3"),
            "ENVOY_PROXY_KEY_FILE": str(tmp_path / "state" / "secret.key"),
            "PROXY_API_URL": "http://127.0.0.1:9",
            "ENVOY_PROXY_LOG_LEVEL": "DEBUG",
            **env_extra,
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "daemon", "serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        return process, f"http://127.0.0.1:{port}"

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_daemon_serves_then_exits_0_on_signal(start_daemon, tmp_path, signum):
    process, url = start_daemon()
    assert _wait_healthy(url, process)["status"] == "ok"
    process.send_signal(signum)
    assert process.wait(timeout=10) == 0
    log = process.stderr.read()
    assert "stopped" in log
    assert "process-secret-xyz" not in log and "admin-pw-xyz" not in log
    assert (tmp_path / "state" / "daemon.sqlite3").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state" / "secret.key").stat().st_mode & 0o777 == 0o600


def _prepare_install(tmp_path, proxy_url: str) -> None:
    """What the setup steps leave behind, written before the daemon starts."""
    state = tmp_path / "state"
    db.open_database(str(state / "daemon.sqlite3"))
    try:
        db.migrate()
        box = SecretBox.from_key_file(str(state / "secret.key"))
        db.Install.create(
            install_id="install-1",
            config={**SITE_CONFIG},
            proxy_secret=box.encrypt("app-secret"),
            created_at=0,
            updated_at=0,
        )
    finally:
        db.close_database()


def test_in_flight_request_finishes_during_shutdown(start_daemon, tmp_path, proxy_sandbox):
    _prepare_install(tmp_path, proxy_sandbox.url)
    process, url = start_daemon(PROXY_API_URL=proxy_sandbox.url, ENVOY_PROXY_INLINE_BUDGET="10")
    _wait_healthy(url, process)
    proxy_sandbox.add_fault(latency_ms=1500, path_prefix="/manage/persons")
    body = entry_event(
        entry_id="e-1",
        full_name="Ada",
        email="ada@example.com",
        flow_id="flow-visitor",
        signed_in_at=time.time(),
        config=SITE_CONFIG,
    )
    simulator = EnvoySimulator(client_secret="process-secret-xyz")
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(simulator.post, url, "/envoy/events", body)
        time.sleep(0.5)  # the request is now waiting on the slowed Proxy call
        process.send_signal(signal.SIGTERM)
        answer = pending.result(timeout=15)
    assert answer.status_code == 200, answer.text
    assert process.wait(timeout=10) == 0
    assert proxy_sandbox.persons("ada@example.com")[0]["status"] == "active"
