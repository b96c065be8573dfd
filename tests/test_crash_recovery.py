"""Crashes and restarts of the real process never lose an action nor double a person."""

import contextlib
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import requests

import db
from daemon.access import outbox
from sandbox.envoy import EnvoySimulator, entry_event
from tests.fixtures.daemon import SITE_CONFIG
from tests.fixtures.daemon_process import CLIENT_SECRET, prepare_install, state_database


def _sign_in(entry_id="e-1", email="ada@example.com"):
    return entry_event(entry_id=entry_id, full_name="Ada", email=email, flow_id="flow-visitor",
                       signed_in_at=time.time(), config=SITE_CONFIG)  # fmt: skip


def _send_while_hanging(daemon, proxy_sandbox, body, hang_prefix):
    """Send `body`; kill the daemon with SIGKILL while its Proxy call on `hang_prefix` hangs."""
    proxy_sandbox.add_fault(hang=True, count=1, path_prefix=hang_prefix)
    simulator = EnvoySimulator(client_secret=CLIENT_SECRET)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(simulator.post, daemon.url, "/envoy/events", body, timeout=30)
        deadline = time.monotonic() + 10
        while any(f["count"] == 1 for f in proxy_sandbox.state()["faults"]):
            assert time.monotonic() < deadline, "the daemon never reached the hanging call"
            time.sleep(0.02)
        daemon.process.send_signal(signal.SIGKILL)
        daemon.process.wait(timeout=5)
        # The connection dies with the process, as intended.
        with contextlib.suppress(requests.RequestException):
            pending.result(timeout=10)
    proxy_sandbox.clear_faults()


def _grants(state):
    db.open_database(state_database(state))
    try:
        return [(g.state, g.proxy_person_id) for g in db.Grant.select()]
    finally:
        db.close_database()


def test_kill_after_commit_before_the_proxy_call_converges_after_restart(
    start_daemon, tmp_path, proxy_sandbox
):
    prepare_install(tmp_path / "state")
    env = {"PROXY_API_URL": proxy_sandbox.url, "ENVOY_PROXY_INLINE_BUDGET": "20"}
    first = start_daemon(**env)
    first.wait_healthy()
    _send_while_hanging(first, proxy_sandbox, _sign_in(), "/manage/persons")
    assert proxy_sandbox.persons("ada@example.com") == []
    assert _grants(tmp_path / "state") == [("pending", None)], "committed before any Proxy call"
    second = start_daemon(**env)
    second.wait_healthy()  # ready only after the catch-up ran
    person = _taken_over(tmp_path / "state", proxy_sandbox, "active")
    assert person["status"] == "active" and person["tags"] == ["visitor-lobby"]
    second.process.send_signal(signal.SIGTERM)
    assert second.process.wait(timeout=10) == 0
    assert _grants(tmp_path / "state") == [("active", person["id"])]


def test_kill_after_proxy_created_the_person_does_not_create_a_twin(
    start_daemon, tmp_path, proxy_sandbox
):
    prepare_install(tmp_path / "state")
    env = {"PROXY_API_URL": proxy_sandbox.url, "ENVOY_PROXY_INLINE_BUDGET": "20"}
    first = start_daemon(**env)
    first.wait_healthy()
    # The import went through; the daemon dies while scheduling the safety net, before it
    # could record anything about the person.
    _send_while_hanging(first, proxy_sandbox, _sign_in(), "/mobile-access")
    assert len(proxy_sandbox.persons("ada@example.com")) == 1
    second = start_daemon(**env)
    second.wait_healthy()
    person = _taken_over(tmp_path / "state", proxy_sandbox, "active")
    assert person["status"] == "active"
    assert [s["status"] for s in person["scheduledStatuses"]][-1] == "suspended"  # the net


def _taken_over(state, proxy_sandbox, status: str) -> dict:
    """Ada's person once the restarted daemon ran the killed one's claim. A SQLite daemon
    releases it at start (ready means done); where instances share the database the claim's
    short lease runs out first (the killed process might have been another live instance)."""
    if db.is_postgres_url(state_database(state)):
        persons = lambda: proxy_sandbox.persons("ada@example.com")  # noqa: E731
        _until(lambda: [p["status"] for p in persons()] == [status] and _grants(state)[0][1],
               outbox.SHARED_LEASE_SECONDS + 10)  # fmt: skip
    [person] = proxy_sandbox.persons("ada@example.com")
    return person


def _until(condition, timeout: float = 10.0) -> None:
    """Wait for a real daemon's background work (not for a due time: that is time-machine's)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the daemon did not get there in time"
        time.sleep(0.05)


def test_restart_runs_overdue_ends_before_reporting_ready(start_daemon, tmp_path, proxy_sandbox):
    state = tmp_path / "state"
    prepare_install(state)
    env = {"PROXY_API_URL": proxy_sandbox.url}
    first = start_daemon(**env)
    first.wait_healthy()
    answer = EnvoySimulator(client_secret=CLIENT_SECRET).post(
        first.url, "/envoy/events", _sign_in()
    )
    assert answer.status_code == 202
    _until(lambda: [p["status"] for p in proxy_sandbox.persons("ada@example.com")] == ["active"])
    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(timeout=10) == 0
    # While the daemon is down, the visit's end passes.
    db.open_database(state_database(state))
    past = int(time.time()) - 60
    db.Grant.update(ends_at=past).execute()
    db.Action.update(due_at=past, next_attempt_at=past).where(db.Action.kind == "revoke").execute()
    db.close_database()
    second = start_daemon(**env)
    second.wait_healthy()
    [person] = proxy_sandbox.persons("ada@example.com")
    assert person["tags"] == []
    assert _grants(state)[0][0] == "ended"
