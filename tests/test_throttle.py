"""Failed logins slow down per source address (web/throttle.py)."""

from web.throttle import FREE_FAILURES, MAX_ADDRESSES, MAX_WAIT, LoginThrottle


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_few_failures_are_free_then_each_doubles_the_wait():
    clock = Clock()
    throttle = LoginThrottle(clock)
    for _ in range(FREE_FAILURES):
        throttle.failed("10.0.0.1")
        assert throttle.wait("10.0.0.1") == 0
    waits = []
    for _ in range(4):
        throttle.failed("10.0.0.1")
        waits.append(throttle.wait("10.0.0.1"))
        clock.now += waits[-1]
        assert throttle.wait("10.0.0.1") == 0
    assert waits == [1, 2, 4, 8]
    assert throttle.wait("10.0.0.2") == 0  # another address is not slowed down


def test_the_wait_is_capped_and_a_success_clears_it():
    throttle = LoginThrottle(Clock())
    for _ in range(FREE_FAILURES + 40):
        throttle.failed("10.0.0.1")
    assert throttle.wait("10.0.0.1") == MAX_WAIT
    throttle.succeeded("10.0.0.1")
    assert throttle.wait("10.0.0.1") == 0
    assert throttle.failed("10.0.0.1") == 1


def test_memory_stays_bounded_under_a_flood_of_addresses():
    throttle = LoginThrottle(Clock())
    for n in range(MAX_ADDRESSES + 10):
        throttle.failed(f"addr-{n}")
    assert len(throttle._failures) == MAX_ADDRESSES
