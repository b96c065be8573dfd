"""Proxy's clock as its answers tell it (daemon/proxy/clock.py)."""

import email.utils
import time

from hypothesis import given
from hypothesis import strategies as st

from daemon.proxy.clock import KNOWN_LEAD_SECONDS, UNKNOWN_LEAD_SECONDS, ProxyClock


def _date(epoch: float) -> str:
    return email.utils.formatdate(epoch, usegmt=True)


@given(
    offset=st.floats(min_value=-86_400, max_value=86_400),
    moment=st.floats(min_value=1_700_000_000, max_value=1_900_000_000),
    latency=st.floats(min_value=0, max_value=0.3),
)
def test_the_offset_is_learnt_within_the_dates_resolution(offset, moment, latency):
    clock = ProxyClock()
    sent = moment
    clock.observe(_date(sent + latency / 2 + offset), sent, sent + latency)
    assert abs(clock.offset - offset) <= 0.5 + latency / 2 + 1e-6


def test_before_any_answer_the_lead_is_the_cautious_one():
    clock = ProxyClock()
    assert clock.offset is None
    before = time.time()
    assert before + UNKNOWN_LEAD_SECONDS <= clock.earliest(0) <= time.time() + UNKNOWN_LEAD_SECONDS


def test_an_unreadable_date_teaches_nothing():
    clock = ProxyClock()
    clock.observe("yesterday-ish", 0, 0)
    clock.observe(None, 0, 0)
    assert clock.offset is None


def test_one_slow_exchange_does_not_move_the_estimate():
    clock = ProxyClock()
    now = 1_800_000_000.0
    for _ in range(4):
        clock.observe(_date(now + 10), now, now)
    clock.observe(_date(now + 500), now, now)  # an answer that sat in a queue
    assert abs(clock.offset - 10.5) < 1e-6
    assert KNOWN_LEAD_SECONDS < UNKNOWN_LEAD_SECONDS
