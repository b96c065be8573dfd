"""The alarm clock: one timer at the earliest due instant plus a sweep, never more jobs."""

import itertools
import threading
import time

import pytest
import time_machine

from scheduler import MIN_GAP_SECONDS, Alarm


class FakeWork:
    """A run_due stand-in: counts calls and answers a scripted next due instant."""

    def __init__(self, next_due=None, fail_first=False):
        self.calls = 0
        self.next_due = next_due
        self.fail_first = fail_first
        self.called = threading.Event()

    def __call__(self):
        self.calls += 1
        self.called.set()
        if self.fail_first and self.calls == 1:
            raise RuntimeError("boom")
        return self.next_due


@pytest.fixture
def alarm_factory():
    alarms = []

    def make(work, sweep_seconds=300):
        alarm = Alarm(work, sweep_seconds=sweep_seconds)
        alarms.append(alarm)
        return alarm

    yield make
    for alarm in alarms:
        alarm.shutdown()


def test_past_due_work_runs_at_once_however_late(alarm_factory):
    work = FakeWork()
    alarm = alarm_factory(work)
    alarm.start(next_due=int(time.time()) - 3600)  # an hour late: still runs
    assert work.called.wait(5)


def test_rearm_only_moves_the_timer_earlier(alarm_factory):
    work = FakeWork()
    alarm = alarm_factory(work)
    now = int(time.time())
    alarm.start(next_due=now + 3600)
    alarm.rearm(now + 7200)
    assert alarm.next_due == now + 3600
    alarm.rearm(now + 60)
    assert alarm.next_due == now + 60


def test_a_rearm_during_the_catch_up_before_start_still_fires_after_start(alarm_factory):
    """Found by the crash campaign: the catch-up's workers re-arm before the alarm starts;
    that re-arm failed half-way, left the timer marked armed, and every re-arm after the start
    was ignored until the sweep (a sign-out's revoke ran 30 s late)."""
    work = FakeWork()
    alarm = alarm_factory(work)
    now = int(time.time())
    alarm.rearm(now - 1)  # a catch-up worker finishing
    alarm.start(next_due=now + 3600)
    assert work.called.wait(5), "the earlier instant asked for before the start is armed"
    work.called.clear()
    alarm.rearm(int(time.time()))  # a webhook's due work, after the start
    assert work.called.wait(5)


def test_the_scheduler_holds_two_jobs_whatever_the_pending_work(alarm_factory):
    work = FakeWork()
    alarm = alarm_factory(work)
    now = int(time.time())
    alarm.start(next_due=now + 3600)
    for offset in range(1000):
        alarm.rearm(now + 3600 - offset)
    assert len(alarm._scheduler.get_jobs()) == 2  # the due timer and the sweep


def test_a_failing_run_is_logged_and_the_next_due_is_armed(alarm_factory, caplog):
    work = FakeWork(fail_first=True)
    alarm = alarm_factory(work)
    alarm.start(next_due=int(time.time()) - 1)
    assert work.called.wait(5)
    deadline = time.monotonic() + 5
    while "running due work failed" not in caplog.text:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert alarm.state().thread_alive


def test_a_run_that_raised_is_a_failure_not_a_run():
    """Counted as a run, a failing run kept a poisoned daemon looking healthy."""
    outcomes = [RuntimeError("token sk-123456 refused"), RuntimeError("again"), None]

    def work():
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    alarm = Alarm(work, mask=lambda text: text.replace("sk-123456", "***"))
    alarm._fire()
    runs = alarm.runs
    assert runs.failing and runs.consecutive_failures == 1
    assert runs.last_success_at is None and runs.last_failure_at is not None
    assert runs.last_error == "RuntimeError: token *** refused"
    alarm._fire()
    assert alarm.runs.consecutive_failures == 2 and alarm.runs.last_error == "RuntimeError: again"
    alarm._fire()
    runs = alarm.runs
    assert not runs.failing and runs.consecutive_failures == 0
    assert runs.last_success_at >= runs.last_failure_at
    assert runs.last_error == "RuntimeError: again"  # the last failure stays on record


def test_the_catch_up_is_recorded_like_any_run_and_never_raises():
    def catch_up():
        raise UnicodeEncodeError("utf-8", "Acme \ud800", 5, 6, "surrogates not allowed")

    alarm = Alarm(lambda: None)
    assert alarm.run_once(catch_up) is None  # serving goes on; the sweep retries
    assert alarm.runs.failing and alarm.runs.last_error.startswith("UnicodeEncodeError")
    assert alarm.run_once(lambda: 42) == 42
    assert not alarm.runs.failing


def test_idle_time_counts_from_the_start_then_from_each_run(alarm_factory):
    alarm = alarm_factory(FakeWork())
    assert alarm.state().idle_seconds is None  # not started: nothing to be late for
    alarm.start(next_due=None)
    assert 0 <= alarm.state().idle_seconds < 5
    alarm._started_at -= 1000  # long ago, and no run since
    assert alarm.state().idle_seconds >= 1000
    alarm.run_once()
    assert alarm.state().idle_seconds < 5


def test_the_next_due_instant_returned_by_run_due_is_armed(alarm_factory):
    later = int(time.time()) + 3600
    work = FakeWork(next_due=later)
    alarm = alarm_factory(work)
    alarm.start(next_due=int(time.time()) - 1)
    assert work.called.wait(5)
    deadline = time.monotonic() + 5
    while alarm.next_due != later:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_the_state_follows_the_scheduler_thread(alarm_factory):
    alarm = alarm_factory(FakeWork())
    assert not alarm.state().thread_alive and not alarm.state().started
    alarm.start(next_due=None)
    assert alarm.state().thread_alive
    alarm.shutdown()
    assert not alarm.state().thread_alive


def test_shutdown_while_a_run_finishes_does_not_deadlock(alarm_factory):
    """A run that ends during shutdown re-arms; that must neither block nor be lost work."""
    started, release = threading.Event(), threading.Event()

    def slow_work():
        started.set()
        release.wait(5)
        return int(time.time()) + 60  # asks to be re-armed as it finishes

    alarm = alarm_factory(slow_work)
    alarm.start(next_due=int(time.time()) - 1)
    assert started.wait(5)
    stopper = threading.Thread(target=alarm.shutdown)
    stopper.start()
    time.sleep(0.2)  # shutdown is now waiting for the run
    release.set()
    stopper.join(timeout=5)
    assert not stopper.is_alive(), "shutdown deadlocked with a finishing run"


def test_rapid_rearming_as_runs_finish_loses_no_wakeup_and_keeps_the_thread(alarm_factory):
    """Each run asks to run again at once; APScheduler removing fired jobs by id must not
    remove the newly armed timer nor kill its thread."""
    rounds, done = 100, threading.Event()  # 20 ms apart at least (MIN_GAP_SECONDS)
    calls = []

    def work():
        calls.append(1)
        if len(calls) >= rounds:
            done.set()
            return None
        return int(time.time()) - 1  # due again, at once

    alarm = alarm_factory(work)
    alarm.start(next_due=int(time.time()) - 1)
    assert done.wait(20), f"stalled after {len(calls)} runs"
    assert alarm.state().thread_alive and not alarm.runs.failing


def test_a_burst_of_rearms_is_served_by_a_few_fires_and_the_last_is_never_lost(alarm_factory):
    """A flood re-arms the alarm for "now" at every webhook: fires keep MIN_GAP_SECONDS apart
    (each is a claim, a write transaction), and work committed just before the last rearm is
    still run by a fire that starts after it."""
    seen = []  # (fire start, the last commit it can see)
    committed = [0]

    def work():
        seen.append((time.monotonic(), committed[0]))
        return None

    alarm = alarm_factory(work)
    alarm.start(None)
    until = time.monotonic() + 1.0
    while time.monotonic() < until:  # ~1 s of rearms, as fast as one thread goes
        committed[0] += 1
        alarm.rearm(int(time.time()))
    last = committed[0]
    deadline = time.monotonic() + 5
    while not (seen and seen[-1][1] == last) and time.monotonic() < deadline:
        time.sleep(0.01)  # waiting for the alarm's thread, not for a due time
    assert seen and seen[-1][1] == last, "the last rearm's work was never run"
    assert last > 1000 and len(seen) <= 1.0 / MIN_GAP_SECONDS + 5
    starts = [at for at, _ in seen]
    assert min(b - a for a, b in itertools.pairwise(starts)) >= MIN_GAP_SECONDS * 0.9


def test_a_wall_clock_stepped_back_after_a_fire_does_not_hold_the_alarm_back(alarm_factory):
    """The gap between fires is kept on the monotonic clock: a fire an hour "ahead" (the wall
    clock then stepped back, as NTP may) must not arm the next fire an hour late."""
    work = FakeWork()
    alarm = alarm_factory(work)
    alarm.start(None)
    with time_machine.travel(time.time() + 3600, tick=True):
        alarm._fire()
    now = int(time.time())
    alarm.rearm(now)
    assert alarm._scheduler.get_job("due").next_run_time.timestamp() <= now + 1
