"""Several instances on one PostgreSQL database: claims, leases, the periodic passes' lock and
the registry of instances (issue 18). Instances are played by claimers on their own threads
and connections, as two processes would be."""

import threading
import time

import psycopg
from prometheus_client import generate_latest

import db
from daemon.access import outbox, runner
from daemon.access.runner import Runner
from daemon.ops import instances, status_report
from daemon.ops.admin import render_status
from daemon.ops.instances import Heartbeat
from daemon.ops.metrics import Metrics

WAIT = 10  # seconds a thread may take to get somewhere it should get at once
NOW = 1_800_000_000
PASSES_METRIC = "envoy_proxy_instance_runs_periodic_passes"


def _enqueue(*lock_keys) -> list[int]:
    with db.database.atomic():
        return [outbox.enqueue("issue", "install-1", NOW - 1, lock_key=key) for key in lock_keys]


def _waiting_on_a_lock(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as connection:
        (count,) = connection.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return count > 0


def _in_thread(fn, *args):
    result = {}

    def run():
        with db.database.connection_context():
            result["value"] = fn(*args)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_a_claim_under_way_on_another_instance_is_never_claimed_twice(pg, monkeypatch):
    """Instance A has marked its claim but not committed; B claims meanwhile. At READ
    COMMITTED B read A's rows as free and took them too (and the second action of A's person):
    two instances ran one action, or one person's two actions, at once."""
    first, second_of_same_person, other = _enqueue("person-p", "person-p", None)
    marked, go_on = threading.Event(), threading.Event()
    hold = outbox._hold

    def hold_then_wait(action_ids, now, claimer):
        hold(action_ids, now, claimer)
        if claimer == "A":
            marked.set()
            assert go_on.wait(WAIT)

    monkeypatch.setattr(outbox, "_hold", hold_then_wait)
    a, a_claimed = _in_thread(outbox.claim_due, NOW, 1, "A")
    assert marked.wait(WAIT)
    b, b_claimed = _in_thread(outbox.claim_due, NOW, 10, "B")
    deadline = time.monotonic() + WAIT
    while not _waiting_on_a_lock(pg):  # B reached A's lock (the claim lock, or a row's)
        assert time.monotonic() < deadline and b.is_alive()
        time.sleep(0.02)
    go_on.set()
    a.join(WAIT), b.join(WAIT)
    assert [action.id for action in a_claimed["value"]] == [first]
    assert [action.id for action in b_claimed["value"]] == [other]
    holders = {row.id: row.claimed_by for row in db.Action.select()}
    assert holders == {first: "A", second_of_same_person: None, other: "B"}


def test_a_dead_instances_claim_is_taken_over_when_its_short_lease_runs_out(pg):
    [action_id] = _enqueue("person-p")
    assert outbox.lease_seconds() == outbox.SHARED_LEASE_SECONDS <= 10
    assert [a.id for a in outbox.claim_due(NOW, 10, "A")] == [action_id]
    assert outbox.claim_due(NOW + outbox.SHARED_LEASE_SECONDS, 10, "B") == []
    # A lives: its heartbeat renews the lease, so B still waits.
    assert outbox.renew("A", NOW + outbox.HEARTBEAT_SECONDS) == 1
    assert outbox.claim_due(NOW + outbox.SHARED_LEASE_SECONDS, 10, "B") == []
    # A died after that heartbeat: its work is B's once the lease has run out.
    lease_end = NOW + outbox.HEARTBEAT_SECONDS + outbox.SHARED_LEASE_SECONDS
    assert outbox.next_due(lease_end - 1) == lease_end + 1  # B's alarm is armed for it
    [taken] = outbox.claim_due(lease_end + 1, 10, "B")
    assert taken.id == action_id
    # A wakes up (a paused machine): it does not run the action B took, nor renew it.
    action = db.Action.get_by_id(action_id)
    assert not outbox.still_held(action, "A", lease_end + 2)
    assert outbox.renew("A", lease_end + 2) == 0
    assert outbox.still_held(action, "B", lease_end + 2)


def test_one_sqlite_daemon_keeps_its_long_lease_and_releases_claims_at_start(tmp_path):
    db.open_database(str(tmp_path / "one.sqlite3"))
    try:
        db.migrate()
        _enqueue("person-p")
        assert outbox.lease_seconds() == outbox.LEASE_SECONDS
        [claimed] = outbox.claim_due(NOW, 10, "A")
        assert db.Action.get_by_id(claimed.id).claimed_until == NOW + outbox.LEASE_SECONDS
        assert outbox.release_claims() == 1
    finally:
        db.close_database()


def test_a_restarting_instance_leaves_the_other_instances_claims_alone(pg):
    _enqueue("person-p")
    outbox.claim_due(NOW, 10, "A")
    assert outbox.release_claims() == 0
    assert outbox.claim_due(NOW + 1, 10, "B") == []


def test_one_instance_runs_the_periodic_passes_and_another_takes_over_when_it_dies(pg):
    first, second = db.PassesLock(), db.PassesLock()
    try:
        assert first.hold() and not second.hold()
        assert first.hold() and not second.hold()  # asked again at every heartbeat
        # The first instance's session ends (the process died): the server frees the lock.
        pid = first._connection.info.backend_pid
        with psycopg.connect(pg, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert not first.hold()  # the holder learns it lost them at its next heartbeat
        assert second.hold()
        assert not first.hold()
    finally:
        first.release()
        second.release()


def test_an_instance_that_does_not_run_the_passes_leaves_quarantine_and_repair_alone(
    pg, monkeypatch
):
    calls = []
    monkeypatch.setattr("daemon.access.runner.retry_quarantined", lambda *a: calls.append("q"))
    monkeypatch.setattr("daemon.access.reconcile.repair_pass", lambda *a: calls.append("r"))
    worker_pool = Runner(workers=1)
    worker_pool.runs_passes = lambda: False
    worker_pool.dispatch(None, NOW)
    assert calls == []
    worker_pool.runs_passes = lambda: True
    worker_pool.dispatch(None, NOW)
    assert calls == ["q", "r"]


def test_the_heartbeat_renews_claims_and_registers_the_instance(pg):
    [action_id] = _enqueue("person-p")
    beat = Heartbeat("host-a:1:abc", started_at=NOW - 60)
    other = Heartbeat("host-b:2:def", started_at=NOW - 30)
    try:
        outbox.claim_due(NOW, 10, beat.claimer)
        beat.beat(NOW + 5)
        other.beat(NOW + 6)
        assert db.Action.get_by_id(action_id).claimed_until == NOW + 5 + outbox.lease_seconds()
        rows = instances.registry(NOW + 6)
        assert [(r["id"], r["claims"], r["runs_passes"], r["alive"]) for r in rows] == [
            ("host-a:1:abc", 1, True, True),
            ("host-b:2:def", 0, False, True),
        ]
        assert instances.registry(NOW + 60)[0]["alive"] is False
    finally:
        beat.stop()
        other.stop()
    assert instances.registry(NOW + 7) == []  # a clean stop leaves the registry


def test_metrics_and_the_cli_show_each_instance_and_which_runs_the_passes(pg):
    beat = Heartbeat("host-a:1:abc")
    other = Heartbeat("host-b:2:def")
    try:
        beat.beat()
        other.beat()
        text = generate_latest(Metrics().with_database().registry).decode()
        passes = [line for line in text.splitlines() if line.startswith(PASSES_METRIC + "{")]
        assert sorted(line.rsplit(" ", 1)[1] for line in passes) == ["0.0", "1.0"]
        assert 'instance="host-a:1:abc"' in "".join(passes)
        facts = status_report.gather(db.now_epoch(), this_instance="host-b:2:def")
        assert [(n["id"], n["runs_passes"], n["this"]) for n in facts["instances"]] == [
            ("host-a:1:abc", True, False),
            ("host-b:2:def", False, True),
        ]
        rendered = render_status(facts)
        assert "Instances (2)" in rendered and "runs them" in rendered
    finally:
        beat.stop()
        other.stop()


def test_each_heartbeat_arms_the_alarm_for_work_another_instance_committed(pg):
    armed = []
    beat = Heartbeat("host-a:1:abc", rearm=armed.append)
    try:
        beat.beat(NOW)
        with db.database.atomic():  # another instance takes a sign-out ending in 20 s
            outbox.enqueue("revoke", "install-1", NOW + 20)
        beat.beat(NOW + outbox.HEARTBEAT_SECONDS)
        assert armed == [None, NOW + 20]
    finally:
        beat.stop()


def test_an_instance_not_running_the_passes_does_not_wake_for_a_quarantined_delivery(pg):
    """It would not retry the delivery, so its alarm would find it still due every second."""
    db.Event.create(job_id="job-1", event="entry_sign_in", install_id="install-1", status=202,
                    body="{}", next_attempt_at=NOW - 1)  # fmt: skip
    assert runner.next_due(NOW, passes=True) == NOW - 1
    assert runner.next_due(NOW, passes=False) is None
