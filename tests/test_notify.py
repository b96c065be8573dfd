"""systemd notifications: READY/STOPPING/WATCHDOG reach $NOTIFY_SOCKET (a path or an abstract
socket), nothing happens without it, and the watchdog pings only while the daemon is healthy."""

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from daemon import notify


@pytest.fixture
def listener(tmp_path, monkeypatch):
    """A bound datagram socket standing in for systemd, named by $NOTIFY_SOCKET."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def _received(sock, timeout=2.0) -> str | None:
    sock.settimeout(timeout)
    try:
        return sock.recv(4096).decode()
    except TimeoutError:
        return None


def _drain(sock) -> list[str]:
    messages = []
    while (message := _received(sock, 0.01)) is not None:
        messages.append(message)
    return messages


def test_ready_stopping_and_watchdog_reach_the_socket(listener):
    assert notify.ready()
    assert _received(listener) == "READY=1"
    assert notify.ready("serving on 127.0.0.1:8080")
    assert _received(listener) == "READY=1\nSTATUS=serving on 127.0.0.1:8080"
    assert notify.watchdog()
    assert _received(listener) == "WATCHDOG=1"
    assert notify.stopping()
    assert _received(listener) == "STOPPING=1"


def test_abstract_socket_names_start_with_at(monkeypatch):
    name = f"envoy-proxy-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify.ready()
        assert _received(sock) == "READY=1"


def test_without_notify_socket_nothing_is_sent_and_nothing_fails(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.ready() is False
    assert notify.stopping() is False
    assert notify.watchdog() is False


def test_an_unreachable_socket_is_logged_not_raised(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert notify.ready() is False
    assert "could not notify systemd" in caplog.text
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert notify.ready() is False
    assert "not a path or an abstract socket" in caplog.text


def test_watchdog_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert notify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    assert notify.watchdog_interval() == 60.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert notify.watchdog_interval() == 60.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert notify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    for bad in ("soon", "0", "-5"):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert notify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert notify.start_watchdog(lambda: True) is None


def test_watchdog_pings_only_while_healthy_and_stops_when_told(listener, caplog):
    health = {"ok": True}
    dog = notify.Watchdog(lambda: [] if health["ok"] else ["the last run failed"], 0.02).start()
    try:
        assert _received(listener) == "WATCHDOG=1"
        assert _received(listener) == "WATCHDOG=1"
        health["ok"] = False
        time.sleep(0.05)
        _drain(listener)  # pings sent before the change was seen
        assert _received(listener, 0.2) is None, "no ping while the scheduler is unhealthy"
        assert "withholding watchdog pings" in caplog.text
        assert "the last run failed" in caplog.text  # says why
        assert caplog.text.count("withholding watchdog pings") == 1  # said once, not per tick
        health["ok"] = True
        assert _received(listener) == "WATCHDOG=1"
    finally:
        dog.stop()
    assert not dog._thread.is_alive()
    _drain(listener)
    assert _received(listener, 0.1) is None, "no ping after stop()"


def test_a_failing_health_check_is_logged_and_the_loop_goes_on(listener, caplog):
    calls = []

    def problems():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("scheduler state unreadable")
        return []

    dog = notify.Watchdog(problems, interval=0.02).start()
    try:
        assert _received(listener) == "WATCHDOG=1"
    finally:
        dog.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and "watchdog check failed" in errors[0].getMessage()
    assert "scheduler state unreadable" in caplog.text


def test_start_watchdog_pings_at_half_the_timeout(listener, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    dog = notify.start_watchdog(lambda: [])
    try:
        assert dog is not None and dog.interval == pytest.approx(0.05)
        assert _received(listener) == "WATCHDOG=1"
    finally:
        dog.stop()


def test_serve_says_ready_pings_and_says_stopping(tmp_path, listener):
    """The real daemon process under a fake systemd: READY=1, WATCHDOG=1, STOPPING=1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "NOTIFY_SOCKET": listener.getsockname(),
        "WATCHDOG_USEC": "400000",
        "ENVOY_CLIENT_SECRET": "notify-secret",
        "ENVOY_PROXY_LISTEN": f"127.0.0.1:{port}",
        "ENVOY_PROXY_DB": str(tmp_path / "daemon.sqlite3"),
        "ENVOY_PROXY_KEY_FILE": str(tmp_path / "daemon.key"),
        "PROXY_API_URL": "http://127.0.0.1:9",
    }
    env.pop("WATCHDOG_PID", None)
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "daemon", "serve"], env=env, stdout=log, stderr=log
        )
    try:
        messages = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(m.startswith("READY=1") for m in messages):
            message = _received(listener, 0.5)
            if message is not None:
                messages.append(message)
            assert process.poll() is None, log_path.read_text()
        ready = [m for m in messages if m.startswith("READY=1")]
        assert ready, f"no READY=1: {messages}\n{log_path.read_text()}"
        assert f"STATUS=serving on 127.0.0.1:{port}" in ready[0]
        # Listening by the time READY=1 is sent.
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        pinged, deadline = False, time.monotonic() + 5
        while time.monotonic() < deadline and not pinged:
            pinged = _received(listener, 0.5) == "WATCHDOG=1"
        assert pinged, log_path.read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "STOPPING=1" in _drain(listener)


def test_no_ping_while_the_last_run_failed_and_pings_again_after_a_good_run(
    listener, database, caplog
):
    """A live thread whose every run raises (a poison row) used to keep the pings going."""
    from daemon.health import Health
    from scheduler import Alarm

    failing = {"now": True}

    def work():
        if failing["now"]:
            raise RuntimeError("poison")
        return None

    alarm, health = Alarm(work), Health()
    health.watch(alarm.state)
    dog = notify.Watchdog(health.problems, interval=3600)  # beats by hand, no thread
    assert dog.beat() and _received(listener) == "WATCHDOG=1"
    alarm._fire()
    assert not dog.beat()
    assert _received(listener, 0.2) is None, "no ping while the last run failed"
    assert "the last run of due work failed (1 in a row)" in caplog.text
    failing["now"] = False
    alarm._fire()
    assert dog.beat() and _received(listener) == "WATCHDOG=1"
