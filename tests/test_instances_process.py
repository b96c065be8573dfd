"""Two real daemon processes on one PostgreSQL database, both taking webhooks (issue 18)."""

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

import db
from sandbox.envoy import EnvoySimulator, entry_event
from tests.fixtures.daemon import SITE_CONFIG
from tests.fixtures.daemon_process import (
    ADMIN_PASSWORD,
    CLIENT_SECRET,
    prepare_install,
    state_database,
)
from tests.fixtures.postgres import ENGINE_VARIABLE

VISITS = 12


@pytest.fixture
def two_daemons(postgres_server, monkeypatch, tmp_path, start_daemon, proxy_sandbox):
    """Two daemons on one PostgreSQL database, each on its own port."""
    monkeypatch.setenv(ENGINE_VARIABLE, "postgresql")
    prepare_install(tmp_path / "state")
    daemons = [start_daemon(PROXY_API_URL=proxy_sandbox.url) for _ in range(2)]
    for daemon in daemons:
        daemon.wait_healthy()
    yield daemons
    postgres_server.drop_created()


def _sign_in(n: int) -> dict:
    return entry_event(entry_id=f"e-{n}", full_name=f"Visitor {n}", email=f"v{n}@example.com",
                       flow_id="flow-visitor", signed_in_at=time.time(), config=SITE_CONFIG,
                       job_id=f"job-{n}")  # fmt: skip


def _until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the daemons did not get there in time"
        time.sleep(0.1)


def test_a_delivery_sent_to_both_instances_at_once_is_accepted_once(
    two_daemons, tmp_path, proxy_sandbox
):
    """Envoy's retry of a delivery may reach the other instance while the first is still
    planning it: the inbox's unique job id holds across instances, so one grant, one person."""
    simulator = EnvoySimulator(client_secret=CLIENT_SECRET)
    bodies = [_sign_in(n) for n in range(VISITS)]
    with ThreadPoolExecutor(2 * VISITS) as pool:
        answers = list(
            pool.map(
                lambda sent: simulator.post(sent[0].url, "/envoy/events", sent[1], timeout=30),
                [(daemon, body) for body in bodies for daemon in two_daemons],
            )
        )
    assert all(answer.status_code in (200, 202) for answer in answers), answers
    db.open_database(state_database(tmp_path / "state"))
    try:
        stored = [event.job_id for event in db.Event.select()]
        assert sorted(stored) == sorted(f"job-{n}" for n in range(VISITS))
        assert db.Grant.select().count() == VISITS
    finally:
        db.close_database()

    def each_visitor_has_one_active_person():
        persons = [proxy_sandbox.persons(f"v{n}@example.com") for n in range(VISITS)]
        return all(len(p) == 1 and p[0]["status"] == "active" for p in persons)

    _until(each_visitor_has_one_active_person)
    # Each instance shows both, and exactly one runs the periodic passes.
    for daemon in two_daemons:
        facts = requests.get(
            daemon.url + "/status.json", auth=("admin", ADMIN_PASSWORD), timeout=5
        ).json()
        shown = facts["instances"]
        assert len(shown) == 2 and all(instance["alive"] for instance in shown)
        assert [instance["runs_passes"] for instance in shown] == [True, False]
