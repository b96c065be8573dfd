"""Outbox bookkeeping (daemon/access/outbox.py): how far a failure pushes the next attempt back."""

import threading
import time
import types

import pytest

import db
from daemon.access import outbox
from daemon.access.runner import Runner, run_due


@pytest.mark.parametrize(("kind", "cap"), [("issue", 120), ("revoke", 120), ("job_update", 900)])
def test_after_many_failures_the_next_attempt_is_never_further_off_than_the_cap(
    database, kind, cap
):
    now = 1_800_000_000
    waits = []
    for _ in range(200):
        with database.atomic():
            action = db.Action.get_by_id(outbox.enqueue(kind, "install-1", now))
            action.attempts = 12  # 5·2^13 s uncapped
            outbox.fail(action, now, "Proxy answered 503")
        waits.append(db.Action.get_by_id(action.id).next_attempt_at - now)
    assert max(waits) <= cap
    assert max(waits) > cap / 2  # full jitter over the whole range, not a fixed short wait


def test_retry_after_from_proxy_is_honoured_up_to_the_cap(database):
    now = 1_800_000_000
    with database.atomic():
        action = db.Action.get_by_id(outbox.enqueue("job_update", "install-1", now))
        outbox.fail(action, now, "rate limited", retry_after=600)
    assert db.Action.get_by_id(action.id).next_attempt_at == now + 600


@pytest.mark.parametrize("kind", ["issue", "revoke"])
def test_a_retry_after_of_a_day_never_defers_access_work_past_two_minutes(database, kind):
    """Proxy answering 429 with `Retry-After: 86400` deferred endings by a day (issue 16)."""
    now = 1_800_000_000
    with database.atomic():
        action = db.Action.get_by_id(outbox.enqueue(kind, "install-1", now))
        outbox.fail(action, now, "rate limited", retry_after=86_400)
    assert db.Action.get_by_id(action.id).next_attempt_at <= now + outbox.BACKOFF_CAP_SECONDS


def test_the_next_due_instant_leaves_out_actions_being_run(database):
    """Counting a claimed action (due, in flight) made the alarm fire again and again for as
    long as its Proxy call lasted. Where instances share the database, the alarm looks again
    when the lease would run out (its holder may have died), not before."""
    now = 1_800_000_000
    with database.atomic():
        running = outbox.enqueue("issue", "install-1", now - 5)
        outbox.enqueue("revoke", "install-1", now + 600)
    assert outbox.next_due(now) == now - 5
    assert [a.id for a in outbox.claim_due(now, 10)] == [running]
    lease_end = now + outbox.SHARED_LEASE_SECONDS + 1
    assert outbox.next_due(now) == (lease_end if db.shared_by_instances() else now + 600)
    with database.atomic():  # lease released
        outbox.fail(db.Action.get_by_id(running), now, "Proxy answered 503")
    assert outbox.next_due(now) == db.Action.get_by_id(running).next_attempt_at


def test_running_due_work_waits_for_the_alarms_dispatch_without_spinning(database):
    """`run_due` (start-up catch-up, admin CLI, tests) looped while the alarm's dispatch ran,
    holding the interpreter from the very dispatch it waited for: a test took 20-50 s."""
    runner = Runner(workers=2)
    ctx = types.SimpleNamespace(runner=runner, rearm=lambda at: None)
    with runner._idle:
        runner._dispatching = True  # the alarm's dispatch, under way
    finished = threading.Event()
    thread = threading.Thread(target=lambda: (run_due(ctx, 1_800_000_000), finished.set()))
    thread.start()
    clock = time.pthread_getcpuclockid(thread.ident)
    began = time.clock_gettime(clock)
    assert not finished.wait(0.5)  # it waits for that dispatch to end...
    spent = time.clock_gettime(clock) - began
    with runner._idle:
        runner._dispatching = False
        runner._idle.notify_all()
    assert finished.wait(10)  # ...then runs what is due itself
    thread.join(10)
    assert spent < 0.1, f"{spent:.2f} s of CPU while waiting"
