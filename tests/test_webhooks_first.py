"""Webhooks first (daemon/access/webhooks_first.py): while events are answered, due work
keeps to its share of the CPU; its waits on Proxy cost it nothing; without events it runs."""

import threading
import time

from daemon.access.webhooks_first import WebhooksFirst


def _burn(seconds: float) -> None:
    """Spend this much of the thread's own CPU time."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def _step_start(first: WebhooksFirst) -> float:
    with first.step():
        return time.monotonic()


def test_without_webhooks_steps_start_at_once():
    first = WebhooksFirst(share=0.25)
    with first.step():
        _burn(0.05)
    started = time.monotonic()
    assert _step_start(first) - started < 0.02


def test_while_webhooks_are_answered_a_step_waits_for_its_cpu_share():
    first = WebhooksFirst(share=0.25)
    with first.serving():
        with first.step():
            _burn(0.04)
        ended = time.monotonic()
        started = _step_start(first)
    # 0.04 s of CPU at a quarter share buys the webhooks 0.12 s.
    assert started - ended >= 0.12 * 0.8


def test_a_step_waiting_on_proxy_costs_no_share():
    first = WebhooksFirst(share=0.25)
    with first.serving():
        with first.step():
            time.sleep(0.1)  # a Proxy round trip: no CPU of ours
        ended = time.monotonic()
        started = _step_start(first)
    assert started - ended < 0.03


def test_a_waiting_step_goes_as_soon_as_the_webhooks_are_answered():
    first = WebhooksFirst(share=0.01)
    serving = first.serving()
    serving.__enter__()
    with first.step():
        _burn(0.02)  # buys the webhooks ~2 s
    started = []
    waiter = threading.Thread(target=lambda: started.append(_step_start(first)))
    waiter.start()
    time.sleep(0.05)
    assert not started, "still waiting while a webhook is answered"
    released = time.monotonic()
    serving.__exit__(None, None, None)
    waiter.join(2)
    assert started and started[0] - released < 0.05
