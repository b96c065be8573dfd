"""The one backoff rule and `Retry-After` reading (daemon/retry.py) both clients and the outbox
use: delays stay within their bounds whatever a server or an attempt count says."""

import email.utils
from datetime import UTC, datetime

import time_machine
from hypothesis import given
from hypothesis import strategies as st

from daemon.retry import (
    CALL_BASE_SECONDS,
    MAX_RETRY_AFTER_SECONDS,
    Budget,
    backoff_seconds,
    retry_after_seconds,
)

NOW = datetime(2026, 3, 29, 0, 30, tzinfo=UTC).timestamp()
finite = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@given(attempts=st.integers(min_value=-5, max_value=10**6), cap=finite, base=finite)
def test_a_backoff_is_within_zero_and_the_cap_for_any_attempt_count(attempts, cap, base):
    assert 0 <= backoff_seconds(attempts, cap, base) <= cap


@given(attempts=st.integers(min_value=0, max_value=10))
def test_a_backoff_never_exceeds_base_times_two_to_the_attempts(attempts):
    assert backoff_seconds(attempts, 1e9, 1.0) <= 2**attempts


def test_backoffs_are_jittered_over_the_whole_range():
    delays = [backoff_seconds(3, 120) for _ in range(2000)]  # up to 5·2³ = 40 s
    assert min(delays) < 4 and max(delays) > 36


@given(value=st.text(max_size=40) | st.none())
def test_any_retry_after_value_gives_a_bounded_wait_never_negative(value):
    seconds = retry_after_seconds(value, default=1.5, now=NOW)
    assert 0 <= seconds <= MAX_RETRY_AFTER_SECONDS


@given(seconds=st.integers(min_value=0, max_value=10**30))
def test_delta_seconds_are_taken_as_asked_up_to_the_bound(seconds):
    assert retry_after_seconds(str(seconds)) == min(seconds, MAX_RETRY_AFTER_SECONDS)


@given(when=st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 1, 1)))
def test_an_http_date_is_the_time_until_it_zero_when_past_and_bounded(when):
    epoch = when.replace(tzinfo=UTC).timestamp()
    header = email.utils.formatdate(epoch, usegmt=True)
    expected = min(max(int(epoch) - NOW, 0), MAX_RETRY_AFTER_SECONDS)
    assert retry_after_seconds(header, now=NOW) == expected


def test_an_http_date_is_read_against_the_clock():
    with time_machine.travel(NOW, tick=False):
        assert retry_after_seconds("Sun, 29 Mar 2026 00:32:00 GMT") == 120
        assert retry_after_seconds("Sun, 29 Mar 2026 00:29:00 GMT") == 0


def test_unreadable_or_non_finite_values_give_the_default():
    for value in (None, "", "soon", "-5", "inf", "nan", "1e400", "Sun, 99 Foo 2026"):
        assert retry_after_seconds(value, default=1.5, now=NOW) == 1.5


def test_a_budget_grants_pauses_until_the_next_attempt_would_start_too_late():
    now = [100.0]
    budget = Budget(1.0, clock=lambda: now[0])
    first = budget.pause()
    assert 0 <= first <= CALL_BASE_SECONDS
    assert budget.pause(at_least=0.9) == 0.9  # a Retry-After that still fits
    now[0] += 0.5
    assert budget.pause(at_least=0.6) is None  # would start 1.1 s in
    assert budget.retries == 2
