"""Webhooks first (daemon/priority.py): while webhooks are served, background steps go one
at a time and take at most their share of the time; without webhooks they go at once."""

import itertools
import threading
import time

from daemon.priority import WebhooksFirst


def _step(first: WebhooksFirst, seconds: float) -> tuple[float, float]:
    with first.background_step():
        began = time.monotonic()
        time.sleep(seconds)  # the step's own work
    return began, time.monotonic()


def test_under_load_each_step_waits_long_enough_to_keep_to_its_share():
    first = WebhooksFirst(share=0.2)
    with first.serving():
        _, ended = _step(first, 0.05)
        began, _ = _step(first, 0.0)
    assert began - ended >= 0.05 * 4 * 0.9  # 0.05 s of work buys 0.2 s for the webhooks


def test_under_load_steps_of_several_threads_go_one_at_a_time():
    first = WebhooksFirst(share=0.99)
    spans = []
    with first.serving():
        threads = [
            threading.Thread(target=lambda: spans.append(_step(first, 0.05))) for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    spans.sort()
    assert len(spans) == 3
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(spans))


def test_a_waiting_step_goes_as_soon_as_the_last_webhook_is_answered():
    first = WebhooksFirst(share=0.01)  # a paced turn would come only after ~5 s
    answered = threading.Event()
    began = []

    def webhook():
        with first.serving():
            _step(first, 0.05)  # sets the next turn far ahead
            waiter.start()
            answered.wait(10)

    waiter = threading.Thread(target=lambda: began.append(_step(first, 0)[0]))
    served = threading.Thread(target=webhook)
    served.start()
    time.sleep(0.1)
    released = time.monotonic()
    answered.set()
    served.join(10)
    waiter.join(10)
    assert began and began[0] - released < 2


def test_without_webhooks_steps_run_side_by_side_at_once():
    first = WebhooksFirst(share=0.01)
    spans = []
    threads = [threading.Thread(target=lambda: spans.append(_step(first, 0.2))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    spans.sort()
    assert spans[-1][0] < spans[0][1]  # the last began before the first ended
