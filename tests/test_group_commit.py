"""Concurrent events share one write transaction on SQLite, and commit each in its own,
alongside the others, on PostgreSQL (daemon/access/group_commit.py)."""

import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peewee import IntegrityError

import db
from daemon.access.group_commit import GroupCommit


def _watch(database):
    """Count the transactions begun (BEGIN IMMEDIATE) while the test runs."""
    begins = []
    original = database.begin

    def begin(*args, **kwargs):
        begins.append(threading.current_thread().name)
        return original(*args, **kwargs)

    database.begin = begin
    return begins, lambda: setattr(database, "begin", original)


def _event(job_id: str):
    def work():
        db.Event.insert(job_id=job_id, event="e", install_id="i", received_at=0, status=200,
                        answer={}).execute()  # fmt: skip
        return job_id

    return work


def _slow_leader_and_five_followers(group: GroupCommit, release_when) -> dict:
    """A first event that holds its transaction until `release_when(group)` is true, and five
    events that arrive meanwhile; what each got."""
    leading, release = threading.Event(), threading.Event()
    results = {}

    def slow_first():
        leading.set()
        release.wait(5)
        return _event("first")()

    leader = threading.Thread(target=lambda: results.update(first=group.run(slow_first)))
    leader.start()
    assert leading.wait(5)
    followers = [
        threading.Thread(target=lambda i=i: results.update({i: group.run(_event(f"j-{i}"))}))
        for i in range(5)
    ]
    for thread in followers:
        thread.start()
    deadline = time.monotonic() + 5
    while not release_when(group, results) and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for thread in [leader, *followers]:
        thread.join(5)
    return results


def test_events_arriving_while_one_writes_share_its_commit_on_sqlite_only(database):
    """SQLite: the five events queued behind a slow one commit with it, in one transaction.
    PostgreSQL locks rows, not the database: they commit in their own transactions while
    the slow one is still open (queued behind one leader, accepts took 498 ms at 50/s)."""
    postgres = db.is_postgres()

    def followers_done(group, answered):
        return len(answered) == 5 if postgres else len(group._queue) == 5

    begins, restore = _watch(database)
    try:
        results = _slow_leader_and_five_followers(GroupCommit(), followers_done)
    finally:
        restore()
    assert results == {"first": "first", **{i: f"j-{i}" for i in range(5)}}
    assert db.Event.select().count() == 6
    assert len(begins) == (6 if postgres else 2)


def test_one_failing_event_is_rolled_back_alone(database):
    group = GroupCommit()

    def broken():
        db.Event.insert(job_id="half", event="e", install_id="i", received_at=0, status=200,
                        answer={}).execute()  # fmt: skip
        raise RuntimeError("a bug in this event's planning")

    with pytest.raises(RuntimeError):
        group.run(broken)
    assert group.run(_event("fine")) == "fine"
    assert [e.job_id for e in db.Event.select()] == ["fine"]


def test_a_duplicate_is_an_error_for_its_own_event_only(database):
    group = GroupCommit()
    group.run(_event("j-1"))
    with pytest.raises(IntegrityError):
        group.run(_event("j-1"))
    assert db.Event.select().count() == 1


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(jobs=st.lists(st.sampled_from(["ok", "bug", "repeat"]), min_size=1, max_size=60))
def test_concurrent_events_each_get_their_own_outcome_and_only_theirs(database, jobs):
    """Up to 60 events, each from its own thread, at once: each answered with its own result
    or error, every one that succeeded stored once, every one that failed not at all; nobody
    waits forever."""
    group = GroupCommit()
    db.Event.delete().execute()
    group.run(_event("taken"))  # the job id every "repeat" collides with
    outcomes: dict[int, object] = {}

    def work(i: int, kind: str):
        def plan():
            if kind == "bug":
                _event(f"bug-{i}")()
                raise RuntimeError(f"bug {i}")
            return _event("taken" if kind == "repeat" else f"ok-{i}")()

        try:
            outcomes[i] = group.run(plan)
        except Exception as error:
            outcomes[i] = type(error).__name__

    threads = [threading.Thread(target=work, args=(i, kind)) for i, kind in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    expected = {
        i: {"ok": f"ok-{i}", "bug": "RuntimeError", "repeat": "IntegrityError"}[kind]
        for i, kind in enumerate(jobs)
    }
    assert outcomes == expected
    stored = {e.job_id for e in db.Event.select()}
    assert stored == {"taken"} | {f"ok-{i}" for i, kind in enumerate(jobs) if kind == "ok"}
